"""Walks of the kernel's index trees, shared by the views: the maple tree (VMAs since 6.1, IRQ
descriptors since 6.5) and the XArray / radix tree (IRQ descriptors before 6.5).

Both encode a child node as a pointer with low bits 0b10 above 4096; the node type of a maple
node sits in bits 3-6 of that pointer. Every node is read once, every walk is bounded (depth,
entry count, nodes seen), and an unreadable or inconsistent node is noted in the caller's Gaps.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Iterator

from .common import Gaps, read_or_none

if TYPE_CHECKING:  # pragma: no cover
    from ..kernel.kernel import Kernel

MAPLE_NODE_MASK = 255
MAPLE_TYPE_SHIFT, MAPLE_TYPE_MASK = 3, 0xF
MAPLE_HEIGHT_MAX = 31
ULONG_MAX = (1 << 64) - 1
XA_MAX_DEPTH = 12  # 64-bit indexes, 6 bits per level
INTERNAL_MAX = 4096  # xa_mk_internal() values below this are sibling/retry/zero entries


def is_node(entry: int) -> bool:
    """xa_is_node() / mte node test: an internal entry that points above the first page."""
    return entry & 3 == 2 and entry > INTERNAL_MAX


class MapleTree:
    """Node layouts of the maple tree (struct maple_range_64 / maple_arange_64)."""

    def __init__(self, k: "Kernel") -> None:
        types = {e.name: e.value for e in k.type("enum maple_type").strip().enumerators}
        self.leaf_type = types["maple_leaf_64"]
        self.kinds: dict[int, tuple[int, int, int]] = {}  # type -> (pivots off, n pivots, slots off)
        for name, struct_name in (("maple_leaf_64", "struct maple_range_64"),
                                  ("maple_range_64", "struct maple_range_64"),
                                  ("maple_arange_64", "struct maple_arange_64")):
            t = k.type(struct_name)
            n = t.member("pivot").type.strip().length
            self.kinds[types[name]] = (t.offsetof("pivot"), n, t.offsetof("slot"))
        self.node_size = k.type("struct maple_node").size or 256


def maple_entries(k: "Kernel", root: int, m: MapleTree, gaps: Gaps, limit: int) -> Iterator[tuple[int, int, int]]:
    """(first, last, entry) of every non-NULL entry of a maple tree, in index order."""
    if not root:
        return
    if not is_node(root):  # a single entry at index 0
        yield 0, 0, root
        return
    stack = [(root, 0, ULONG_MAX, 0)]
    seen: set[int] = set()
    found = 0
    while stack:
        enode, lo, hi, depth = stack.pop()
        node = enode & ~MAPLE_NODE_MASK
        mtype = (enode >> MAPLE_TYPE_SHIFT) & MAPLE_TYPE_MASK
        if node in seen or depth > MAPLE_HEIGHT_MAX or mtype not in m.kinds:
            gaps.note(f"maple node {enode:#x}: cycle, too deep or unknown type {mtype}", node)
            continue
        seen.add(node)
        data = read_or_none(k, node, m.node_size, gaps, "maple node")
        if data is None:
            continue
        piv_off, npiv, slot_off = m.kinds[mtype]
        pivots = struct.unpack_from(f"<{npiv}Q", data, piv_off)
        slots = struct.unpack_from(f"<{npiv + 1}Q", data, slot_off)
        children = []
        first = lo
        for i, slot in enumerate(slots):
            last = pivots[i] if i < npiv else hi
            if i and last == 0 or last < first:  # past the node's data end
                break
            last = min(last, hi)
            if slot:
                if mtype == m.leaf_type:
                    found += 1
                    if found > limit:
                        gaps.note(f"maple tree at {root:#x}: more than {limit} entries", node)
                        return
                    yield first, last, slot
                else:
                    children.append((slot, first, last, depth + 1))
            if last >= hi:
                break
            first = last + 1
        stack.extend(reversed(children))


def xarray_entries(k: "Kernel", head: int, gaps: Gaps, limit: int) -> Iterator[tuple[int, int]]:
    """(index, entry) of every entry of an XArray (a radix_tree_root) whose xa_head is `head`."""
    if not head:
        return
    if not is_node(head):
        if head & 3 != 2:
            yield 0, head
        return
    xn = k.type("struct xa_node")
    layout = k.layout(xn, ["shift"])
    slots_off = xn.offsetof("slots")
    nslots = xn.member("slots").type.strip().length
    size = xn.size or 0
    stack = [(head - 2, 0, 0)]
    seen: set[int] = set()
    found = 0
    while stack:
        node, base, depth = stack.pop()
        if node in seen or depth > XA_MAX_DEPTH:
            gaps.note(f"xa_node {node:#x}: cycle or deeper than {XA_MAX_DEPTH}", node)
            continue
        seen.add(node)
        data = read_or_none(k, node, size, gaps, "xa_node")
        if data is None:
            continue
        (shift,) = layout.unpack(data)
        if shift > 63:
            gaps.note(f"xa_node {node:#x}: shift {shift}", node)
            continue
        slots = struct.unpack_from(f"<{nslots}Q", data, slots_off)
        children = []
        for i, entry in enumerate(slots):
            if not entry:
                continue
            index = base + (i << shift)
            if is_node(entry):
                children.append((entry - 2, index, depth + 1))
            elif entry & 3 != 2:  # not a sibling, retry or zero entry
                found += 1
                if found > limit:
                    gaps.note(f"xarray at {head:#x}: more than {limit} entries", node)
                    return
                yield index, entry
        stack.extend(reversed(children))
