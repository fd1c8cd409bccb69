"""kdnb lab: real crash dumps of real Debian kernels in QEMU, each with its ground truth.

    >>> import kdnb.lab
    >>> kdnb.lab.list_scenarios()
    >>> path = kdnb.lab.make("oops", kernel="6.1", formats=("kdump-lzo",))
"""

from __future__ import annotations

from .packages import LabError
from .scenarios import SCENARIOS, list_scenarios


def make(*args, **kwargs):  # noqa: D401 - thin lazy wrapper
    """See `kdnb.lab.run.make`."""
    from .run import make as _make
    return _make(*args, **kwargs)


make.__doc__ = __import__("kdnb.lab.run", fromlist=["make"]).make.__doc__

__all__ = ["make", "list_scenarios", "SCENARIOS", "LabError"]
