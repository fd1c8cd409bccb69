"""Why the kernel died: the class of the root cause, the culprit and the evidence.

The log names the symptom (a panic string, an Oops, a hung-task report); memory says more: which
CPU was spinning, who owned the lock a blocked task waits for. A cascade is followed back to the
root, and `.category` is always the class of the root, not of the symptom.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .panic_log import PanicLog, Report, panic_reason, parse_panic_log, parse_panic_records
from .rootcause_culprit import (add_taints, culprit_of, log_evidence, memory_evidence,
                                module_evidence, simple_chain)
from .rootcause_model import CATEGORIES, EXPLANATIONS, OOPS_CLASSES, Analysis, Culprit, RootCause

if TYPE_CHECKING:  # pragma: no cover
    from ..api import Dump

__all__ = ["CATEGORIES", "EXPLANATIONS", "Culprit", "RootCause", "root_cause"]


def root_cause(dump: "Dump") -> RootCause:
    """Classify why the kernel died, name the culprit and gather the evidence."""
    an = Analysis(dump)
    plog = _panic_log(an, dump)
    category, report = _classify(plog)
    culprit = culprit_of(an, category, report, plog)
    message = _message(plog, report)
    log_evidence(an, plog, report)
    chain: list[dict] = []
    alternatives: list[tuple[str, str]] = []
    confidence = 0.9 if report is not None or plog.panic is not None else 0.3
    if category == "unknown":
        confidence = 0.2
    # the explainers of one category (and what they import) load only for that category
    if category == "hung-task":
        from .rootcause_io import explain_io
        from .rootcause_wait import explain_wait

        found = explain_io(an, plog, culprit) or explain_wait(an, plog, culprit, category)
        if found is not None:
            if found.category != category:
                alternatives.append((category, f"the log reports this symptom; {found.why}"))
            category, culprit, chain, confidence = found.category, found.culprit, found.chain, found.confidence
    if category == "rcu-stall":
        from .rootcause_rcu import explain_rcu_stall

        stall = explain_rcu_stall(an, report, culprit)
        if stall is not None:
            culprit, chain = stall
            if plog.panic is not None:
                chain.append({"role": "end", "what": plog.panic.headline})
    add_taints(an, culprit)
    if category in OOPS_CLASSES + ("panic-call",) and culprit.module:
        module_evidence(an, culprit)
    if category == "oom":
        from .oom import oom_evidence

        oom_evidence(an)
        memory_evidence(an)
    if not chain:
        chain = simple_chain(category, culprit, plog, report)
    return RootCause(category, message, culprit, an.frame(), chain, confidence, alternatives,
                     an.notes)


def _panic_log(an: Analysis, dump: "Dump") -> PanicLog:
    """The crash reports of the log: from `dump.log` when it is already read, else from the
    undecoded records (what `dump.log` would hold, without decoding and framing every line)."""
    if "log" in vars(dump):  # the cached_property's value
        log = an.get("kernel log", lambda: dump.log)
        return parse_panic_log(log) if log is not None else PanicLog([], None)
    from ..views.log_records import read_log_records

    records = an.get("kernel log", lambda: read_log_records(dump.kernel.read, dump.kernel.log_vmcoreinfo(),
                                                            dump.path))
    return parse_panic_records(records) if records is not None else PanicLog([], None)


# -- classification ------------------------------------------------------------------------

def _classify(plog: PanicLog) -> tuple[str, Report | None]:
    """The category and the report that shows it."""
    if plog.panic is not None:
        reason = panic_reason(plog.panic.fields.get("msg", ""))
        if reason == "oops-followup":
            report = _last(plog, OOPS_CLASSES)
            return (report.category, report) if report else ("unknown", plog.panic)
        if reason == "panic-call":
            return "panic-call", plog.panic
        report = _last(plog, (reason,))
        return reason, report or plog.panic
    report = _last(plog, OOPS_CLASSES + ("soft-lockup", "hard-lockup", "rcu-stall", "mce", "oom",
                                         "sysrq", "hung-task"))
    if report is None:
        return "unknown", None
    return report.category, report


def _last(plog: PanicLog, categories: tuple[str, ...]) -> Report | None:
    for report in reversed(plog.reports):
        if report.category in categories:
            return report
    return None


def _message(plog: PanicLog, report: Report | None) -> str:
    lines = []
    if report is not None and report is not plog.panic:
        lines.append(report.headline)
        oops = next((t for _, t in report.lines if t.startswith("Oops:") or
                     t.startswith("invalid opcode")), None)
        if oops:
            lines.append(oops)
    if plog.panic is not None:
        lines.append(plog.panic.headline)
    return " / ".join(lines)


