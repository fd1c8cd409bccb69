"""Tier 3: find the kernel in a dump without VMCOREINFO (QEMU `dump-guest-memory` without
`-device vmcoreinfo`, a hypervisor memory image).

The CPU state the dump records gives CR3 (the page-table root) and CR4 (LA57: 5-level paging).
The kernel text mapping at __START_KERNEL_map is where the KASLR'd image lies: its first mapped
2 MiB page is `_text` (= `_stext` on x86_64), and the page-table entry gives its physical
address, hence `phys_base` and the KASLR offset. The image's `linux_banner` names the release.
The result is a synthetic VMCOREINFO of what was found, which the tier-2 kallsyms scan then
verifies: the decoded table must put `_stext` and `linux_banner` exactly where they were found.
"""

from __future__ import annotations

import re
import struct
from typing import TYPE_CHECKING, Callable

from ..errors import KdnbError, MissingDebugInfo
from .pagetable import START_KERNEL_MAP

if TYPE_CHECKING:  # pragma: no cover
    from .kallsyms import RawSymbols

ReadPhys = Callable[[int, int], bytes]
DEFAULT_TEXT = 0xFFFFFFFF81000000  # _text without KASLR: the KERNELOFFSET origin
KERNEL_MAP_SIZE = 1 << 30  # KERNEL_IMAGE_SIZE with KASLR
PMD_SIZE = 2 << 20
_PRESENT, _PSE = 0x1, 0x80
_ADDR = 0x000FFFFFFFFFF000
_CR4_LA57 = 1 << 12
_PTI_USER = 1 << 12  # with PTI the user PGD is the kernel PGD's page + 4 KiB
_BANNER = re.compile(rb"Linux version (\S+) \([^\n\0]{8,400}\n\0")
BANNER_SCAN = 64 << 20  # bytes of the image searched for linux_banner


def _entry(read_phys: ReadPhys, table: int, index: int) -> int:
    return struct.unpack("<Q", read_phys((table & _ADDR) + 8 * index, 8))[0]


def _kernel_pmds(read_phys: ReadPhys, root: int, levels: int) -> list[tuple[int, int]]:
    """(vaddr, paddr) of every present 2 MiB slot of the kernel text mapping under `root`."""
    e = _entry(read_phys, root, 511)  # the top slot (P4D slot too with 5 levels)
    if levels == 5 and e & _PRESENT:
        e = _entry(read_phys, e, 511)
    if not e & _PRESENT:
        return []
    pud = _entry(read_phys, e, 510)  # __START_KERNEL_map = 0xffffffff80000000
    if not pud & _PRESENT or pud & _PSE:
        return []
    table = read_phys(pud & _ADDR, 4096)
    out = []
    for i, (pmd,) in enumerate(struct.iter_unpack("<Q", table)):
        if not pmd & _PRESENT:
            continue
        if pmd & _PSE:
            paddr = pmd & _ADDR & ~(PMD_SIZE - 1)
        else:  # split into 4 KiB pages (set_memory_*): the first PTE
            pte = _entry(read_phys, pmd, 0)
            if not pte & _PRESENT:
                continue
            paddr = pte & _ADDR
        out.append((START_KERNEL_MAP + i * PMD_SIZE, paddr))
    return out


def discover(read_phys: ReadPhys, control: list[dict[str, int]], path: str = "") -> dict[str, str]:
    """A synthetic VMCOREINFO (SYMBOL(_stext), SYMBOL(swapper_pg_dir),
    NUMBER(phys_base), KERNELOFFSET, OSRELEASE, pgtable_l5) from the vCPUs' control registers;
    raises MissingDebugInfo when no CR3 leads to a kernel image."""
    if not control:
        raise MissingDebugInfo(f"{path}: no VMCOREINFO note and no CPU state with CR3 (only QEMU "
                               "dumps record it): the kernel cannot be located")
    tried = []
    for cpu in control:
        levels = 5 if cpu["cr4"] & _CR4_LA57 else 4
        for root in dict.fromkeys((cpu["cr3"] & _ADDR, cpu["cr3"] & _ADDR & ~_PTI_USER)):
            tried.append(f"{root:#x}")
            try:
                found = _image(read_phys, root, levels)
            except KdnbError:
                continue
            if found is not None:
                return found
    raise MissingDebugInfo(f"{path}: no VMCOREINFO note, and no kernel image with a linux_banner "
                           f"under CR3 {', '.join(tried)}")


def _image(read_phys: ReadPhys, root: int, levels: int) -> dict[str, str] | None:
    pmds = _kernel_pmds(read_phys, root, levels)
    if not pmds:
        return None
    text, text_paddr = pmds[0]
    phys_base = text_paddr - (text - START_KERNEL_MAP)
    banner = _find_banner(read_phys, pmds)
    if banner is None:
        return None
    _banner_addr, release = banner  # the first banner in the image may be a weak copy
    return {
        "OSRELEASE": release, "PAGESIZE": "4096", "SYMBOL(_stext)": f"{text:x}",
        "KDNB(image_end)": f"{pmds[-1][0] + PMD_SIZE:x}",
        # the root may be a process's PGD rather than init_top_pgt: give it as a text-mapping
        # address that translates back to it (only its physical address is used), under the
        # alias no kallsyms symbol bears, so the scan does not check it
        "SYMBOL(swapper_pg_dir)": f"{root - phys_base + START_KERNEL_MAP:x}",
        "NUMBER(phys_base)": str(phys_base), "KERNELOFFSET": f"{text - DEFAULT_TEXT:x}",
        "NUMBER(pgtable_l5_enabled)": str(int(levels == 5)),
        "KDNB(discovered)": "cr3",
    }


def _find_banner(read_phys: ReadPhys, pmds: list[tuple[int, int]]) -> tuple[int, str] | None:
    """Virtual address and release of the first `Linux version ...` banner in the image."""
    scanned = 0
    for vaddr, paddr in pmds:
        if scanned >= BANNER_SCAN:
            break
        scanned += PMD_SIZE
        try:
            chunk = read_phys(paddr, PMD_SIZE + 512)
        except KdnbError:
            continue
        m = _BANNER.search(chunk)
        if m and m.start() < PMD_SIZE:
            return vaddr + m.start(), m.group(1).decode("ascii", "replace")
    return None


def banner_check(read: Callable[[int, int], bytes], release: str) -> Callable[["RawSymbols"], str | None]:
    """A kallsyms-scan check: the decoded `linux_banner` holds this kernel's banner."""
    def check(raw: "RawSymbols") -> str | None:
        try:
            addr = int(raw.addresses[raw.names.index("linux_banner")])
            text = read(addr, 15 + len(release))
        except (ValueError, KdnbError):
            return None
        return "linux_banner" if text == f"Linux version {release} ".encode() else None
    return check
