"""What systemd-coredump records about a crash beside the core: its journal entry (exported with
`journalctl -o json` or `-o export`, e.g. `journalctl -o json COREDUMP_PID=1234 > meta.json`)
and the facts encoded in the name it stores the core under
(`core.COMM.UID.BOOT_ID.PID.USEC[.zst|.xz|.lz4]`).

The entry gives what a core lacks: the whole command line, the working directory, the unit and
cgroup, the rlimit the kernel passed, /proc/PID/maps, limits and open files (fd, path, position,
flags) at the crash, and systemd's own stack trace of every thread (the pcs its unwinder found).
Every field is bounded; a file that holds no entry for the core raises a KdnbError naming it.
"""

from __future__ import annotations

import json
import os
import re
import struct
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Mapping

import pandas as pd

from ..errors import FormatError

JOURNAL_MAX = 64 << 20  # an exported coredump entry is ~10-100 KiB; a whole journal is not expected
FIELD_MAX = 16 << 20
ENTRIES_MAX = 100_000
STORED_NAME = re.compile(r"^core\.(?P<comm>.+)\.(?P<uid>\d+)\.(?P<boot>[0-9a-f]{32})\.(?P<pid>\d+)"
                         r"\.(?P<usec>\d+)(?:\.(?:zst|xz|lz4|gz))?$")
MAPS_LINE = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S{4}) ([0-9a-f]+) (\S+) (\d+)\s*(.*)$")
FRAME_LINE = re.compile(r"^#(\d+)\s+0x([0-9a-f]+) (\S+)")
THREAD_LINE = re.compile(r"^Stack trace of thread (\d+):")
FACTS = {"pid": "COREDUMP_PID", "uid": "COREDUMP_UID", "gid": "COREDUMP_GID", "signal": "COREDUMP_SIGNAL",
         "signal_name": "COREDUMP_SIGNAL_NAME", "comm": "COREDUMP_COMM", "exe": "COREDUMP_EXE",
         "cmdline": "COREDUMP_CMDLINE", "cwd": "COREDUMP_CWD", "root": "COREDUMP_ROOT",
         "unit": "COREDUMP_UNIT", "user_unit": "COREDUMP_USER_UNIT", "slice": "COREDUMP_SLICE",
         "cgroup": "COREDUMP_CGROUP", "hostname": "COREDUMP_HOSTNAME", "boot_id": "_BOOT_ID",
         "rlimit": "COREDUMP_RLIMIT", "dumpable": "COREDUMP_DUMPABLE", "filename": "COREDUMP_FILENAME",
         "package": "COREDUMP_PACKAGE_NAME", "package_version": "COREDUMP_PACKAGE_VERSION"}


def stored_name_facts(path: str) -> dict[str, object] | None:
    """comm, uid, boot_id, pid and time from a systemd-coredump storage name, or None."""
    m = STORED_NAME.match(os.path.basename(path))
    if m is None:
        return None
    return {"comm": m["comm"], "uid": int(m["uid"]), "boot_id": m["boot"], "pid": int(m["pid"]),
            "time": datetime.fromtimestamp(int(m["usec"]) / 1e6, tz=timezone.utc)}


def _text(value: object) -> str | bytes:
    """A JSON field: a string, bytes (an array of byte values), or the first of several values."""
    if isinstance(value, list) and value and isinstance(value[0], (list, str)):
        value = value[0]
    if isinstance(value, list):
        raw = bytes(v & 0xFF for v in value if isinstance(v, int))
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw
    return value if isinstance(value, str) else str(value)


def _json_entries(data: bytes, path: str) -> list[dict[str, str | bytes]]:
    out = []
    for n, line in enumerate(data.splitlines()):
        if not line.strip():
            continue
        if len(out) >= ENTRIES_MAX:
            raise FormatError(f"{path}: more than {ENTRIES_MAX} journal entries")
        try:
            raw = json.loads(line)
        except ValueError as exc:
            raise FormatError(f"{path}: line {n + 1} is not journalctl -o json output ({exc})") from None
        if not isinstance(raw, dict):
            raise FormatError(f"{path}: line {n + 1} is not a journal entry (a JSON object)")
        out.append({str(k): _text(v) for k, v in raw.items()})
    return out


def _export_entries(data: bytes, path: str) -> list[dict[str, str | bytes]]:
    """journalctl -o export: KEY=value lines, or KEY, a 64-bit length and the bytes; a blank
    line ends an entry."""
    out: list[dict[str, str | bytes]] = []
    entry: dict[str, str | bytes] = {}
    pos = 0
    while pos < len(data):
        nl = data.find(b"\n", pos)
        nl = len(data) if nl < 0 else nl
        line = data[pos:nl]
        if not line:
            if entry:
                out.append(entry)
                entry = {}
            pos = nl + 1
            if len(out) > ENTRIES_MAX:
                raise FormatError(f"{path}: more than {ENTRIES_MAX} journal entries")
            continue
        if b"=" in line:
            key, _, value = line.partition(b"=")
            entry[key.decode("ascii", "replace")] = value.decode("utf-8", "replace")
            pos = nl + 1
            continue
        if nl + 9 > len(data):
            raise FormatError(f"{path}: binary field {line[:40]!r} at byte {pos} is cut short")
        (size,) = struct.unpack_from("<Q", data, nl + 1)
        if size > FIELD_MAX or nl + 9 + size > len(data):
            raise FormatError(f"{path}: binary field {line[:40]!r} at byte {pos} claims {size} bytes")
        value = data[nl + 9:nl + 9 + size]
        try:
            entry[line.decode("ascii", "replace")] = value.decode("utf-8")
        except UnicodeDecodeError:
            entry[line.decode("ascii", "replace")] = value
        pos = nl + 9 + size + 1
    if entry:
        out.append(entry)
    return out


