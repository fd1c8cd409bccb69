"""A table of checks with a verdict: shared by capture validation and kdump readiness.

A check is one row: an id, an area, a status (pass/warn/fail/skip), a sentence a person
understands (`detail`), what analysis it limits (`consequence`) and the numbers behind it
(`evidence`, a small dict). A table renders as a DataFrame, plain text, HTML and JSON.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

STATUSES = ["pass", "warn", "fail", "skip"]
_MARK = {"pass": "ok", "warn": "WARN", "fail": "FAIL", "skip": "skip"}
_COLOURS = {"pass": "#2e7d32", "warn": "#b26a00", "fail": "#c62828", "skip": "#757575"}


@dataclass
class Check:
    """One check's result. `blocking` marks a failure that makes the whole subject unusable."""

    check: str
    area: str
    status: str
    detail: str
    consequence: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)
    blocking: bool = False

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"check {self.check}: unknown status {self.status!r}")


def _jsonable(value: Any) -> Any:
    """Evidence values as JSON-friendly Python (numpy scalars, sets, datetimes...)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "item"):  # numpy scalar
        try:
            return value.item()
        except (ValueError, TypeError):
            pass
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def format_evidence(evidence: dict[str, Any]) -> str:
    """`key=value, ...` with integers that look like addresses in hex."""
    parts = []
    for key, value in evidence.items():
        if isinstance(value, int) and not isinstance(value, bool) and value > 0xFFFFFFFF:
            value = f"{value:#x}"
        elif isinstance(value, float):
            value = f"{value:.3g}"
        elif isinstance(value, (list, tuple)):
            shown = ", ".join(str(v) for v in value[:6])
            value = f"[{shown}{', ...' if len(value) > 6 else ''}]"
        parts.append(f"{key}={value}")
    return ", ".join(parts)


class CheckTable:
    """Checks plus a verdict. Subclasses set `AREAS`, `VERDICTS`, `EXIT_CODES` and `_decide()`."""

    AREAS: list[str] = []
    VERDICTS: list[str] = []
    EXIT_CODES: dict[str, int] = {}
    title = "checks"

    def __init__(self, checks: Iterable[Check], subject: str = "", verdict: str | None = None,
                 summary: str = "") -> None:
        self.items: list[Check] = list(checks)
        self.subject = subject
        self.verdict: str = verdict if verdict is not None else self._decide()
        self.summary = summary or self._summarise()

    # -- decisions -------------------------------------------------------------------
    def _decide(self) -> str:
        raise NotImplementedError

    def _summarise(self) -> str:
        fails = [c for c in self.items if c.status == "fail"]
        warns = [c for c in self.items if c.status == "warn"]
        head = fails or warns
        if not head:
            return f"all {len(self.items)} checks passed or were skipped"
        first = head[0]
        more = len(fails) + len(warns) - 1
        tail = f" (+{more} more)" if more > 0 else ""
        return f"{first.check}: {first.detail}{tail}"

    @property
    def exit_code(self) -> int:
        """The command's exit status for this verdict."""
        return self.EXIT_CODES[self.verdict]

    # -- access ------------------------------------------------------------------------
    def __getitem__(self, check_id: str) -> Check:
        for c in self.items:
            if c.check == check_id:
                return c
        raise KeyError(check_id)

    def __contains__(self, check_id: str) -> bool:
        return any(c.check == check_id for c in self.items)

    def status(self, check_id: str) -> str:
        """Status of one check by id."""
        return self[check_id].status

    def failing(self) -> list[str]:
        """Ids of the failing checks."""
        return [c.check for c in self.items if c.status == "fail"]

    def warning(self) -> list[str]:
        """Ids of the checks that warn."""
        return [c.check for c in self.items if c.status == "warn"]

    @property
    def checks(self) -> pd.DataFrame:
        """check, area (category), status (category), detail, consequence, evidence (dict)."""
        import pandas as pd  # only here: a table's text, HTML and JSON need no pandas

        df = pd.DataFrame({
            "check": pd.array([c.check for c in self.items], dtype="string"),
            "area": pd.Categorical([c.area for c in self.items], categories=self.AREAS),
            "status": pd.Categorical([c.status for c in self.items], categories=STATUSES),
            "detail": pd.array([c.detail for c in self.items], dtype="string"),
            "consequence": pd.array([c.consequence for c in self.items], dtype="string"),
            "evidence": [dict(c.evidence) for c in self.items],
        })
        df.attrs["kdnb"] = {"subject": self.subject, "verdict": self.verdict}
        return df

    # -- rendering ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: subject, verdict, summary and the checks."""
        return {
            "subject": self.subject,
            "verdict": self.verdict,
            "exit_code": self.exit_code,
            "summary": self.summary,
            "checks": [{"check": c.check, "area": c.area, "status": c.status, "detail": c.detail,
                        "consequence": c.consequence, "evidence": _jsonable(c.evidence)}
                       for c in self.items],
        }

    def to_json(self, indent: int | None = 2) -> str:
        """`to_dict()` as a JSON string."""
        return json.dumps(self.to_dict(), indent=indent)

    def table(self, width: int = 100) -> str:
        """The checks as aligned plain text, consequences indented under their row."""
        idw = max([len(c.check) for c in self.items] + [5])
        lines = []
        for c in self.items:
            lines.append(f"{_MARK[c.status]:<4}  {c.check:<{idw}}  {c.detail}")
            if c.consequence and c.status in ("warn", "fail"):
                lines.append(f"{'':<4}  {'':<{idw}}  -> {c.consequence}")
        return "\n".join(lines)

    def __str__(self) -> str:
        counts = {s: sum(c.status == s for c in self.items) for s in STATUSES}
        tally = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
        head = f"{self.title} of {self.subject}: {self.verdict.upper()} ({tally})"
        return f"{head}\n{self.summary}\n\n{self.table()}"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.verdict} {self.subject!r} {len(self.items)} checks>"

    def _repr_html_(self) -> str:
        esc = html.escape
        colour = {"usable": "#2e7d32", "ready": "#2e7d32", "degraded": "#b26a00",
                  "not ready": "#c62828", "unusable": "#c62828", "not a dump": "#c62828",
                  "will dump": "#2e7d32", "at risk": "#b26a00", "no core": "#c62828"}
        rows = []
        for c in self.items:
            ev = esc(format_evidence(c.evidence))
            rows.append(
                f"<tr><td style='color:{_COLOURS[c.status]};font-weight:bold'>{esc(c.status)}</td>"
                f"<td><code>{esc(c.check)}</code></td><td>{esc(c.area)}</td>"
                f"<td style='text-align:left'>{esc(c.detail)}</td>"
                f"<td style='text-align:left'>{esc(c.consequence)}</td>"
                f"<td style='text-align:left;font-size:smaller'>{ev}</td></tr>")
        return (f"<div><p><b>{esc(self.title)} of <code>{esc(self.subject)}</code>: "
                f"<span style='color:{colour.get(self.verdict, '#000')}'>{esc(self.verdict)}</span>"
                f"</b><br>{esc(self.summary)}</p>"
                "<table><thead><tr><th>status</th><th>check</th><th>area</th><th>detail</th>"
                "<th>consequence</th><th>evidence</th></tr></thead><tbody>"
                + "".join(rows) + "</tbody></table></div>")


def run_check(items: list[Check], check_id: str, area: str, fn: Callable[[], Check | list[Check] | None],
              errors: tuple[type[BaseException], ...] = (Exception,)) -> None:
    """Run one check function; an unexpected exception becomes a `skip` row, never a crash."""
    try:
        out = fn()
    except errors as exc:  # a check must never stop the others
        items.append(Check(check_id, area, "skip",
                           f"check could not run: {type(exc).__name__}: {exc}"))
        return
    if out is None:
        return
    if isinstance(out, Check):
        items.append(out)
    else:
        items.extend(out)
