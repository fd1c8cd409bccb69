"""Process cores made on a real kernel (data/cores, rebuilt by
tools/make_process_cores.py): kdnb's threads, signal, mappings, backtraces and root cause
against gdb's view of the same cores, recorded beside them."""

from __future__ import annotations

import json
import lzma
import shutil
import struct
from pathlib import Path

import pytest
import zstandard
from elftools.elf.elffile import ELFFile

import kdnb
from kdnb.errors import KdnbError
from kdnb.process import Core, NotInCore
from kdnb.samples import CORES_DIR

CORES = CORES_DIR
BINARY = CORES / "crashers"
SCENARIOS = sorted(p.stem for p in CORES.glob("*.json"))


def truth(name: str) -> dict:
    return json.loads((CORES / f"{name}.json").read_text())


def open_core(name: str, **kw) -> Core:
    core = kdnb.open(CORES / f"core.{name}.zst", binaries=kw.pop("binaries", [CORES]), **kw)
    assert isinstance(core, Core)
    return core


def _base(name: str) -> str:
    return name.split("[")[0].split(".")[0]


@pytest.fixture(scope="module")
def aliases() -> dict[str, set[int]]:
    """Function name (without .cold/.constprop suffixes) -> addresses, from the binary."""
    out: dict[str, set[int]] = {}
    with open(BINARY, "rb") as f:
        for sym in ELFFile(f).get_section_by_name(".symtab").iter_symbols():
            if sym["st_info"]["type"] == "STT_FUNC" and sym["st_value"]:
                out.setdefault(_base(sym.name), set()).add(sym["st_value"])
    return out


def same_function(gdb: str, ours: str | None, aliases: dict[str, set[int]]) -> bool:
    """gdb and kdnb name the same function (equal, or aliases at one address)."""
    if gdb == "??":
        return not isinstance(ours, str)
    if not isinstance(ours, str):
        return False
    return _base(gdb) == _base(ours) or bool(aliases.get(_base(gdb), set()) & aliases.get(_base(ours), set()))


def test_fixtures_present() -> None:
    assert {"null", "stack", "abort", "assert", "double-free", "threads", "sigbus", "sigill",
            "kill", "gcore"} <= set(SCENARIOS)
    assert sum(p.stat().st_size for p in CORES.glob("core.*.zst")) < 400_000


@pytest.mark.parametrize("name", SCENARIOS)
def test_signal_and_threads(name: str) -> None:
    gt = truth(name)
    with open_core(name) as core:
        assert core.signal.signo == gt["si_signo"]
        assert core.signal.code == gt["si_code"]
        if core.fault_signal:
            assert core.signal.addr == gt["si_addr"]
        assert sorted(core.threads["tid"].tolist()) == sorted(gt["threads"])
        assert core.faulting_tid == gt["current_lwp"]
        assert core.threads.loc[core.threads["faulted"], "tid"].tolist() == [gt["current_lwp"]]
        assert core.process["comm"] == "crashers"
        if gt["made_by"].startswith("kernel"):  # gdb 13's gcore writes the program name only
            assert core.process["args"].endswith(" ".join(gt["argv"][1:]))
        assert core.problems == []


@pytest.mark.parametrize("name", SCENARIOS)
def test_backtraces_equal_gdb(name: str, aliases: dict[str, set[int]]) -> None:
    """Every frame gdb shows, kdnb shows at the same level with the same pc and function."""
    gt = truth(name)
    with open_core(name) as core:
        for tid, frames in gt["backtraces"].items():
            bt = core.backtrace(int(tid))
            assert len(bt) >= len(frames), (tid, bt.attrs["kdnb"]["stop"])
            for g in frames:
                row = bt.iloc[g["level"]]
                if g["pc"] is not None:
                    assert row["pc"] == g["pc"], (tid, g)
                assert same_function(g["function"], row["function"], aliases), (tid, g, row["function"])
            assert bt.iloc[0]["how"] == "registers"
            assert "end of stack" in bt.attrs["kdnb"]["stop"]


@pytest.mark.parametrize("name", SCENARIOS)
def test_root_cause_category(name: str) -> None:
    with open_core(name) as core:
        rc = core.root_cause()
        assert rc.category == truth(name)["category"], str(rc)
        json.dumps(rc.to_dict(), default=str)
        assert rc.explanation and "Root cause" in str(rc) and "kdnb-rootcause" in rc._repr_html_()


