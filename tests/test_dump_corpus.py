"""Dump readers on the real corpus dumps (skipped when ../shared/corpus is absent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import kdnb
from kdnb.dump.notes import parse_vmcoreinfo
from kdnb.errors import PageNotInDump
from tests.conftest import CORPUS, corpus_dir, ground_truth

pytestmark = pytest.mark.corpus

ALL_DUMPS = sorted(p for p in CORPUS.glob("*/vmcore.*") if not p.name.endswith(".zst")) \
    if CORPUS.is_dir() else []


@pytest.mark.parametrize("path", ALL_DUMPS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_open_every_corpus_dump(path: Path) -> None:
    truth = ground_truth(path.parent)
    with kdnb.open(path) as d:
        assert d.format == "kdump"
        assert d.vmcoreinfo["OSRELEASE"] == truth["kernel_release"]
        assert d.header["utsname"]["release"] == truth["kernel_release"]
        # VMCOREINFO equals the note the kernel wrote (also in the ELF note blob)
        assert d.vmcoreinfo == parse_vmcoreinfo(
            next(n.desc for n in d.reader.notes if n.name == "VMCOREINFO"))
        cpus = d.cpus
        assert len(cpus) == truth["vcpus"] == 2
        ctx = truth["crash_context_cpu_pid_comm"]
        assert int(cpus.set_index("cpu").loc[ctx["cpu"], "pid"]) == ctx["pid"]
        seg = d.segments
        assert int(seg[seg.state == "present"].pages.sum()) == d.header["present_pages"]
        assert set(seg.state.unique()) <= {"present", "excluded"}


def _present_pfns(d: kdnb.Dump) -> np.ndarray:
    seg = d.segments
    seg = seg[seg.state == "present"]
    return np.concatenate([np.arange(int(s) // 4096, int(e) // 4096)
                           for s, e in zip(seg.start, seg.end)])


def test_sysrq_three_formats_hold_the_same_memory(corpus_elf: Path) -> None:
    folder = corpus_dir("k6.1-sysrq")
    with kdnb.open(folder / "vmcore.kdump-zlib") as z, \
            kdnb.open(folder / "vmcore.kdump-lzo") as lz, kdnb.open(corpus_elf) as e:
        assert e.format == "elf64" and e.header["filtered"]
        assert z.vmcoreinfo == lz.vmcoreinfo == e.vmcoreinfo
        pfns = _present_pfns(z)
        assert np.array_equal(pfns, _present_pfns(lz))
        elf_present = set(_present_pfns(e).tolist())
        compared = 0
        for pfn in pfns.tolist():
            a = z.read_phys(pfn * 4096, 4096)
            assert a == lz.read_phys(pfn * 4096, 4096)
            if pfn in elf_present:
                assert a == e.read_phys(pfn * 4096, 4096)
                compared += 1
            else:  # the ELF dropped only zero pages (read as zeros past p_filesz)
                assert a == bytes(4096) == e.read_phys(pfn * 4096, 4096)
        assert compared > 15000
        assert (e.cpus[["cpu", "pid", "rip", "rsp"]].values == z.cpus[["cpu", "pid", "rip", "rsp"]].values).all()


def test_excluded_page_reason() -> None:
    folder = corpus_dir("k6.1-sysrq")
    with kdnb.open(folder / "vmcore.kdump-zlib") as d:
        seg = d.segments
        start = int(seg[seg.state == "excluded"].start.iloc[0])
        with pytest.raises(PageNotInDump, match="excluded by dump level 31"):
            d.read_phys(start, 8)
