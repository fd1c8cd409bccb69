"""`Minidump`: a Linux minidump (Breakpad/Crashpad "MDMP") opened like a process core, with the
same tables, backtraces and root cause as `Core`.

A minidump holds much less than a core: the threads' registers and stacks, the signal, the list
of mapped ELF images with their build-ids, and whatever other memory the reporter chose to
capture. It has no auxv, no NT_FILE and no memory of the images, so symbols and call-frame
information always come from the images' files (found through `binaries=`, the minidump's own
folder, or the mapped path; a build-id must match), the mappings are those of the images (their
PT_LOAD segments when the file is found) plus the captured ranges, and an address outside them is
"not in the minidump", never "not mapped".
"""

from __future__ import annotations

import os
from dataclasses import replace
from functools import cached_property

from ..dump.notes import PR_REG_NAMES
from .core import Core, Signal
from .images import Binaries, Image, _debug_file, _file_layout, _match_file, open_elf
from .mappings import Mapping, explain_address
from .memory import PF_X, CoreMemory, Load
from .minidump import MinidumpStreams, parse
from .notes import ProcessNotes, PrStatus, SigInfo
from .source import CoreSource

VDSO_NAMES = ("linux-vdso.so.1", "linux-gate.so.1", "[vdso]")


class MinidumpMemory(CoreMemory):
    """Reads of the memory ranges a minidump captured (the threads' stacks and any others), as
    CoreMemory reads PT_LOADs: each range is a load whose bytes are all in the file."""

    UNMAPPED = ("not captured in the minidump (it holds the threads' stacks and the memory its "
                "writer chose, not the whole process)")

    def __init__(self, source: CoreSource, streams: MinidumpStreams) -> None:
        # no super().__init__(): that parses an ELF core's program headers
        self.source, self.path = source, source.path
        self.problems: list[str] = list(streams.problems)
        self.truncated = False
        self.loads = [Load(i, r.start, r.size, r.rva, r.size, 0) for i, r in enumerate(streams.ranges)]
        self._starts = [ld.vaddr for ld in self.loads]


def _regs(context: dict[str, int]) -> dict[str, int | None]:
    """NT_PRSTATUS register names from a minidump context (orig_rax, fs_base, gs_base: unknown)."""
    return {r: context.get(r) for r in PR_REG_NAMES}


def process_notes(st: MinidumpStreams) -> ProcessNotes:
    """The ProcessNotes a core would have: threads (the faulting one first, with its registers at
    the signal), the signal as NT_SIGINFO would give it; no psinfo, files or auxv."""
    exc = st.exception
    notes = ProcessNotes(problems=[])
    threads = sorted(st.threads, key=lambda t: exc is None or t.tid != exc.tid)
    for t in threads:
        faulted = exc is not None and t.tid == exc.tid
        regs = exc.regs if faulted and exc.regs else t.regs
        signo = exc.signo if faulted else 0
        notes.threads.append(PrStatus(t.tid, signo, signo, 0, 0, 0, 0, 0, float("nan"), float("nan"),
                                      _regs(regs)))
    if exc is not None:
        sent = exc.code <= 0 and len(exc.params) >= 2  # Crashpad: si_pid, si_uid of a sent signal
        notes.siginfo = SigInfo(exc.signo, 0, exc.code, exc.addr if exc.code > 0 else None,
                                exc.params[0] if sent else None, exc.params[1] if sent else None)
    elif st.threads:
        notes.problems.append("no Exception stream: the signal is unknown")
    return notes


