"""The fast paths made for production-size dumps give what the plain paths gave, on every bundled
sample (and the corpus, when present)."""

from __future__ import annotations

import warnings

import pytest

import kdnb
from kdnb.analysis import panic_log as P
from kdnb.analysis.panic_log import HEADLINES, PANIC, parse_panic_log
from kdnb.samples import samples
from tests.conftest import CORPUS

DUMPS = [*(str(p) for p in samples()["path"]), *sorted(str(p) for p in CORPUS.glob("*/vmcore.kdump-zlib"))]

HEADLINE_EXAMPLES = [
    "Kernel panic - not syncing: sysrq triggered crash",
    "BUG: kernel NULL pointer dereference, address: 0000000000000000",
    "BUG: unable to handle kernel NULL pointer dereference at 0000000000000008",
    "BUG: unable to handle page fault for address: ffffffffc0a01000",
    "Oops: general protection fault, probably for non-canonical address 0xdead: 0000 [#1] SMP",
    "kernel BUG at drivers/kdnb/kdnb_crash.c:42!",
    "WARNING: CPU: 1 PID: 520 at kdnb_crash.c:50 kdnb_write+0x10/0x20 [kdnb_crash]",
    "watchdog: BUG: soft lockup - CPU#1 stuck for 22s! [kdnb_softlockup:511]",
    "NMI watchdog: Watchdog detected hard LOCKUP on cpu 3",
    "rcu: INFO: rcu_preempt self-detected stall on CPU",
    "INFO: rcu_sched detected stalls on CPUs/tasks:",
    "INFO: task kdnb_hung:512 blocked for more than 5 seconds.",
    "kdnb_hog invoked oom-killer: gfp_mask=0x140cca(GFP_HIGHUSER_MOVABLE), order=0",
    "sysrq: Trigger a crash",
    "mce: [Hardware Error]: Machine check events logged",
]


def _plain(first: str) -> bool:
    return PANIC.match(first) is not None or any(p.search(first) for p, _ in HEADLINES)


def test_headline_prefilter_examples() -> None:
    lines = [*HEADLINE_EXAMPLES, *("x" + h[1:] for h in HEADLINE_EXAMPLES), "random line",
             "Kernel panic", "INFO: task list", "BUG: something else", ""]
    assert all(_plain(h) for h in HEADLINE_EXAMPLES)
    assert P._headline_lines(lines) == {i for i, line in enumerate(lines) if _plain(line)}
    assert P._headline_lines([]) == set()


