"""A minimal QMP (QEMU Machine Protocol) client: enough to take a ``dump-guest-memory``
of a running guest and to quit QEMU."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

from .packages import LabError


class Qmp:
    """One QMP connection over a UNIX socket (``-qmp unix:PATH,server=on,wait=off``)."""

    def __init__(self, path: Path, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                self.sock.connect(str(path))
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise LabError(f"qmp: cannot connect to {path}") from None
                time.sleep(0.2)
        self.file = self.sock.makefile("rwb")
        self._read()  # the greeting
        self.execute("qmp_capabilities")

    def _read(self) -> dict[str, Any]:
        line = self.file.readline()
        if not line:
            raise LabError("qmp: QEMU closed the monitor connection")
        return json.loads(line)

    def execute(self, command: str, timeout: float = 600.0, **arguments: Any) -> Any:
        """Run one command and return its ``return`` value (events in between are skipped)."""
        msg: dict[str, Any] = {"execute": command}
        if arguments:
            msg["arguments"] = arguments
        self.sock.settimeout(timeout)
        self.file.write(json.dumps(msg).encode() + b"\n")
        self.file.flush()
        while True:
            reply = self._read()
            if "return" in reply:
                return reply["return"]
            if "error" in reply:
                err = reply["error"]
                raise LabError(f"qmp: {command} failed: {err.get('class')}: {err.get('desc')}")

    def close(self) -> None:
        """Close the connection (QEMU keeps running)."""
        try:
            self.file.close()
        finally:
            self.sock.close()


def dump_guest_memory(path: Path, out: Path, fmt: str = "elf", quit: bool = True,
                      timeout: float = 600.0) -> None:
    """Write a dump of the guest's physical memory to ``out`` (QMP ``dump-guest-memory``,
    paging off: vaddr = paddr in an ELF dump), then (``quit``) quit QEMU."""
    q = Qmp(path)
    try:
        q.execute("dump-guest-memory", timeout=timeout, paging=False,
                  protocol=f"file:{out}", format=fmt)
        if quit:
            try:
                q.execute("quit", timeout=10)
            except LabError:
                pass  # QEMU may close the socket before answering
    finally:
        q.close()
