"""VMCOREINFO entries made from the kernel's own symbols and BTF, for dumps without the note.

The kernel writes these for the printk ring buffer in log_buf_vmcoreinfo_setup(); a dump whose
kernel was located by CR3 (tier 3) has no note, so the same numbers are derived here: an
`OFFSET(s.m)` is `offsetof(struct s, m)`, a `SIZE(s)` is `sizeof(struct s)`, a `LENGTH(...)` an
array's length, a `SYMBOL(x)` the kallsyms address.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import KdnbError

if TYPE_CHECKING:  # pragma: no cover
    from .kernel import Kernel

PRINTK_STRUCTS: dict[str, tuple[str, ...]] = {
    "printk_ringbuffer": ("desc_ring", "text_data_ring"),
    "prb_desc_ring": ("count_bits", "descs", "infos", "head_id", "tail_id"),
    "prb_data_ring": ("size_bits", "data"),
    "prb_desc": ("state_var", "text_blk_lpos"),
    "prb_data_blk_lpos": ("begin", "next"),
    "printk_info": ("seq", "ts_nsec", "text_len", "caller_id", "dev_info"),
    "dev_printk_info": ("subsystem", "device"),
}
PRINTK_LENGTHS = {"printk_info_subsystem": ("dev_printk_info", "subsystem"),
                  "printk_info_device": ("dev_printk_info", "device")}


def printk_entries(kernel: "Kernel") -> dict[str, str]:
    """The printk VMCOREINFO entries of this kernel; raises KdnbError (names the missing part)."""
    out = {"SYMBOL(prb)": f"{kernel.symbol('prb'):x}"}
    for struct_name, members in PRINTK_STRUCTS.items():
        t = kernel.type(f"struct {struct_name}")
        out[f"SIZE({struct_name})"] = str(t.size)
        for m in members:
            out[f"OFFSET({struct_name}.{m})"] = str(t.offsetof(m))
    for key, (struct_name, member) in PRINTK_LENGTHS.items():
        array = kernel.type(f"struct {struct_name}").member(member).type.strip()
        if array.kind != "array":
            raise KdnbError(f"struct {struct_name}.{member} is not an array")
        out[f"LENGTH({key})"] = str(array.length)
    return out
