"""`Dump.modules`: loaded modules as /proc/modules lists them (crash `mod`)."""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..errors import KdnbError
from .common import Gaps, enum_values, fitting, read_or_none, taint_letters

if TYPE_CHECKING:  # pragma: no cover
    from ..api import Dump

MODULE_REF_BASE = 1  # kernel/module/main.c: refcnt starts at 1 for a live module
MAX_MODULES = 1 << 16
_U64 = struct.Struct("<Q")
COLUMNS = ["name", "state", "base", "size", "refcount", "taints", "symbols", "address"]
STATES = ["live", "coming", "going", "unformed"]


def modules_frame(dump: "Dump") -> pd.DataFrame:
    """The modules DataFrame (columns: see COLUMNS)."""
    k = dump.kernel
    gaps = Gaps()
    mt = k.type("struct module")
    fields = ["name", "state", "list.next", "list.prev", "refcnt.counter", "taints"]
    if mt.has_member("mem"):  # 6.4 ac3b43283923 ("module: replace module_layout with module_memory")
        n = mt.member("mem").type.strip().length
        fields += [f"mem[{i}].base" for i in range(n)] + [f"mem[{i}].size" for i in range(n)]
        layout_kind = ("mem", n)
    else:
        fields += ["core_layout.base", "core_layout.size", "init_layout.size"]
        layout_kind = ("layout", 0)
    has_ref = mt.has_member("refcnt")  # CONFIG_MODULE_UNLOAD
    if not has_ref:
        fields.remove("refcnt.counter")
    layout = k.layout(mt, fields)
    idx = {f: i for i, f in enumerate(fields)}
    state_names = {v: name.removeprefix("MODULE_STATE_").lower()
                   for name, v in enum_values(k, "enum module_state").items()}
    try:
        symbol_counts = {m.address: m.num_symbols for m in k.modules}
    except KdnbError as exc:
        gaps.note("module symbol tables", None, exc)
        symbol_counts = {}
    head = k.symbol("modules")
    link = k.read(head, 16)
    list_off = mt.offsetof("list")
    rows: list[dict[str, Any]] = []
    seen: set[int] = set()
    closed = False  # the forward walk came back to the head
    for direction, first in (("list.next", _U64.unpack_from(link, 0)[0]),
                             ("list.prev", _U64.unpack_from(link, 8)[0])):
        node = first
        while node != head and node not in seen and len(seen) < MAX_MODULES:
            if node == 0:
                gaps.note(f"NULL pointer in the module list after {len(seen)} modules")
                break
            seen.add(node)
            addr = node - list_off
            data = read_or_none(k, addr, layout.size, gaps, "struct module")
            if data is None:
                break
            v = layout.unpack(data)
            if layout_kind[0] == "mem":
                n = layout_kind[1]
                base = v[idx["mem[0].base"]]
                size = sum(v[idx[f"mem[{i}].size"]] for i in range(n))
            else:
                base = v[idx["core_layout.base"]]
                size = v[idx["core_layout.size"]] + v[idx["init_layout.size"]]
            rows.append({
                "name": v[idx["name"]],
                "state": state_names.get(v[idx["state"]], str(v[idx["state"]])),
                "base": base, "size": size,
                "refcount": v[idx["refcnt.counter"]] - MODULE_REF_BASE if has_ref else None,
                "taints": taint_letters(v[idx["taints"]]),
                "symbols": symbol_counts.get(addr),
                "address": addr,
            })
            node = v[idx[direction]]
        else:
            if node == head:
                closed = direction == "list.next"
                break
            if len(seen) >= MAX_MODULES:
                gaps.note(f"the module list has more than {MAX_MODULES} modules", head)
            elif direction == "list.next":  # back at a module already seen: the list cycles
                gaps.note(f"the module list: cycle at {node:#x} after {len(seen)} modules", node)
    states = list(dict.fromkeys([*STATES, *state_names.values(), *(r["state"] for r in rows)]))
    df = pd.DataFrame({
        "name": pd.array([r["name"] for r in rows], dtype="string"),
        "state": pd.Categorical([r["state"] for r in rows], categories=states),
        "base": fitting([r["base"] for r in rows], "UInt64", "base", gaps),
        "size": fitting([r["size"] for r in rows], "Int64", "size", gaps),
        "refcount": fitting([r["refcount"] for r in rows], "Int32", "refcount", gaps),
        "taints": pd.array([r["taints"] for r in rows], dtype="string"),
        "symbols": fitting([r["symbols"] for r in rows], "Int32", "symbols", gaps),
        "address": fitting([r["address"] for r in rows], "UInt64", "address", gaps),
    })
    df.attrs["kdnb"] = {**df.attrs.get("kdnb", {}),
                        "walk": {"list": "modules", "entries": len(seen), "closed": closed}}
    return gaps.attach(df, "modules")
