"""The lab's own apt configuration: one private sources list, package lists and cache per
Debian suite, under ``<cache>/apt/<suite>``.

The machine's /etc/apt sources are never changed: every apt call passes ``-o`` options
(``Dir::Etc::SourceList``, ``Dir::Etc::SourceParts``, ``Dir::State::Lists``, ``Dir::Cache``,
``Dir::State::status`` ...) that point into that folder. The mirror is the one the machine
already uses (read from /etc/apt/sources.list*), or ``KDNB_LAB_MIRROR``.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

#: Debian suites the lab downloads from: name -> (archive, apt suites).
#: archive "debian" is the main mirror, "debian-security" the security one.
SUITES: dict[str, tuple[tuple[str, str], ...]] = {
    "bullseye": (("debian", "bullseye"),),
    "bookworm": (("debian", "bookworm"), ("debian", "bookworm-updates"),
                 ("debian-security", "bookworm-security")),
    "sid": (("debian", "sid"),),
}

KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
#: Package lists older than this are fetched again before a download.
LISTS_MAX_AGE = 7 * 24 * 3600


class AptError(Exception):
    """An apt command failed (the lab turns this into a LabError)."""


def host_mirror(etc: Path = Path("/etc/apt")) -> str:
    """The Debian mirror URL the machine's own apt sources use (``KDNB_LAB_MIRROR`` wins)."""
    if os.environ.get("KDNB_LAB_MIRROR"):
        return os.environ["KDNB_LAB_MIRROR"].rstrip("/")
    texts = []
    for p in [etc / "sources.list", *sorted((etc / "sources.list.d").glob("*"))]:
        if p.is_file() and p.suffix in (".list", ".sources"):
            texts.append(p.read_text(errors="replace"))
    for text in texts:
        for m in re.finditer(r"(?m)^\s*(?:deb\s+(?:\[[^\]]*\]\s+)?|URIs:\s*)(\S+)", text):
            uri = m.group(1).rstrip("/")
            if uri.endswith("/debian"):
                return uri
    return DEFAULT_MIRROR


def sources_list(suite: str, mirror: str) -> str:
    """The one-line-style sources.list of ``suite`` on ``mirror`` (a .../debian URL)."""
    if suite not in SUITES:
        raise AptError(f"unknown Debian suite {suite!r} (known: {', '.join(SUITES)})")
    base = mirror.rsplit("/", 1)[0]
    lines = []
    for archive, dist in SUITES[suite]:
        url = mirror if archive == "debian" else f"{base}/{archive}"
        lines.append(f"deb [signed-by={KEYRING}] {url} {dist} main")
    return "\n".join(lines) + "\n"


@dataclass
class AptConfig:
    """A private apt setup for one suite, rooted at ``root`` (created on first use)."""

    suite: str
    root: Path
    mirror: str = ""

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.mirror = self.mirror or host_mirror()

    def options(self) -> list[str]:
        """The ``-o`` options that make apt-get/apt-cache use only this configuration."""
        r = self.root
        opts = {
            "Dir::Etc::SourceList": r / "sources.list",
            "Dir::Etc::SourceParts": r / "sources.list.d",
            "Dir::Etc::Preferences": r / "preferences",
            "Dir::Etc::PreferencesParts": r / "preferences.d",
            "Dir::State::Lists": r / "lists",
            "Dir::State::status": r / "status",
            "Dir::State::extended_states": r / "extended_states",
            "Dir::Cache": r / "cache",
            "APT::Architectures": "amd64",
            "Acquire::Languages": "none",
            "Debug::NoLocking": "1",
        }
        return [x for k, v in opts.items() for x in ("-o", f"{k}={v}")]

    def prepare(self) -> None:
        """Write the sources list and the empty folders/status file apt expects."""
        for d in ("sources.list.d", "preferences.d", "lists/partial", "cache/archives/partial"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        (self.root / "status").touch()
        want = sources_list(self.suite, self.mirror)
        src = self.root / "sources.list"
        if not src.exists() or src.read_text() != want:
            src.write_text(want)
            (self.root / "lists" / ".kdnb-updated").unlink(missing_ok=True)

    def stale(self) -> bool:
        """Whether the package lists are missing or older than LISTS_MAX_AGE."""
        stamp = self.root / "lists" / ".kdnb-updated"
        return not stamp.exists() or time.time() - stamp.stat().st_mtime > LISTS_MAX_AGE

    def update(self, force: bool = False) -> None:
        """``apt-get update`` into the private lists (when stale or ``force``)."""
        self.prepare()
        if force or self.stale():
            self.run("apt-get", "update")
            (self.root / "lists" / ".kdnb-updated").touch()

    def run(self, tool: str, *args: str, cwd: Path | None = None) -> str:
        """Run apt-get/apt-cache with this configuration; AptError with stderr's tail on failure."""
        cmd = [tool, *self.options(), *args]
        try:
            p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
        except FileNotFoundError:
            raise AptError(f"{tool} is not installed") from None
        if p.returncode != 0:
            tail = "\n".join((p.stderr or p.stdout).strip().splitlines()[-10:])
            raise AptError(f"{tool} {' '.join(args)} ({self.suite}) failed (rc={p.returncode}):\n{tail}")
        return p.stdout

    def download(self, packages: list[str], dest: Path) -> None:
        """``apt-get download`` the packages into ``dest``."""
        self.update()
        self.run("apt-get", "download", *packages, cwd=dest)

    def names(self, regex: str) -> set[str]:
        """Package names matching ``regex`` (apt-cache search --names-only)."""
        self.update()
        out = self.run("apt-cache", "search", "--names-only", regex)
        return {line.split(" - ")[0].strip() for line in out.splitlines() if line.strip()}

    def depends(self, package: str) -> list[str]:
        """Real packages ``package`` depends on (one level; of alternatives, the first)."""
        self.update()
        out = self.run("apt-cache", "depends", "--no-recommends", "--no-suggests", "--no-conflicts",
                       "--no-breaks", "--no-replaces", "--no-enhances", package)
        deps: list[str] = []
        for line in out.splitlines():
            m = re.match(r"\s+\|?(?:Pre)?Depends:\s+(\S+)", line)
            if m and not m.group(1).startswith("<") and m.group(1) not in deps:
                deps.append(m.group(1))
        return deps

    def closure(self, packages: list[str]) -> list[str]:
        """Every package an install of ``packages`` would bring onto an empty system, as apt
        resolves it (``apt-get install -s --no-install-recommends``: alternatives decided)."""
        self.update()
        out = self.run("apt-get", "install", "-s", "--no-install-recommends", *packages)
        return parse_simulation(out)


def parse_simulation(text: str) -> list[str]:
    """Package names from the ``Inst name (version ...)`` lines of an apt-get -s run."""
    return [m.group(1) for m in re.finditer(r"(?m)^Inst (\S+) ", text)]