@dataclass
class Journal:
    """One systemd-coredump journal entry."""

    fields: Mapping[str, str | bytes]
    source: str

    def get(self, key: str) -> str | None:
        """A text field, or None."""
        v = self.fields.get(key)
        return v if isinstance(v, str) else None

    @property
    def facts(self) -> dict[str, object]:
        """pid, uid, gid, signal, comm, exe, cmdline, cwd, unit, slice, cgroup, hostname,
        boot_id, rlimit, dumpable, filename, package, time (None where absent)."""
        out: dict[str, object] = {k: self.get(f) for k, f in FACTS.items()}
        for k in ("pid", "uid", "gid", "signal", "dumpable"):
            out[k] = int(out[k]) if isinstance(out[k], str) and out[k].isdigit() else None
        usec = self.get("COREDUMP_TIMESTAMP")
        out["time"] = datetime.fromtimestamp(int(usec) / 1e6, tz=timezone.utc) if usec and usec.isdigit() else None
        return out

    @property
    def maps(self) -> pd.DataFrame:
        """/proc/PID/maps at the crash: start, end, perms, offset, device, inode, path."""
        rows = []
        for line in (self.get("COREDUMP_PROC_MAPS") or "").splitlines():
            m = MAPS_LINE.match(line)
            if m:
                rows.append([int(m[1], 16), int(m[2], 16), m[3], int(m[4], 16), m[5], int(m[6]), m[7] or None])
        df = pd.DataFrame(rows, columns=["start", "end", "perms", "offset", "device", "inode", "path"])
        for c in ("start", "end", "offset", "inode"):
            df[c] = df[c].astype("UInt64")
        df["path"] = df["path"].astype("string")
        return df

    @property
    def open_files(self) -> pd.DataFrame:
        """The open files at the crash: fd, path, pos, flags (octal as the kernel prints them), mnt_id, ino."""
        rows = []
        for block in (self.get("COREDUMP_OPEN_FDS") or "").split("\n\n"):
            lines = block.strip().splitlines()
            if not lines or ":" not in lines[0]:
                continue
            fd, _, target = lines[0].partition(":")
            info = dict(ln.split(":\t", 1) for ln in lines[1:] if ":\t" in ln)
            if not fd.isdigit():
                continue
            rows.append([int(fd), target, _int(info.get("pos")), _int(info.get("flags"), 8),
                         _int(info.get("mnt_id")), _int(info.get("ino"))])
        df = pd.DataFrame(rows, columns=["fd", "path", "pos", "flags", "mnt_id", "ino"])
        for c in ("fd", "pos", "flags", "mnt_id", "ino"):
            df[c] = df[c].astype("Int64")
        return df

    @property
    def limits(self) -> pd.DataFrame:
        """/proc/PID/limits at the crash: limit, soft, hard, units."""
        rows = []
        for line in (self.get("COREDUMP_PROC_LIMITS") or "").splitlines()[1:]:
            m = re.match(r"^(.+?)\s{2,}(\S+)\s+(\S+)\s*(\S*)\s*$", line)
            if m:
                rows.append([m[1], m[2], m[3], m[4] or None])
        return pd.DataFrame(rows, columns=["limit", "soft", "hard", "units"])

    @property
    def stack_trace(self) -> dict[int, list[int]]:
        """systemd-coredump's own stack trace (from MESSAGE): tid -> the pcs of its frames."""
        out: dict[int, list[int]] = {}
        tid = None
        for line in (self.get("MESSAGE") or "").splitlines():
            line = line.strip()
            m = THREAD_LINE.match(line)
            if m:
                tid = int(m[1])
                out[tid] = []
            elif (f := FRAME_LINE.match(line)) and tid is not None:
                out[tid].append(int(f[2], 16))
        return out


def _int(text: str | None, base: int = 10) -> int | None:
    try:
        return int(text.strip(), base) if text is not None else None
    except ValueError:
        return None


def load_journal(source: str | os.PathLike, core_path: str) -> Journal:
    """The systemd-coredump entry for `core_path` in an exported journal file: the entry whose
    COREDUMP_FILENAME is the core's name, else the only coredump entry, else the one whose
    COREDUMP_PID the core's storage name says; FormatError otherwise."""
    path = os.fspath(source)
    try:
        size = os.path.getsize(path)
        if size > JOURNAL_MAX:
            raise FormatError(f"{path}: {size} bytes; export only the crash's entry "
                              "(journalctl -o json COREDUMP_PID=PID)")
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise FormatError(f"{path}: cannot read the journal export ({exc.strerror})") from None
    entries = _json_entries(data, path) if data.lstrip()[:1] == b"{" else _export_entries(data, path)
    dumps = [e for e in entries if "COREDUMP_PID" in e]
    name = os.path.basename(core_path)
    by_name = [e for e in dumps if os.path.basename(str(e.get("COREDUMP_FILENAME", ""))) == name]
    stored = stored_name_facts(core_path)
    by_pid = [e for e in dumps if stored and e.get("COREDUMP_PID") == str(stored["pid"])]
    chosen = by_name or (dumps if len(dumps) == 1 else by_pid)
    if len(chosen) != 1:
        pids = sorted({str(e.get("COREDUMP_PID")) for e in dumps})
        raise FormatError(f"{path}: {len(dumps)} systemd-coredump entries (pids {', '.join(pids) or 'none'}), "
                          f"none of them for {name}")
    return Journal(chosen[0], path)
