"""A campaign: the bases to mutate (every data/ sample, an ELF re-encoding) and the case maker."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import kdnb
from kdnb.dump.detect import sniff
from kdnb.dump.source import FlattenedSource
from tests.builders import write_elf
from tests.fuzz import container, kernel
from tests.fuzz.runner import Case, run_cases
from tests.fuzz.samples import (
    ElfLayout,
    KdumpLayout,
    elf_layout,
    elf_spec_from,
    kdump_layout,
    sample_paths,
)

KERNEL_SHARE = 0.4  # fraction of cases that patch kernel objects rather than the container


@dataclass
class Base:
    """One file the mutators start from."""

    name: str
    layout: KdumpLayout | ElfLayout | Path
    mutators: list[container.Mutator]
    kernel_level: bool = True
    _dump: kdnb.Dump | None = field(default=None, repr=False)
    _targets: list[kernel.Target] | None = field(default=None, repr=False)

    @property
    def path(self) -> Path:
        return self.layout if isinstance(self.layout, Path) else self.layout.path

    def targets(self) -> tuple[kdnb.Dump, list[kernel.Target]]:
        """The pristine dump and its kernel targets, found on first use."""
        if self._dump is None:
            self._dump = kdnb.open(self.path)
            self._targets = kernel.kernel_targets(self._dump)
        return self._dump, self._targets or []


def _plain_copy(flat: Path, out: Path) -> Path:
    """The kdump file a flattened stream stands for."""
    src = FlattenedSource(str(flat))
    try:
        with open(out, "wb") as f:
            for pos in range(0, src.size, 1 << 24):
                f.write(src.pread(pos, min(1 << 24, src.size - pos)))
    finally:
        src.close()
    return out


def prepare(workdir: Path, samples: list[Path] | None = None, elf_copies: int = 1) -> list[Base]:
    """Bases for every sample (flattened ones reassembled, their streams kept for stream-level
    edits) and ELF re-encodings of the first `elf_copies` kdump samples."""
    bases: list[Base] = []
    kdumps: list[Path] = []
    for path in samples or sample_paths():
        name = f"{path.parent.name}/{path.name}"
        kind = sniff(str(path))
        if kind == "flattened":
            bases.append(Base(name, path, container.FLAT_MUTATORS, kernel_level=False))
            path = _plain_copy(path, workdir / f"{path.parent.name}.kdump")
            name += "(plain)"
            kind = "kdump"
        if kind == "kdump":
            bases.append(Base(name, kdump_layout(path), container.KDUMP_MUTATORS))
            kdumps.append(path)
    for path in kdumps[:elf_copies]:
        spec = elf_spec_from(path)
        out = write_elf(workdir / f"{path.parent.name}.elf", spec)
        bases.append(Base(f"{path.parent.name}/elf-copy", elf_layout(out, spec), container.ELF_MUTATORS))
    return bases


def case_maker(bases: list[Base], seed: int) -> Callable[[int, Path], tuple[str, str]]:
    """`make(number, out)`: write case `number` of campaign `seed` and describe it."""
    def make(number: int, out: Path) -> tuple[str, str]:
        rng = random.Random(f"{seed}:{number}")
        base = rng.choice(bases)
        if base.kernel_level and rng.random() < KERNEL_SHARE:
            dump, targets = base.targets()
            return base.name, "kernel: " + kernel.mutate(rng, dump, base.layout, targets, out)
        mutator = rng.choice(base.mutators)
        return base.name, f"{mutator.__name__}: " + mutator(rng, base.layout, out)
    return make


def run(workdir: Path, seed: int, count: int, jobs: int = 2, timeout: float = 20.0, first: int = 0,
        progress: Callable[[Case], None] | None = None, elf_copies: int = 1) -> list[Case]:
    """Prepare the bases in `workdir` and run cases first .. first+count-1 of campaign `seed`."""
    bases = prepare(workdir, elf_copies=elf_copies)
    try:
        return run_cases(case_maker(bases, seed), list(range(first, first + count)), workdir, jobs,
                         timeout, progress)
    finally:
        for base in bases:
            if base._dump is not None:
                base._dump.close()