@pytest.mark.parametrize("path", DUMPS, ids=lambda p: p.split("/")[-2])
def test_headline_prefilter_on_every_log_line(path: str) -> None:
    """The one-regex prefilter accepts exactly the lines some headline pattern accepts."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with kdnb.open(path) as d:
            texts = [str(t).split("\n", 1)[0] for t in d.log["text"]]
    assert texts
    assert P._headline_lines(texts) == {i for i, t in enumerate(texts) if _plain(t)}
    assert any(_plain(t) for t in texts)  # every sample has a crash report


def _parse_line_by_line(log) -> P.PanicLog:
    """parse_panic_log as it was before the joined-text scan: every pattern on every line."""
    reports, panic, current = [], None, None
    for seq, t, text in zip(log["seq"].tolist(), log["time"].tolist(), map(str, log["text"].tolist())):
        first = text.split("\n", 1)[0]
        started = None
        m = PANIC.match(first)
        if m:
            started = panic = P.Report("panic", seq, t, first, {"msg": m.group("msg")})
        else:
            for pattern, category in HEADLINES:
                hm = pattern.search(first)
                if hm:
                    started = P.Report(category, seq, t, first,
                                       {k: v for k, v in hm.groupdict().items() if v is not None})
                    break
        if started is not None:
            if current is not None and P._continues(current, started):
                current.lines.append((seq, text))
                continue
            current = started
            if started is not panic:
                reports.append(started)
        if current is not None and (started is None or current is started):
            P._absorb(current, seq, text)
    return P.PanicLog(reports, panic)


@pytest.mark.parametrize("path", DUMPS, ids=lambda p: p.split("/")[-2])
def test_panic_log_equals_the_line_by_line_parse(path: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with kdnb.open(path) as d:
            log = d.log
    got, want = parse_panic_log(log), _parse_line_by_line(log)
    assert (want.reports or want.panic) and got == want
    edited = log.copy()  # an early headline makes every later line part of a report
    edited.loc[1, "text"] = "WARNING: CPU: 0 PID: 1 at x.c:1 f+0x1/0x2"
    assert parse_panic_log(edited) == _parse_line_by_line(edited) != want


def _records_one_by_one(d: kdnb.Dump) -> list[tuple]:
    """The log's records decoded one struct.unpack at a time (the per-record path read_log had
    before its columns), sorted by seq: (seq, ts, level, facility, caller, text, subsystem, device)."""
    import struct

    from kdnb.views import log as L
    from kdnb.views import log_records as R

    k, off = d.kernel, R._Layout(d.vmcoreinfo)
    (prb,) = struct.unpack("<Q", k.read(off.prb, 8))
    ring = k.read(prb, off.rb_size)
    u32 = lambda o: struct.unpack_from("<I", ring, o)[0]
    u64 = lambda o: struct.unpack_from("<Q", ring, o)[0]
    count, size = 1 << u32(off.count_bits), 1 << u32(off.size_bits)
    descs = k.read(u64(off.descs), count * off.desc_size)
    infos = k.read(u64(off.infos), count * off.info_size)
    data = k.read(u64(off.data), size)
    out = []
    for rid in R._live_ids(u64(off.head_id), u64(off.tail_id), count).tolist():
        db = (rid & (count - 1)) * off.desc_size
        (sv,) = struct.unpack_from("<Q", descs, db + off.state_var)
        if sv >> 62 not in (1, 2) or sv & R.DESC_ID_MASK != rid & R.DESC_ID_MASK:
            continue
        (begin,) = struct.unpack_from("<Q", descs, db + off.lpos_begin)
        (nxt,) = struct.unpack_from("<Q", descs, db + off.lpos_next)
        ib = (rid & (count - 1)) * off.info_size
        seq, ts = (struct.unpack_from("<Q", infos, ib + o)[0] for o in (off.seq, off.ts))
        text_len, facility, fl = struct.unpack_from("<HBB", infos, ib + off.text_len)
        (caller,) = struct.unpack_from("<I", infos, ib + off.caller)
        text = ""
        if not (begin & 1 or nxt & 1 or begin == nxt):
            if begin // size == nxt // size:
                start, length = begin % size, nxt - begin
            else:
                assert (begin + size) // size == nxt // size
                start, length = 0, nxt % size
            text = data[start + 8:start + 8 + min(text_len, length - 8)].decode("utf-8", "replace")
        sub = L._cstr(infos[ib + off.subsystem:ib + off.subsystem + off.subsystem_len])
        dev = L._cstr(infos[ib + off.device:ib + off.device + off.device_len])
        out.append((seq, ts, fl >> 5, facility, L._caller(caller), text, sub, dev))
    return sorted(out, key=lambda r: r[0])


@pytest.mark.parametrize("path", DUMPS, ids=lambda p: p.split("/")[-2])
def test_log_columns_equal_the_per_record_decoding(path: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with kdnb.open(path) as d:
            log = d.log
            want = _records_one_by_one(d)
    got = list(zip(log["seq"].tolist(), [t.value for t in log["time"]], log["level"].tolist(),
                   log["facility"].tolist(), log["caller"].tolist(), log["text"].tolist(),
                   log["subsystem"].tolist(), log["device"].tolist()))
    assert len(got) == len(want) > 300
    assert got == want
