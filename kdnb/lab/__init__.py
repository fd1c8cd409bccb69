"""kdnb lab: real crash dumps of real Debian kernels in QEMU, each with its ground truth.

    >>> import kdnb.lab
    >>> kdnb.lab.list_scenarios()
    >>> path = kdnb.lab.make("oops", kernel="6.1", formats=("kdump-lzo",), memory="256M")

Modules, one job each: packages (apt-get download + dpkg -x cache), libs (DT_NEEDED closure),
build (crash module + workload helper), initramfs (newc cpio), guest (/init scripts, images),
scenarios, formats, qemu (accelerator, command line, console, timeouts), disk (mke2fs/debugfs),
vmcoreinfo + groundtruth (ground-truth.json), run (`make`), cli (`kdnb lab ...`).
"""

from __future__ import annotations

from .packages import LabError
from .run import make
from .scenarios import SCENARIOS, list_scenarios

__all__ = ["make", "list_scenarios", "SCENARIOS", "LabError"]
