"""`Dump.block`: disks and partitions (crash `dev -d`, /proc/partitions).

Every block device the kernel has instantiated is a `struct bdev_inode` (a `block_device` and
its inode) on `blockdev_superblock->s_inodes`, the same list nr_blockdev_pages() walks for
/proc/meminfo's Buffers. Since 5.11 (the series that removed struct hd_struct) each partition is
such a bdev with its own start and size; before, the bdev points at its `hd_struct`
(`bd_part`), and only devices that are open have a bdev with a disk: the other whole disks
come from `block_class`'s device list (devices of type `disk_type`, each a gendisk's part0),
with no bdev `address`; partitions of a closed disk are not listed there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd

from ..errors import KdnbError
from .common import Gaps, fitting, read_or_none

if TYPE_CHECKING:  # pragma: no cover
    from ..api import Dump

MAX_BDEVS = 1 << 20
SECTOR = 512
COLUMNS = ["name", "dev", "major", "minor", "partno", "start_sect", "sectors", "bytes", "openers",
           "disk", "queue", "address"]


def block_frame(dump: "Dump") -> pd.DataFrame:
    """One row per block device (disk or partition): name (`vda`, `vda1`, `loop0`), dev
    (`MAJ:MIN`), major, minor, partno (0 for the whole disk), start_sect, sectors, bytes,
    openers, disk (struct gendisk), queue (struct request_queue), address (struct block_device;
    NA for a closed disk of a kernel before 5.11, which has none)."""
    k = dump.kernel
    gaps = Gaps()
    bi = k.type("struct bdev_inode")
    bd = k.type("struct block_device")
    inode_off = bi.offsetof("vfs_inode")
    link_off = k.type("struct inode").offsetof("i_sb_list")
    # 5.11 "block: move the start_sect field to struct block_device"; bd_openers an atomic_t in 6.x
    modern = bd.has_member("bd_start_sect")
    openers = "bd_openers.counter" if bd.has_member("bd_openers.counter") else "bd_openers"
    fields = ["bd_dev", openers, "bd_disk"] + (["bd_start_sect", "bd_nr_sectors"] if modern else ["bd_part"])
    layout = k.layout(bd, fields)
    disk = k.layout(k.type("struct gendisk"), ["disk_name", "first_minor", "queue"])
    hd = None if modern else k.layout(k.type("struct hd_struct"), ["start_sect", "nr_sects", "partno"])
    rows: list[dict[str, Any]] = []
    try:
        sb = k.read_u64(k.symbol("blockdev_superblock"))
        head = sb + k.type("struct super_block").offsetof("s_inodes")
        walk = k.list_walk(head, max_entries=MAX_BDEVS)
        for node in walk:
            bdev = node - link_off - inode_off
            data = read_or_none(k, bdev, layout.size, gaps, "block_device")
            values = layout.unpack(data) if data is not None else None
            if values is not None and values[2]:  # no gendisk: the pseudo-fs root, or an unused bdev
                rows.append(_row(k, bdev, values, disk, hd, gaps))
        if walk.error is not None:
            gaps.note(str(walk.error))
    except KdnbError as exc:
        gaps.note("blockdev_superblock", None, exc)
    if not modern:
        rows += _closed_disks(k, {r["disk"] for r in rows}, disk, gaps)
    rows.sort(key=lambda r: (r["major"], r["minor"]))
    df = pd.DataFrame({
        "name": pd.array([r["name"] for r in rows], dtype="string"),
        "dev": pd.array([f"{r['major']}:{r['minor']}" for r in rows], dtype="string"),
        **{c: fitting([r[c] for r in rows], t, c, gaps) for c, t in (
            ("major", "Int32"), ("minor", "Int32"), ("partno", "Int32"), ("start_sect", "UInt64"),
            ("sectors", "UInt64"), ("bytes", "UInt64"), ("openers", "Int32"), ("disk", "UInt64"),
            ("queue", "UInt64"), ("address", "UInt64"))},
    }, columns=COLUMNS)
    return gaps.attach(df, "block")


def _closed_disks(k, known: set[int], disk, gaps: Gaps) -> list[dict[str, Any]]:
    """Before 5.11: the whole disks on block_class's klist that have no open bdev."""
    rows: list[dict[str, Any]] = []
    try:
        dp = k.type("struct device_private")
        node_off, dev_off = dp.offsetof("knode_class.n_node"), dp.offsetof("device")
        type_off = k.type("struct device").offsetof("type")
        part0 = k.type("struct gendisk").offsetof("part0")
        to_disk = k.type("struct hd_struct").offsetof("__dev") + part0
        sects = part0 + k.type("struct hd_struct").offsetof("nr_sects")
        major_off = k.type("struct gendisk").offsetof("major")
        disk_type = k.symbol("disk_type")
        private = k.read_u64(k.symbol("block_class") + k.type("struct class").offsetof("p"))
        head = private + k.type("struct subsys_private").offsetof("klist_devices.k_list")
        walk = k.list_walk(head, max_entries=MAX_BDEVS)
        for node in walk:
            try:
                dev = k.read_u64(node - node_off + dev_off)
                gendisk = dev - to_disk
                if k.read_u64(dev + type_off) != disk_type or gendisk in known:
                    continue
                name, first_minor, queue = disk.unpack(k.read(gendisk, disk.size))
                major, sectors = k.read_u32(gendisk + major_off), k.read_u64(gendisk + sects)
            except KdnbError as exc:
                gaps.note("block_class device", node, exc)
                continue
            rows.append({"name": name, "major": major, "minor": first_minor, "partno": 0,
                         "start_sect": 0, "sectors": sectors, "bytes": sectors * SECTOR,
                         "openers": 0, "disk": gendisk, "queue": queue, "address": None})
        if walk.error is not None:
            gaps.note(str(walk.error))
    except KdnbError as exc:
        gaps.note("block_class", None, exc)
    return rows


def _row(k, bdev: int, values: tuple, disk, hd, gaps: Gaps) -> dict[str, Any]:
    dev, openers, gendisk = values[:3]
    major, minor = dev >> 20, dev & 0xFFFFF
    if hd is None:
        start, sectors = values[3], values[4]
    else:
        part = read_or_none(k, values[3], hd.size, gaps, "hd_struct") if values[3] else None
        start, sectors, _partno = hd.unpack(part) if part is not None else (None, None, None)
    name, first_minor, queue = "?", minor, None
    raw = read_or_none(k, gendisk, disk.size, gaps, "gendisk")
    if raw is not None:
        name, first_minor, queue = disk.unpack(raw)
    partno = minor - first_minor
    if partno:  # disk_name() of a partition: a digit-ending disk name gets a "p"
        name = f"{name}{'p' if name[-1:].isdigit() else ''}{partno}"
    return {"name": name, "major": major, "minor": minor, "partno": partno, "start_sect": start,
            "sectors": sectors, "bytes": sectors * SECTOR if sectors is not None else None,
            "openers": openers,
            "disk": gendisk, "queue": queue, "address": bdev}
