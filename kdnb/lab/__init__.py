"""kdnb lab: real crash dumps of real Debian kernels in QEMU, each with its ground truth.

    >>> import kdnb.lab
    >>> kdnb.lab.list_scenarios()
    >>> path = kdnb.lab.make("oops", kernel="6.1", formats=("kdump-lzo",), memory="256M")

Modules, one job each: apt (the lab's private apt configuration per Debian suite), kernels
(series 5.10/6.1/6.12/7.2: suite, dump level, compiler), packages (apt-get download + dpkg -x
cache), libs (DT_NEEDED closure), toolchain (host gcc-12 or sid's gcc in a chroot), build
(crash module + workload helper), initramfs (newc cpio), guest (/init scripts, images),
scenarios, formats, qemu (accelerator, command line, console, timeouts), qmp (QEMU's own
dumps), disk (mke2fs/debugfs), groundtruth (ground-truth.json), run (`make`), cli (`kdnb lab ...`).
"""

from __future__ import annotations

from .packages import LabError
from .run import make
from .scenarios import SCENARIOS, list_scenarios

__all__ = ["SCENARIOS", "LabError", "list_scenarios", "make"]
