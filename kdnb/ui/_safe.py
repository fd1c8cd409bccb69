"""Degrade gracefully: every piece of the UI asks for a view through `attempt`, so a view that is
not written yet, or that cannot be read from this dump, becomes a short note instead of a traceback."""

from __future__ import annotations

import html
from typing import Any, Callable, Tuple, TypeVar

T = TypeVar("T")

# What a missing or failing view raises. Anything else is a bug the user should see.
EXPECTED = (ImportError, AttributeError, NotImplementedError, LookupError, ValueError,
            TypeError, OSError)


def _expected() -> tuple[type[BaseException], ...]:
    try:
        from ..errors import KdnbError
    except ImportError:  # pragma: no cover
        return EXPECTED
    return EXPECTED + (KdnbError,)


def reason(exc: BaseException) -> str:
    """One line that says why a piece is not available."""
    if isinstance(exc, ModuleNotFoundError):
        return f"not implemented yet ({exc.name})"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def attempt(fn: Callable[[], T]) -> Tuple[T | None, str | None]:
    """(value, None) when `fn()` works, (None, reason) when it raises an expected error."""
    try:
        return fn(), None
    except _expected() as exc:  # noqa: BLE001 - turned into a note on purpose
        return None, reason(exc)


def get(obj: Any, name: str) -> Tuple[Any, str | None]:
    """`attempt(lambda: getattr(obj, name))`."""
    return attempt(lambda: getattr(obj, name))


def note_html(what: str, why: str) -> str:
    """The HTML note shown where a piece is missing."""
    return (f'<div class="kdnb-na"><b>{html.escape(what)}</b>: not available: '
            f'{html.escape(why)}</div>')


def note_text(what: str, why: str) -> str:
    return f"{what}: not available: {why}"
