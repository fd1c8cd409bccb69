"""Module BTF: split BTF on a synthetic base, then real modules' BTF from the 6.1 and 6.12 dumps."""

from __future__ import annotations

import struct

import pytest

import kdnb
from kdnb.errors import TypeNotFound
from kdnb.kernel.btf import BTF
from kdnb.kernel.module_btf import module_types
from tests.conftest import corpus_dir
from tests.test_btf import BTFBuilder


class SplitBuilder(BTFBuilder):
    """A split blob: ids go on from the base's, string offsets from the base's string length;
    `base_s` names a type with a string that is in the base (as deduplicated module BTF does)."""

    def __init__(self, base: BTF) -> None:
        super().__init__()
        self.count = len(base) - 1
        self.str_base = base.header["str_len"]
        self.base = base

    def s(self, name: str) -> int:
        if not name:
            return 0
        return self.str_base + super().s(name)

    def base_s(self, name: str) -> int:
        at = self.base.data.find(b"\0" + name.encode() + b"\0", self.base._str_start)
        assert at >= 0
        return at + 1 - self.base._str_start


@pytest.fixture(scope="module")
def pair() -> tuple[BTF, BTF]:
    b = BTFBuilder()
    u32 = b.int_("unsigned int", 4)  # 1
    disk = b.struct_("struct", "gendisk", 16, [("major", u32, 0), ("minors", u32, 32)])  # 2
    b.add("fwd", "blk_opaque")  # 3: only declared in the base
    b.add("typedef", "u32", size_or_type=u32)  # 4
    base = BTF(b.blob())
    assert len(base) == 5

    s = SplitBuilder(base)
    disk_ptr = s.add("ptr", size_or_type=disk)  # 5 -> base struct gendisk
    arr = s.add("array", extra=struct.pack("<III", 4, u32, 3))  # 6: u32[3] (base typedef)
    vblk = s.struct_("struct", "virtio_blk", 32, [("disk", disk_ptr, 0), ("index", u32, 64),
                                                 ("io_queues", arr, 96)])  # 7
    # the full definition of a type the base only declares, named with the base's string
    s.types += struct.pack("<III", s.base_s("blk_opaque"), (4 << 24) | 1, 4) + struct.pack("<III", s.s("x"), u32, 0)
    s.count += 1  # 8
    s.add("ptr", size_or_type=vblk)  # 9
    split = BTF(s.blob(), base=base, name="virtio_blk")
    assert (split.start_id, len(split)) == (5, 10)
    return base, split


def test_split_ids_and_strings(pair: tuple[BTF, BTF]) -> None:
    base, split = pair
    assert split.start_str_off == base.header["str_len"]
    t = split.type("struct virtio_blk")
    assert t.id == 7 and t.size == 32 and t.btf is split
    disk = t.member("disk").type
    assert disk.kind == "ptr" and disk.target is base.type("struct gendisk")  # refers back into the base
    assert t.member("disk").type.target.member("minors").offset == 4
    assert t.member("io_queues").type.c_name == "u32 [3]" and t.member("io_queues").type.size == 12
    assert t.offsetof("io_queues[2]") == 20
    assert split.string(0) == "" and split.string(split.start_str_off) == ""
    assert split.kind_of(2) == "struct" and split.kind_of(9) == "ptr" and split.kind_of(0) == "void"
    assert split.own(7) and not split.own(2) and not split.own(10)


def test_split_lookup_order(pair: tuple[BTF, BTF]) -> None:
    base, split = pair
    assert split.type("struct gendisk") is base.type("struct gendisk")  # base types through the split
    assert split.type("u32") is base.type("u32")
    with pytest.raises(TypeNotFound):
        split.find("struct gendisk", own_only=True)
    assert split.find("struct virtio_blk", own_only=True) == 7
    # the base only declares blk_opaque; the split's full definition (a base string) wins
    assert base.type("struct blk_opaque").kind == "fwd"
    full = split.type("struct blk_opaque")
    assert full.kind == "struct" and full.id == 8 and [m.name for m in full.members] == ["x"]
    assert split.type("struct virtio_blk *").target.id == 7
    with pytest.raises(TypeNotFound):
        base.type("struct virtio_blk")
    with pytest.raises(TypeNotFound):
        split.type(10)
    with pytest.raises(TypeNotFound):
        split.type("struct nothing_here")


