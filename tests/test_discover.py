"""Tier 3: dumps without VMCOREINFO, the kernel located from the CPUs' CR3.

The fast tests take each bundled sample (every kernel series), hide its VMCOREINFO note and give
it a QEMU CPU note whose CR3 is the kernel's page-table root, as a QEMU dump-guest-memory without
`-device vmcoreinfo` records. The lab test makes such a QEMU dump for real.
"""

from __future__ import annotations

import json
import shutil
import struct
import warnings
from pathlib import Path

import pytest

import kdnb
from kdnb.dump.notes import QEMU_CPU_CR_OFFSET, Note
from kdnb.errors import MissingDebugInfo
from kdnb.kernel import Kernel
from kdnb.kernel.discover import discover
from kdnb.kernel.pagetable import START_KERNEL_MAP
from tests.conftest import DATA

SAMPLES = sorted(p for p in DATA.glob("*") if (p / "ground-truth.json").exists()) if DATA.is_dir() else []


class NoVmcoreinfo:
    """A reader that shows a real dump's memory but none of its notes, plus one QEMU CPU note."""

    def __init__(self, reader, cr3: int, cr4: int = 0) -> None:
        self.path = reader.path
        self.read_phys = reader.read_phys
        self.vmcoreinfo: dict[str, str] = {}
        desc = bytearray(QEMU_CPU_CR_OFFSET + 48)
        struct.pack_into("<5Q", desc, QEMU_CPU_CR_OFFSET, 0x80050033, 0, 0, cr3, cr4)
        self.notes = [Note("QEMU", 0, bytes(desc), 0)]


def _hidden(folder: Path, tmp_path: Path) -> tuple[kdnb.Dump, Kernel]:
    d = kdnb.open(sorted(folder.glob("vmcore.*"))[0])
    vi = d.vmcoreinfo
    root = int(vi["SYMBOL(init_top_pgt)"], 16) - START_KERNEL_MAP + int(vi["NUMBER(phys_base)"])
    cr4 = 1 << 12 if vi.get("NUMBER(pgtable_l5_enabled)") == "1" else 0
    return d, Kernel(NoVmcoreinfo(d.reader, root | 0x1000, cr4), cache_dir=tmp_path)  # a PTI user CR3


@pytest.mark.parametrize("folder", SAMPLES, ids=lambda p: f"data-{p.name}")
def test_every_kernel_found_from_cr3(folder: Path, tmp_path: Path) -> None:
    d, k = _hidden(folder, tmp_path)
    vi = d.vmcoreinfo
    assert k.vmcoreinfo["SYMBOL(_stext)"] == vi["SYMBOL(_stext)"]
    assert int(k.vmcoreinfo["KERNELOFFSET"], 16) == int(vi["KERNELOFFSET"], 16)
    assert k.vmcoreinfo["NUMBER(phys_base)"] == vi["NUMBER(phys_base)"]
    assert k.release == vi["OSRELEASE"]
    for name in ("init_task", "linux_banner", "prb", "slab_caches", "init_uts_ns"):
        assert k.symbol(name) == d.kernel.symbol(name), name
    assert k.symbol_source["tier"] == 3 and set(k.symbol_source["verified"]) == {"_stext", "linux_banner"}
    assert len(k._table) == len(d.kernel._table)


@pytest.mark.parametrize("folder", SAMPLES[:1], ids=lambda p: f"data-{p.name}")
def test_log_without_vmcoreinfo_equals_the_note_driven_log(folder: Path, tmp_path: Path) -> None:
    from kdnb.views.log import read_log

    d, k = _hidden(folder, tmp_path)
    log, _problems = read_log(k.read, k.log_vmcoreinfo())
    assert log["text"].tolist() == d.log["text"].tolist()
    assert log["time"].tolist() == d.log["time"].tolist()


def test_no_cpu_state_is_a_clear_error() -> None:
    with pytest.raises(MissingDebugInfo, match="CR3"):
        discover(lambda a, s: b"\0" * s, [], "x.elf")


def test_a_cr3_without_a_kernel_is_a_clear_error() -> None:
    with pytest.raises(MissingDebugInfo, match="no kernel image"):
        discover(lambda a, s: b"\0" * s, [{"cr3": 0x1000, "cr4": 0}], "x.elf")


@pytest.mark.lab
def test_real_qemu_dump_without_vmcoreinfo(tmp_path: Path) -> None:
    """`kdnb lab make idle --no-vmcoreinfo` on 6.1: a QEMU dump with no note at all."""
    if not shutil.which("qemu-system-x86_64"):
        pytest.skip("qemu-system-x86_64 not installed")
    from kdnb.lab import make

    path = make("idle", kernel="6.1", formats=["qemu-elf"], memory="256M", out_dir=tmp_path / "idle",
                vmcoreinfo=False)
    truth = json.loads((path.parent / "ground-truth.json").read_text())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = kdnb.open(path)
        assert not d.vmcoreinfo and d.symbol_source["tier"] == 3
        for name, addr in truth["kallsyms_first_kernel"].items():
            assert d.kernel.symbol(name) == int(addr, 16), name
        assert len(d.tasks) > 40 and len(d.slab) > 100 and len(d.log) > 100
        assert d.sys_info["release"] == truth["kernel_release"]