class Minidump(Core):
    """An opened Linux minidump; the `Core` interface (threads, signal, process, mappings,
    images, read, backtrace, root_cause)."""

    format = "minidump"

    def __init__(self, path: str | os.PathLike, binaries: Binaries = None,
                 use_mapped_paths: bool = True) -> None:
        self.path = os.fspath(path)
        self._journal_source = None  # systemd-coredump stores cores, not minidumps
        self._source = CoreSource(self.path)
        try:
            self._streams = parse(self._source.pread, self._source.size, self.path)
            self._mem = MinidumpMemory(self._source, self._streams)
            self._notes = process_notes(self._streams)
        except BaseException:
            self._source.close()
            raise
        self._binaries = binaries if binaries is not None else [os.path.dirname(os.path.abspath(self.path))]
        self._use_mapped = use_mapped_paths
        self._symtabs = {}

    def __repr__(self) -> str:
        return f"<kdnb.Minidump {self.process['comm']} pid {self.process['pid']} {self.signal.name} {self.path!r}>"

    @cached_property
    def signal(self) -> Signal:
        """The signal, from the Exception stream (si_code, si_addr, the sender of a sent one)."""
        return replace(Core.signal.func(self), source="the minidump's Exception stream")

    @property
    def header(self) -> dict:
        """Container facts: streams, sizes, counts, the reporter's ids, the kernel release."""
        st = self._streams
        return {"format": self.format, "compression": self._source.compression,
                "file_size": self._source.compressed_size, "core_size": st.size, "truncated": False,
                "streams": [f"{t:#x}" for t, _s, _r in st.streams], "threads": len(st.threads),
                "modules": len(st.modules), "memory_ranges": len(st.ranges),
                "captured_bytes": sum(r.size for r in st.ranges), "written": st.time,
                "kernel": st.system.get("release"), "os": st.system.get("os"),
                **st.crashpad, "problems": self.problems}

    def facts(self) -> list[tuple[str, str]]:
        """The minidump itself in a few labelled lines (for `kdnb info` and the report)."""
        h = self.header
        writer = "Crashpad" if "report_id" in h else "a Breakpad-style writer"
        return [("file", f"{self.path} ({h['compression']}, {h['file_size']} bytes)"),
                ("format", f"Linux minidump written by {writer} ({len(h['streams'])} streams)"),
                ("kernel", f"{h['os']} {h['kernel']}"),
                ("captured memory", f"{h['captured_bytes']} bytes in {h['memory_ranges']} ranges "
                                    "(threads' stacks; no heap, no data, no auxv)"),
                *([("report id", h["report_id"])] if "report_id" in h else [])]

    @cached_property
    def process(self) -> dict:
        """pid (MiscInfo), comm (the main thread's name), the executable; the rest is not in a
        minidump (None)."""
        st = self._streams
        pid = st.pid if st.pid is not None else self._notes.threads[0].tid
        exe = self._exe
        comm = st.thread_names.get(pid) or (exe.name if exe else None)
        return {"pid": pid, "ppid": None, "pgrp": None, "sid": None, "uid": None, "gid": None,
                "comm": comm, "args": None, "state": None, "executable": exe.path if exe else None,
                "threads": len(st.threads)}

    @cached_property
    def _images(self) -> list[Image]:
        images = []
        for m in self._streams.modules:
            vdso = m.path in VDSO_NAMES
            img = Image("[vdso]" if vdso else m.path, m.base, m.base + m.size, m.base, m.build_id)
            if vdso:
                img.status = "not in minidump"
                img.notes.append("a minidump keeps the vDSO's build-id, not its bytes")
            else:
                _match_file(img, self._binaries, self._use_mapped)
                layout = _file_layout(img.file, m.base) if img.file else None
                if layout is not None:
                    img.bias, img.code = layout
                img.debug_file = _debug_file(img.build_id or img.file_build_id, self._binaries)
            images.append(img)
        return sorted(images, key=lambda i: i.start)

    @cached_property
    def _exe(self) -> Image | None:
        # Crashpad and Breakpad list the main executable first
        first = next((m for m in self._streams.modules if m.path not in VDSO_NAMES), None)
        return next((i for i in self._images if first is not None and i.start == first.base), None)

    @cached_property
    def _maps(self) -> list[Mapping]:
        out = [m for img in self._images for m in _image_mappings(img)]
        pid = self.process["pid"]
        stacks = {t.stack_start: t.tid for t in self._streams.threads}
        exc = self._streams.exception
        for ld in self._mem.loads:
            tid = stacks.get(ld.vaddr)
            label = "captured memory" if tid is None else "[stack]" if tid == pid else f"stack of thread {tid}"
            if tid is not None and exc is not None and exc.regs and tid == exc.tid and \
                    not ld.vaddr <= exc.regs["rsp"] < ld.end:
                # the reporter ran on a signal stack: the thread's own stack at the signal is not here
                label, tid = f"signal stack of thread {exc.tid} (its crash handler's)", None
            out.append(Mapping(ld.vaddr, ld.end, "rw-" if label != "captured memory" else "???", label,
                               None, None, True, ld.memsz, None, tid))
        return sorted(out, key=lambda m: m.start)

    def explain(self, addr: int) -> str:
        """Where an address falls among the images and captured ranges, in a sentence."""
        text = explain_address(addr, self._maps)
        if text.startswith("not mapped"):
            return ("not in any image or captured range of the minidump (it lists no other mappings, "
                    "so the address may still have been mapped)" + text[len("not mapped"):])
        return text


def _image_mappings(img: Image) -> list[Mapping]:
    """An image's PT_LOAD segments (from its file), or its whole range with unknown permissions."""
    segs = []
    if img.file:
        with open_elf(img.file) as elf:
            if elf is not None:
                segs = [(s["p_vaddr"], s["p_memsz"], s["p_offset"], s["p_flags"])
                        for s in elf.iter_segments() if s["p_type"] == "PT_LOAD"]
    if not segs:
        return [Mapping(img.start, img.end, "???", img.name, img.path, 0, False, 0, img.build_id)]
    out = []
    for vaddr, memsz, offset, flags in segs:
        start = (vaddr + img.bias) & ~0xFFF
        perms = ("r" if flags & 4 else "-") + ("w" if flags & 2 else "-") + ("x" if flags & PF_X else "-")
        out.append(Mapping(start, vaddr + img.bias + memsz, perms, img.name, img.path, offset & ~0xFFF,
                           False, 0, img.build_id))
    return out


__all__ = ["Minidump", "MinidumpMemory", "process_notes"]