# -- the corpus: virtio_blk is a loadable module in both kernels -------------------------------
CASES = [("k6.1-sysrq", 8), ("k6.12-hung_task", 3)]


@pytest.fixture(scope="module", params=CASES, ids=[c[0] for c in CASES])
def kernel_case(request):
    name, modules_with_btf = request.param
    dump = kdnb.open(corpus_dir(name) / "vmcore.kdump-zlib")
    yield dump.kernel, modules_with_btf
    dump.close()


def test_corpus_virtio_blk_type(kernel_case) -> None:
    k, modules_with_btf = kernel_case
    with pytest.raises(TypeNotFound):
        k.btf.type("struct virtio_blk")  # not in vmlinux ...
    t = k.type("struct virtio_blk")  # ... but in the module's split BTF
    assert t.btf.name == "virtio_blk" and t.id >= len(k.btf)
    assert t.offsetof("disk") == 40 and t.offsetof("tag_set") == 48 and t.offsetof("io_queues") == 256
    disk = t.member("disk").type
    assert disk.c_name == "struct gendisk *" and disk.target is k.btf.type("struct gendisk")
    assert k.type("struct virtio_blk", module="virtio_blk") is t
    assert k.type("struct virtio_blk *").target is t
    assert k.type("struct gendisk", module="virtio_blk") is k.btf.type("struct gendisk")
    reg = module_types(k)
    assert len(reg.sources) == modules_with_btf and reg.missing == [] and reg.problems == []
    assert all(s.origin == "btf_modules" and s.start_id == len(k.btf) for s in reg.sources.values())
    with pytest.raises(TypeNotFound, match="no module"):
        k.type("struct virtio_blk", module="no_such_module")
    with pytest.raises(TypeNotFound):
        k.type("struct kdnb_no_such_type")


def test_corpus_virtio_blk_objects(kernel_case) -> None:
    """Read the live virtio_blk devices through the module type: vda/vdb/vdc, back pointers agree."""
    k, _ = kernel_case
    inode_off = k.type("struct bdev_inode").offsetof("vfs_inode")
    sb = k.read_u64(k.symbol("blockdev_superblock"))
    head = sb + k.type("struct super_block").offsetof("s_inodes")
    fops = k.symbol("virtblk_fops")  # a virtio_blk module symbol
    seen = {}
    for inode in k.for_each_entry(head, "struct inode", "i_sb_list"):
        bdev = k.object(inode.address - inode_off, "struct block_device")
        if not bdev["bd_disk"]:
            continue
        disk = k.object(bdev["bd_disk"], "struct gendisk")
        if disk["fops"] != fops or disk["part0"] != bdev.address:
            continue
        vblk = k.object(disk["private_data"], "struct virtio_blk")
        assert vblk["disk"] == disk.address
        assert vblk["tag_set.driver_data"] == vblk.address
        assert k.object(vblk["vdev"], "struct virtio_device")["priv"] == vblk.address
        assert list(vblk["io_queues"]) == [2, 0, 0]  # dmesg: "2/0/0 default/read/poll queues"
        seen[disk["disk_name"]] = (vblk["index"], bdev["bd_nr_sectors"])
    assert seen["vda"][0] == 0
    assert set(seen) >= {"vda"}


def test_corpus_out_of_tree_module_has_no_btf() -> None:
    """k6.1-oops has kdnb_crash loaded, built out of tree without pahole: no BTF, said so."""
    dump = kdnb.open(corpus_dir("k6.1-oops") / "vmcore.kdump-zlib")
    try:
        k = dump.kernel
        reg = module_types(k)
        assert "kdnb_crash" in reg.missing and "kdnb_crash" not in reg.sources
        assert "virtio_blk" in reg.sources
        with pytest.raises(TypeNotFound, match="has no BTF"):
            k.type("struct anything", module="kdnb_crash")
    finally:
        dump.close()
