"""The form every "why did it die?" answer takes, for a kernel dump (kdnb.analysis) and for a
process core (kdnb.process): category, message, culprit, evidence, chain, confidence; `str()`
for text, `_repr_html_` for notebooks, `to_dict()` for JSON."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pandas as pd


@dataclass
class Answer:
    """A root cause. Subclasses set EXPLANATIONS (category -> one sentence for a newcomer) and
    NO_MESSAGE (what `str()` shows for an empty message)."""

    EXPLANATIONS: ClassVar[dict[str, str]] = {}
    NO_MESSAGE: ClassVar[str] = ""

    category: str
    message: str
    culprit: Any
    evidence: pd.DataFrame
    chain: list[dict] = field(default_factory=list)
    confidence: float = 0.5
    alternatives: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def explanation(self) -> str:
        """One sentence on the category for a person new to such crashes."""
        return self.EXPLANATIONS[self.category]

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON."""
        ev = self.evidence.astype(object).where(self.evidence.notna(), None)
        if "time" in self.evidence.columns:
            ev = ev.assign(time=self.evidence["time"].astype(str))
        return {
            "category": self.category, "explanation": self.explanation, "message": self.message,
            "culprit": self.culprit.__dict__, "confidence": self.confidence,
            "chain": self.chain, "alternatives": self.alternatives, "notes": self.notes,
            "evidence": ev.to_dict("records"),
        }

    def __str__(self) -> str:
        lines = [f"Root cause: {self.category} (confidence {self.confidence:.0%})",
                 f"  {self.explanation}",
                 f"Message:  {self.message or self.NO_MESSAGE}",
                 f"Culprit:  {self.culprit}"]
        if self.chain:
            lines.append("Chain:")
            lines += [f"  {i + 1}. [{step['role']}] {step['what']}" for i, step in
                      enumerate(self.chain)]
        if self.alternatives:
            lines.append("Alternatives:")
            lines += [f"  - {cat}: {why}" for cat, why in self.alternatives]
        if len(self.evidence):
            lines.append("Evidence:")
            lines += [f"  - {row.text}  ({row.why})" for row in self.evidence.itertuples()]
        lines += [f"Note: {n}" for n in self.notes]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        esc = html.escape
        chain = "".join(f"<li><b>{esc(s['role'])}</b>: {esc(s['what'])}</li>" for s in self.chain)
        alts = "".join(f"<li>{esc(c)}: {esc(w)}</li>" for c, w in self.alternatives)
        ev = "<ul>" + "".join(
            f"<li><b>{esc(str(r.kind))}</b>: {esc(str(r.text))} <small>({esc(str(r.why))})</small></li>"
            for r in self.evidence.itertuples()) + "</ul>" if len(self.evidence) else "<p>none</p>"
        return (f"<div class='kdnb-rootcause'><h3>Root cause: {esc(self.category)} "
                f"<small>({self.confidence:.0%})</small></h3><p>{esc(self.explanation)}</p>"
                f"<p><b>Message:</b> <code>{esc(self.message)}</code></p>"
                f"<p><b>Culprit:</b> {esc(str(self.culprit))}</p>"
                + (f"<p><b>Chain</b></p><ol>{chain}</ol>" if chain else "")
                + (f"<p><b>Alternatives</b></p><ul>{alts}</ul>" if alts else "")
                + f"<p><b>Evidence</b></p>{ev}</div>")