@pytest.mark.parametrize("name,function,words", [
    ("null", "write_record", ["NULL pointer"]),
    ("stack", "recurse", ["below the main thread's stack"]),
    ("abort", "give_up", ["abort() called"]),
    ("assert", "check_input", ["Assertion `value > 0' failed"]),
    ("double-free", "release", ["free(): double free detected in tcache 2"]),
    ("threads", "crash_in_worker", ["NULL pointer"]),
    ("sigbus", "touch_mapping", ["crashers-sigbus", "BUS_ADRERR"]),
    ("sigill", "illegal", ["ILL_ILLOPN"]),
    ("rodata", "write_literal", ["read-only mapping of crashers"]),
    ("bad-call", "call_pointer", ["0xdead0000"]),
    ("kill", "write", ["SIGQUIT"]),
])
def test_root_cause_culprit_and_message(name: str, function: str, words: list[str]) -> None:
    with open_core(name) as core:
        rc = core.root_cause()
        assert _base(rc.culprit.function) == function, str(rc)
        text = str(rc)
        for w in words:
            assert w in text, text


def test_stack_overflow_evidence() -> None:
    with open_core("stack") as core:
        bt = core.backtrace()
        assert (bt["function"] == "recurse").sum() > 500
        assert bt.iloc[-1]["function"] == "_start"
        assert "recursion" in str(core.root_cause())


def test_threads_stacks_and_mappings() -> None:
    with open_core("threads") as core:
        m = core.mappings
        labels = set(m["label"])
        assert {"[stack]", "[vdso]", "[vsyscall]", "[heap]", "guard", "crashers"} <= labels
        for tid in core.threads["tid"]:
            if tid != core.process["pid"]:
                assert f"stack of thread {tid}" in labels
        text = m[m["label"] == "crashers"]
        assert not text[text["perms"] == "r-x"]["in_core"].any()  # coredump_filter: file text left out
        assert m["start"].is_monotonic_increasing


def test_images_build_ids() -> None:
    with open(BINARY, "rb") as f:
        bid = next(n["n_desc"] for s in ELFFile(f).iter_segments() if s["p_type"] == "PT_NOTE"
                   for n in s.iter_notes() if n["n_type"] == "NT_GNU_BUILD_ID")
    with open_core("null") as core:
        img = core.images.set_index("path")
        exe = img.loc[core.process["executable"]]
        assert exe["build_id"] == bid == exe["file_build_id"] and exe["status"] == "found"
        assert img.loc["[vdso]", "status"] == "in core"
    with open_core("null", binaries=[]) as core:  # the mapped path no longer exists
        exe = core.images.set_index("path").loc[core.process["executable"]]
        assert exe["status"] == "not found"
        bt = core.backtrace()  # no symbols, no CFI: frame pointers still walk our code
        assert bt.iloc[0]["pc"] == truth("null")["backtraces"][str(core.faulting_tid)][0]["pc"]
        assert bt.iloc[1]["how"] == "return address at sp"  # frame 0 had not pushed rbp yet
        assert set(bt["how"][2:]) <= {"frame pointer"}
        assert "pass binaries=" in " ".join(core.root_cause().notes)


def test_build_id_mismatch_refused(tmp_path: Path) -> None:
    other = tmp_path / "crashers"
    shutil.copy("/bin/true" if Path("/bin/true").exists() else BINARY, other)
    with Core(CORES / "core.null.zst", binaries={"crashers": other}, use_mapped_paths=False) as core:
        exe = core.images.set_index("path").loc[core.process["executable"]]
        if Path("/bin/true").exists():
            assert exe["status"] == "build-id mismatch" and "has build-id" in exe["notes"]


def test_frame_pointer_unwinding_matches_cfi() -> None:
    with open_core("null") as core:
        cfi = core.backtrace()
        fp = core.backtrace(use_cfi=False)
        n = 3  # write_record (before its push %rbp), load_records, main (frame pointers)
        assert fp["pc"][:n].tolist() == cfi["pc"][:n].tolist()
        assert fp["how"][1:n].tolist() == ["return address at sp", "frame pointer"]


