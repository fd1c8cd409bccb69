"""Find the crash reports a kernel printed before it died: Oops, BUG, WARN, lockups, panics.

Pure text analysis of `Dump.log`; the root-cause analysis combines it with memory evidence.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..views.log_records import LogRecords

# A line that starts a report, and the category it suggests.
HEADLINES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^BUG: kernel NULL pointer dereference, address: (?P<addr>\w+)"), "null-deref"),
    (re.compile(r"^BUG: unable to handle kernel NULL pointer dereference"), "null-deref"),
    (re.compile(r"^BUG: unable to handle (page fault for address|kernel paging request)"
                r"(: | at )?(?P<addr>\w+)?"), "page-fault"),
    (re.compile(r"^(Oops: )?general protection fault"), "page-fault"),
    (re.compile(r"^kernel BUG at (?P<where>\S+)!"), "bug"),
    (re.compile(r"^WARNING: CPU: (?P<cpu>\d+) PID: (?P<pid>\d+) at (?P<where>.*)$"), "warn"),
    (re.compile(r"BUG: soft lockup - CPU#(?P<cpu>\d+) stuck for (?P<secs>\d+)s! "
                r"\[(?P<comm>.*):(?P<pid>\d+)\]"), "soft-lockup"),
    (re.compile(r"Watchdog detected hard LOCKUP on cpu (?P<cpu>\d+)"), "hard-lockup"),
    (re.compile(r"^rcu: INFO: (?P<flavor>\S+) (self-)?detected stalls? on CPU"), "rcu-stall"),
    (re.compile(r"^INFO: (?P<flavor>rcu_\w+) (self-)?detected stalls? on CPU"), "rcu-stall"),
    # 7.2 says "blocked in I/O wait for more than" of a task sleeping in io_schedule()
    (re.compile(r"^INFO: task (?P<comm>.+):(?P<pid>\d+) blocked (?:in I/O wait )?for more than "
                r"(?P<secs>\d+) seconds"), "hung-task"),
    (re.compile(r"^(?P<comm>.+) invoked oom-killer: "), "oom"),
    (re.compile(r"^sysrq: Trigger a crash"), "sysrq"),
    (re.compile(r"(Machine check|mce: \[Hardware Error\])"), "mce"),
]
PANIC = re.compile(r"^Kernel panic - not syncing: (?P<msg>.*)$")
# What the panic() string says about the cause, when it says anything.
PANIC_REASONS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"sysrq triggered crash"), "sysrq"),
    (re.compile(r"hung_task: blocked tasks"), "hung-task"),
    (re.compile(r"softlockup: hung tasks"), "soft-lockup"),
    (re.compile(r"Hard LOCKUP"), "hard-lockup"),
    (re.compile(r"RCU Stall"), "rcu-stall"),
    (re.compile(r"(Out of memory|System is deadlocked on memory)"), "oom"),
    (re.compile(r"[Mm]achine check"), "mce"),
    (re.compile(r"Attempted to kill (init|the idle task)"), "init-died"),
    (re.compile(r"panic_on_warn set"), "warn"),
    (re.compile(r"Fatal exception"), "oops-followup"),
    (re.compile(r"Oops"), "oops-followup"),
]
# Every headline (and the panic line) contains one of these: a line without any cannot start a
# report, so only the lines str.find meets in the joined log go through the patterns.
NEEDLES = ("Kernel panic - not syncing: ", "BUG: ", "general protection fault", "kernel BUG at ",
           "WARNING: CPU: ", "Watchdog detected hard LOCKUP on cpu ", "INFO: ",
           " invoked oom-killer: ", "sysrq: Trigger a crash", "Machine check",
           "mce: [Hardware Error]")
NEEDLES_RAW = tuple(n.encode("ascii") for n in NEEDLES)
TS_LIMIT = 1 << 63  # Dump.log shows a ts_nsec from here on as NaT
CPU_LINE = re.compile(r"^CPU: (?P<cpu>\d+) (UID: \d+ )?PID: (?P<pid>\d+) Comm: (?P<comm>\S+)"
                      r"(?P<rest>.*)$")
TAINT = re.compile(r"Tainted: (?P<letters>[A-Z ]+?) +\d+\.\d+")
RIP_LINE = re.compile(r"^RIP: (?P<cs>[0-9a-f]{4}):(?P<where>\S+)( \[(?P<module>[^\]]+)\])?")
FRAME = re.compile(r"^\s*(?P<unsure>\? )?(?P<func>[\w.$]+)\+(?P<off>0x[0-9a-f]+)/(?P<size>0x[0-9a-f]+)"
                   r"( \[(?P<module>[^\]]+)\])?")
ORDER = ["null-deref", "page-fault", "bug", "warn", "soft-lockup", "hard-lockup", "rcu-stall",
         "hung-task", "oom", "mce", "sysrq"]


@dataclass
class Frame:
    """One `func+off/size [mod]` line of a printed call trace."""

    function: str
    offset: int
    size: int
    module: str | None
    reliable: bool

    @property
    def text(self) -> str:
        mod = f" [{self.module}]" if self.module else ""
        return f"{self.function}+{self.offset:#x}/{self.size:#x}{mod}"


@dataclass
class Report:
    """One crash report in the log: its headline, the lines it owns, and what they name."""

    category: str
    seq: int
    time: pd.Timedelta
    headline: str
    fields: dict
    lines: list[tuple[int, str]] = field(default_factory=list)
    cpu: int | None = None
    pid: int | None = None
    comm: str | None = None
    tainted: str = ""
    rip: str | None = None
    rip_module: str | None = None
    user_mode: bool = False
    trace: list[Frame] = field(default_factory=list)

    def reliable_trace(self) -> list[Frame]:
        """Frames the kernel printed without a '?' (those it could vouch for)."""
        return [f for f in self.trace if f.reliable]


@dataclass
class PanicLog:
    """The crash reports of a log and its final panic line."""

    reports: list[Report]
    panic: Report | None  # the "Kernel panic - not syncing" report, when printed

    @property
    def last(self) -> Report | None:
        """The last report before the end (the one the machine died of, or its symptom)."""
        return self.reports[-1] if self.reports else None


def parse_panic_log(log: pd.DataFrame) -> PanicLog:
    """Split the log into crash reports (each headline owns the lines up to the next one)."""
    texts = [str(t) for t in log["text"].tolist()]
    firsts = [t.split("\n", 1)[0] for t in texts]
    hits = _headline_lines(firsts)
    if not hits:
        return PanicLog([], None)
    start = min(hits)
    times = log["time"]
    return _walk({i - start for i in hits}, log["seq"].tolist()[start:], texts[start:], firsts[start:],
                 lambda i: times.iloc[start + i])


def parse_panic_records(records: LogRecords) -> PanicLog:
    """`parse_panic_log` of the log these records make, found in the undecoded text blob: only
    the records from the first headline on are decoded (a crash report sits at the log's end)."""
    hits = _record_hits(records)
    if hits is None:  # overlapping text blocks (a corrupt ring): look at every decoded line
        firsts = [t.split("\n", 1)[0] for t in records.texts()]
        hits = _headline_lines(firsts)
    if not hits:
        return PanicLog([], None)
    start = min(hits)
    texts = records.texts(start)
    ts = records.ts[start:].tolist()

    def time(i: int) -> pd.Timedelta:  # as Dump.log's time column: NaT past 2^63 ns
        return pd.NaT if ts[i] >= TS_LIMIT else pd.Timedelta(ts[i], unit="ns")

    return _walk({i - start for i in hits}, records.seq[start:].tolist(), texts,
                 [t.split("\n", 1)[0] for t in texts], time)


def _walk(hits: set[int], seqs: list[int], texts: list[str], firsts: list[str],
          time: Callable[[int], pd.Timedelta]) -> PanicLog:
    """The reports of lines 0.. (line 0 the first headline; `hits` the headline lines)."""
    reports: list[Report] = []
    panic: Report | None = None
    current: Report | None = None
    for i in range(len(texts)):
        seq, text, first = seqs[i], texts[i], firsts[i]
        started = None
        m = PANIC.match(first) if i in hits else None
        if m:
            started = Report("panic", seq, time(i), first, {"msg": m.group("msg")})
            panic = started
        elif i in hits:
            for pattern, category in HEADLINES:
                hm = pattern.search(first)
                if hm:
                    started = Report(category, seq, time(i), first,
                                     {k: v for k, v in hm.groupdict().items() if v is not None})
                    break
        if started is not None:
            if current is not None and _continues(current, started):
                current.lines.append((seq, text))
                continue
            current = started
            if started is not panic:
                reports.append(started)
        if current is not None:
            if started is None or current is started:
                _absorb(current, seq, text)
    return PanicLog(reports, panic)


def _record_hits(records: LogRecords) -> set[int] | None:
    """`_headline_lines` of the records' first lines, the needles searched in the raw blob (they
    are ASCII, and UTF-8 decoding never turns an ASCII byte into anything else: a needle lies in
    the bytes of a first line exactly when it lies in its text); None when text blocks overlap."""
    blob, first, last = records.blob, records.first, records.last
    filled = np.flatnonzero(last > first)
    by_first = filled[np.argsort(first[filled], kind="stable")]
    starts, ends = first[by_first], last[by_first]
    if len(starts) > 1 and bool((starts[1:] < ends[:-1]).any()):
        return None
    found: list[int] = []
    found_end: list[int] = []
    for needle in NEEDLES_RAW:
        at = blob.find(needle)
        while at >= 0:
            found.append(at)
            found_end.append(at + len(needle))
            at = blob.find(needle, at + 1)
    if not found:
        return set()
    k = np.searchsorted(starts, np.array(found, dtype=np.int64), side="right") - 1
    inside = (k >= 0) & (np.array(found_end, dtype=np.int64) <= ends[np.maximum(k, 0)])
    line_end: dict[int, int] = {}  # record -> where its first line ends in the blob
    candidates: set[int] = set()  # records with a needle inside their first line
    for j in np.flatnonzero(inside).tolist():
        rec = int(by_first[k[j]])
        if rec not in line_end:
            a, b = int(first[rec]), int(last[rec])
            nl = blob.find(b"\n", a, b)
            line_end[rec] = b if nl < 0 else nl
        if found_end[j] <= line_end[rec]:
            candidates.add(rec)
    return {rec for rec in candidates
            if _is_headline(blob[int(first[rec]):line_end[rec]].decode("utf-8", "replace"))}


def _headline_lines(firsts: list[str]) -> set[int]:
    """Indices of the lines some headline pattern (or the panic line) matches."""
    blob = "\n".join(firsts)
    found: list[int] = []
    for needle in NEEDLES:  # no needle holds a newline: each hit lies inside one line
        at = blob.find(needle)
        while at >= 0:
            found.append(at)
            at = blob.find(needle, at + 1)
    starts = np.cumsum([0] + [len(f) + 1 for f in firsts[:-1]])
    lines = set((np.searchsorted(starts, np.array(found, dtype=np.int64), side="right") - 1).tolist())
    return {i for i in lines if _is_headline(firsts[i])}


def _is_headline(first: str) -> bool:
    return PANIC.match(first) is not None or any(p.search(first) for p, _ in HEADLINES)


def _continues(current: Report, new: Report) -> bool:
    """An `Oops:` line after a NULL-deref BUG line belongs to the same report."""
    return new.category == "page-fault" and new.headline.startswith("Oops:") and \
        current.category in ("null-deref", "page-fault", "bug")


def _absorb(report: Report, seq: int, text: str) -> None:
    """Take what a line of a report names: the CPU/task line, RIP, taint, call trace."""
    report.lines.append((seq, text))
    for line in text.split("\n"):
        m = CPU_LINE.match(line)
        if m and report.cpu is None:
            report.cpu, report.pid, report.comm = int(m["cpu"]), int(m["pid"]), m["comm"]
            tm = TAINT.search(m["rest"])
            if tm:  # fixed-width flag string; 'G' only says "no proprietary module"
                report.tainted = tm["letters"].replace(" ", "").replace("G", "")
            continue
        m = RIP_LINE.match(line)
        if m and report.rip is None:
            report.user_mode = m["cs"] in ("0033", "0023")
            if not report.user_mode:
                report.rip, report.rip_module = m["where"], m["module"]
            continue
        m = FRAME.match(line)
        if m and not line.startswith("RIP"):
            report.trace.append(Frame(m["func"], int(m["off"], 16), int(m["size"], 16),
                                      m["module"], not m["unsure"]))


def panic_reason(message: str) -> str:
    """The category a panic() string names, or 'panic-call' when it names none."""
    for pattern, category in PANIC_REASONS:
        if pattern.search(message):
            return category
    return "panic-call"
