"""kdnb's Jupyter front end: the summary card, the tabbed viewer, the report.

Heavy imports (ipywidgets, itables, matplotlib, papermill) happen only when a function needs them.
"""

from __future__ import annotations

from typing import Any, Callable

from ._safe import attempt, note_html, note_text
from .paths import resolve_dump, sample_paths
from .summary import dump_html, dump_text

__all__ = ["dump_html", "dump_text", "show", "make_report", "piece", "table", "result",
           "resolve_dump", "sample_paths", "init"]


def show(dump: Any):
    """The tabbed viewer (Summary, Tasks, Slab, Log, Backtraces, Validation, Root cause)."""
    from .viewer import show as _show

    return _show(dump)


def make_report(path=None, out="report.html", include_memory: bool = False, timeout: int = 600):
    """Write the offline HTML report; returns a `Report` (path, timings)."""
    from .report import make_report as _make

    return _make(path, out, include_memory=include_memory, timeout=timeout)


def piece(what: str, fn: Callable[[], Any]) -> Any:
    """`fn()`, or None after displaying a one-line 'not available' note (for notebooks)."""
    value, why = attempt(fn)
    if why is not None:
        _display_html(note_html(what, why), note_text(what, why))
    return value


def table(df: Any, highlight: Any = None, page_length: int = 15) -> None:
    """Display a DataFrame as a searchable, paged table (hex addresses, first rows without JS)."""
    from .tables import TABLE_CSS, table_html

    if df is None:
        return
    _display_html(TABLE_CSS + table_html(df, highlight=highlight, page_length=page_length),
                  f"{len(df)} rows")


def result(value: Any, what: str = "result") -> None:
    """Display a DataFrame, validation, readiness or root cause through kdnb's display layer
    (hex addresses, key: value evidence, failures first) instead of its default HTML."""
    from .render import html_of, plain_of
    from .tables import TABLE_CSS

    if value is None:
        return
    _display_html(TABLE_CSS + html_of(what, value), plain_of(value))


def init(offline: bool = True) -> None:
    """Set a notebook up for kdnb tables (itables with its JavaScript embedded when offline)."""
    import itables

    itables.init_notebook_mode(all_interactive=False, connected=not offline)


def _display_html(markup: str, plain: str) -> None:
    try:
        from IPython import get_ipython
        from IPython.display import HTML, display
    except ImportError:  # pragma: no cover
        print(plain)
        return
    if get_ipython() is None:
        print(plain)
    else:
        display(HTML(markup))