def test_auxv_and_read() -> None:
    with open_core("null") as core:
        aux = core.auxv.set_index("name")["value"]
        assert aux["AT_PAGESZ"] == 4096
        execfn = int(aux["AT_EXECFN"])
        stack = core.mappings[core.mappings["label"] == "[stack]"].iloc[0]
        assert core.read(execfn, int(stack["end"]) - execfn).split(b"\0")[0].endswith(b"/crashers")
        exe = core.images.set_index("path").loc[core.process["executable"]]
        assert core.read(int(exe["start"]), 4) == b"\x7fELF"  # the ELF header page is kept
        with pytest.raises(NotInCore, match="not mapped"):
            core.read(0x10, 8)
        text = core.mappings[core.mappings["perms"] == "r-x"].iloc[0]
        with pytest.raises(NotInCore, match="coredump_filter"):
            core.read(int(text["start"]) + 16, 8)
        assert core.symbolize(int(core.threads.iloc[0]["rip"])).startswith("write_record")
        assert core.symbol("main") > 0x400000
        with pytest.raises(kdnb.SymbolNotFound):
            core.symbol("no_such_symbol_anywhere")


@pytest.mark.parametrize("codec", ["plain", "xz", "gzip"])
def test_compressed_and_plain_cores_open(tmp_path: Path, codec: str) -> None:
    raw = zstandard.ZstdDecompressor().stream_reader((CORES / "core.abort.zst").open("rb")).read()
    import gzip

    data = {"plain": raw, "xz": lzma.compress(raw), "gzip": gzip.compress(raw)}[codec]
    path = tmp_path / f"core.{codec}"
    path.write_bytes(data)
    with kdnb.open(path, binaries=[CORES]) as core:
        assert isinstance(core, Core)
        assert core.header["compression"] == ("none" if codec == "plain" else codec)
        assert core.root_cause().category == "abort"


def test_vmcore_still_opens_as_dump() -> None:
    from kdnb.samples import samples

    table = samples()
    if not len(table):
        pytest.skip("no bundled sample")
    with kdnb.open(table.iloc[0]["path"]) as d:
        assert isinstance(d, kdnb.Dump)


def _raw_core() -> bytearray:
    return bytearray(zstandard.ZstdDecompressor().stream_reader((CORES / "core.threads.zst").open("rb")).read())


def _write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "core"
    path.write_bytes(bytes(data))
    return path


def test_truncated_core(tmp_path: Path) -> None:
    data = _raw_core()
    with _open_raw(_write(tmp_path, data[:len(data) // 2])) as core:
        assert core.header["truncated"]
        assert any("truncated" in p for p in core.problems)
        core.backtraces()
        core.root_cause()


def _open_raw(path: Path) -> Core:
    return Core(path, binaries=[CORES])


def test_hostile_nt_file_and_notes(tmp_path: Path) -> None:
    data = _raw_core()
    i = data.index(b"CORE\0\0\0\0", data.index(struct.pack("<I", 0x46494C45)) - 8)
    count_at = i + 8
    struct.pack_into("<Q", data, count_at, 1 << 40)  # NT_FILE count: absurd
    with _open_raw(_write(tmp_path, data)) as core:
        assert any("NT_FILE count" in p for p in core.problems)
        core.mappings
        core.root_cause()
    data = _raw_core()
    phnum_at = 56
    struct.pack_into("<H", data, phnum_at, 0xFFFF)  # PN_XNUM without a section header
    with pytest.raises(KdnbError):
        _open_raw(_write(tmp_path, data))


def test_garbage_stack_never_raises_beyond_kdnb(tmp_path: Path) -> None:
    data = _raw_core()
    with _open_raw(_write(tmp_path, data)) as core:
        stack = core.mappings[core.mappings["label"] == f"stack of thread {core.faulting_tid}"].iloc[0]
        off = _file_offset(core, int(stack["start"]))
    for k in range(off, off + int(stack["size"]), 8):
        struct.pack_into("<Q", data, k, 0x401000 + (k * 7919) % 0x8A000)
    with _open_raw(_write(tmp_path, data)) as core:
        for tid in core.threads["tid"]:
            bt = core.backtrace(int(tid), max_frames=64)
            assert 1 <= len(bt) <= 64
        core.root_cause()


def _file_offset(core: Core, addr: int) -> int:
    ld = core._mem.load_at(addr)
    return ld.offset + addr - ld.vaddr


def test_not_a_core(tmp_path: Path) -> None:
    with pytest.raises(kdnb.FormatError):
        Core(BINARY)
