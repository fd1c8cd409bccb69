"""The kernel series the lab can boot, where Debian keeps each, and how to build and capture it."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from .apt import AptConfig


@dataclass(frozen=True)
class Series:
    """One kernel series of the cloud-amd64 flavour.

    ``suite`` is the Debian suite carrying the kernel (see apt.SUITES); ``release_rx`` matches
    its release strings; ``preferred`` is taken for the bare series name when the suite has it
    (else the newest release with headers). ``tools_suite`` supplies makedumpfile (and its
    libraries) for the capture kernel; ``compiler`` names how the crash module is built:
    ``host`` (gcc-12 as the headers ask), ``host-cc`` (gcc-12 passed as CC=gcc, headers want
    another gcc) or ``sid-gcc`` (sid's gcc in a throw-away sid root).
    """

    name: str
    suite: str
    release_rx: str
    dump_level: int
    min_memory_mib: int
    preferred: str | None = None
    tools_suite: str = "bookworm"
    compiler: str = "host"

    def matches(self, release: str) -> bool:
        """Whether ``release`` belongs to this series."""
        return re.fullmatch(self.release_rx, release) is not None


SERIES: dict[str, Series] = {s.name: s for s in [
    # bullseye: -45/-46 exist but their -dbg packages are missing on the mirror; -32 has one.
    Series("5.10", "bullseye", r"5\.10\.0-\d+-cloud-amd64", 31, 256,
           preferred="5.10.0-32-cloud-amd64", compiler="host-cc"),
    Series("6.1", "bookworm", r"6\.1\.0-\d+-cloud-amd64", 31, 256),
    # Debian 12's makedumpfile 1.7.2 drops in-use slab pages of 6.12 at -d 31 and -d 15.
    Series("6.12", "bookworm", r"6\.12\.\d+\+deb12-cloud-amd64", 17, 384),
    # sid's makedumpfile 1.7.8 drops in-use slab pages of 7.2 with the user-data bit (8).
    Series("7.2", "sid", r"7\.2\.\d+\+deb\d+-cloud-amd64", 23, 320,
           tools_suite="sid", compiler="sid-gcc"),
]}


def series_of(release: str) -> Series:
    """The series a full release string belongs to (ValueError when none)."""
    for s in SERIES.values():
        if s.matches(release):
            return s
    raise ValueError(f"kernel release {release!r} is not one of the series "
                     f"{', '.join(SERIES)} (cloud-amd64 flavour)")


def releases_in(names: set[str], series: Series) -> list[str]:
    """Releases of ``series`` among package names that have both an image and a headers
    package, oldest first."""
    rels = {n.removeprefix("linux-image-") for n in names if n.startswith("linux-image-")}
    ok = [r for r in rels if series.matches(r) and f"linux-headers-{r}" in names]
    return sorted(ok, key=version_key)


def version_key(release: str) -> tuple[int, ...]:
    """Sort key for a kernel release such as 6.1.0-56-cloud-amd64 or 6.12.117+deb12-cloud-amd64."""
    return tuple(int(x) for x in re.findall(r"\d+", release))


def pick_release(series: Series, available: list[str]) -> str | None:
    """The preferred release when available, else the newest (None when there is none)."""
    if series.preferred and series.preferred in available:
        return series.preferred
    return available[-1] if available else None


def resolve(kernel: str, apt_for: Callable[[str], AptConfig]) -> tuple[str, Series]:
    """Turn a series name (``5.10``, ``6.1``, ``6.12``, ``7.2``) or a full release into
    (release, series); ``apt_for(suite)`` gives the AptConfig to look the series up in."""
    if kernel in SERIES:
        s = SERIES[kernel]
        major_minor = re.escape(s.name)
        names = apt_for(s.suite).names(rf"^linux-(image|headers)-{major_minor}\.")
        rel = pick_release(s, releases_in(names, s))
        if rel is None:
            raise ValueError(f"the {s.suite} package lists have no linux-image for series {s.name}")
        return rel, s
    return kernel, series_of(kernel)
