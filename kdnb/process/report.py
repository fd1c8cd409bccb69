"""The summary card of a process core in Jupyter (`Core._repr_html_`)."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from .core import Core


def core_html(core: "Core") -> str:
    """Process, signal, the faulting thread's top frames and the mapped images, as HTML."""
    esc = html.escape
    p = core.process
    sig = core.signal
    bt = core.backtrace().head(8)
    frames = "".join(
        f"<tr><td>#{r.level}</td><td><code>{r.pc:#x}</code></td><td>{esc(str(r.function or '??'))}"
        f"</td><td>{esc(str(r.image or ''))}</td><td>{esc(r.how)}</td></tr>" for r in bt.itertuples())
    where = f"<br>fault address: {esc(core.explain(sig.addr))}" if sig.addr is not None else ""
    images = ", ".join(f"{esc(str(r.path))} ({esc(r.status)})" for r in core.images.itertuples())
    return (f"<div class='kdnb-core'><b>process core</b> <code>{esc(core.path)}</code><br>"
            f"{esc(str(p['comm']))} pid {p['pid']} uid {p['uid']}: <code>{esc(str(p['args']))}</code>"
            f"<br>{len(core.threads)} thread(s); signal: {esc(str(sig))}{where}"
            f"<table><thead><tr><th>frame</th><th>pc</th><th>function</th><th>image</th>"
            f"<th>found by</th></tr></thead><tbody>{frames}</tbody></table>"
            f"<small>images: {images}</small></div>")
