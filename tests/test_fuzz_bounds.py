"""kdnb.bounds: the one boundary for untrusted numbers."""

from __future__ import annotations

import pytest

from kdnb import bounds
from kdnb.errors import CorruptDump, ImplausibleValue, KdnbError


def test_in_range_and_friends() -> None:
    assert bounds.in_range(5, "f", 0, 10) == 5
    assert bounds.count(0, "n", 3) == 0
    assert bounds.shift(63, "s") == 63
    assert bounds.power_of_two(4096, "bs", 512, 1 << 20) == 4096
    assert bounds.field_offset(16, 8, 24, "off") == 16
    for call in (lambda: bounds.in_range(11, "f", 0, 10), lambda: bounds.count(-1, "n", 3),
                 lambda: bounds.shift(64, "s"), lambda: bounds.power_of_two(3000, "bs", 512, 1 << 20),
                 lambda: bounds.field_offset(17, 8, 24, "off"), lambda: bounds.field_offset(0, 8, 4, "off"),
                 lambda: bounds.in_range(True, "f", 0, 10), lambda: bounds.in_range("3", "f", 0, 10)):
        with pytest.raises(ImplausibleValue):
            call()


def test_error_names_file_field_and_value() -> None:
    with pytest.raises(ImplausibleValue) as info:
        bounds.in_range(1 << 40, "kdump max_mapnr", 0, 1 << 30, "/x/vmcore")
    exc = info.value
    assert isinstance(exc, CorruptDump)
    assert (exc.field, exc.value, exc.path) == ("kdump max_mapnr", 1 << 40, "/x/vmcore")
    assert str(exc).startswith("/x/vmcore: kdump max_mapnr = 0x10000000000 is implausible")


@pytest.mark.parametrize("text,base,want", [("12", 10, 12), ("-4096", 10, -4096), ("ffffffff81000000", 16, 0xFFFFFFFF81000000),
                                            ("0x10", 16, 16), (" 7 ", 10, 7)])
def test_parse_int(text: str, base: int, want: int) -> None:
    assert bounds.parse_int(text, "f", base) == want


@pytest.mark.parametrize("text,base", [("0x1000", 10), ("", 10), (None, 10), ("1e3", 10), ("\u0661\u0662", 10),
                                       ("12k", 10), ("--5", 10), ("xyz", 16), ("-1", 16)])
def test_parse_int_refuses(text: str | None, base: int) -> None:
    with pytest.raises(ImplausibleValue, match="not a base"):
        bounds.parse_int(text, "f", base)


@pytest.mark.parametrize("key,value", [
    ("NUMBER(MAX_PHYSMEM_BITS)", "0x1000"), ("NUMBER(MAX_PHYSMEM_BITS)", "8000000000000000"),
    ("NUMBER(MAX_PHYSMEM_BITS)", "-4096"), ("SYMBOL(_stext)", "not-hex"), ("SYMBOL(prb)", "0"),
    ("CRASHTIME", "ffffffffffffffff"), ("CRASHTIME", "18446744073709551615"), ("PAGESIZE", "abc"),
    ("PAGESIZE", "0"), ("SIZE(prb_desc)", "-4096"), ("OFFSET(prb_desc_ring.infos)", "-1"),
    ("OFFSET(printk_info.caller_id)", str(1 << 40)), ("KERNELOFFSET", "ffffffffffffffff"),
    ("NUMBER(phys_base)", str(1 << 60)), ("NUMBER(pgtable_l5_enabled)", "2"), ("LENGTH(x)", "-1"),
])
def test_vmcoreinfo_int_refuses(key: str, value: str) -> None:
    with pytest.raises(ImplausibleValue) as info:
        bounds.vmcoreinfo_int({key: value}, key, "/d")
    assert key in str(info.value) and str(info.value).startswith("/d: ")


def test_vmcoreinfo_int_by_kind() -> None:
    info = {"SYMBOL(prb)": "ffffffff84a622c0", "OFFSET(printk_info.seq)": "0", "SIZE(printk_info)": "88",
            "NUMBER(phys_base)": "-75497472", "KERNELOFFSET": "2e000000", "CRASHTIME": "1795823334",
            "NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)": "-129"}
    assert bounds.vmcoreinfo_int(info, "SYMBOL(prb)") == 0xFFFFFFFF84A622C0
    assert bounds.vmcoreinfo_int(info, "OFFSET(printk_info.seq)") == 0
    assert bounds.vmcoreinfo_int(info, "SIZE(printk_info)") == 88
    assert bounds.vmcoreinfo_int(info, "NUMBER(phys_base)") == -75497472
    assert bounds.vmcoreinfo_int(info, "KERNELOFFSET") == 0x2E000000
    assert bounds.vmcoreinfo_int(info, "CRASHTIME") == 1795823334
    assert bounds.vmcoreinfo_int(info, "NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)") == -129
    assert bounds.vmcoreinfo_int(info, "NUMBER(MAX_PHYSMEM_BITS)", default=46) == 46
    with pytest.raises(KdnbError, match="lacks SIZE"):
        bounds.vmcoreinfo_int(info, "SIZE(prb_desc)")
