"""`Core`: a userspace process core, opened with `kdnb.open(path)` (or `kdnb.process.Core`).

Threads, the fatal signal, the process, its mappings, auxv and mapped images come from the
core alone; backtraces and symbols also use the images' files on disk (at their mapped paths,
or found through `binaries=`), verified by build-id. Properties compute lazily and cache.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import pandas as pd

from ..dump.notes import PR_REG_NAMES
from ..errors import FormatError, KdnbError, SymbolNotFound
from .images import Binaries, Image, find_images
from .journal import Journal, load_journal, stored_name_facts
from .mappings import Mapping, build_mappings, explain_address, mappings_frame
from .memory import PF_X, CoreMemory
from .notes import AT_NAMES, STATE_NAMES, ProcessNotes, decode_notes
from .signals import FAULT_SIGNALS, code_meaning, signal_name
from .source import CoreSource
from .symbols import Symbol, SymbolTable
from .unwind import MAX_FRAMES, Walker

if TYPE_CHECKING:  # pragma: no cover
    from .rootcause import ProcessRootCause

AT_PHDR, AT_ENTRY, AT_EXECFN, AT_SYSINFO_EHDR = 3, 9, 31, 33
FRAME_COLUMNS = ["level", "pc", "sp", "function", "offset", "image", "how", "symbol_table", "inside"]


@dataclass(frozen=True)
class Signal:
    """The fatal signal: number and name, si_code and what it means, fault address, sender."""

    signo: int
    name: str
    code: int | None
    code_name: str
    meaning: str
    addr: int | None
    sender_pid: int | None
    sender_uid: int | None
    source: str  # NT_SIGINFO, or NT_PRSTATUS (pr_cursig only) for cores without it

    def __str__(self) -> str:
        text = f"{self.name} ({self.signo}), {self.code_name}: {self.meaning}"
        if self.addr is not None:
            text += f", address {self.addr:#x}"
        if self.sender_pid is not None:
            text += f", sent by pid {self.sender_pid} (uid {self.sender_uid})"
        return text


class Core:
    """An opened process core; also a context manager."""

    format = "process-core"

    def __init__(self, path: str | os.PathLike, binaries: Binaries = None,
                 use_mapped_paths: bool = True, journal: str | os.PathLike | None = None) -> None:
        self.path = os.fspath(path)
        self._journal_source = journal
        self._source = CoreSource(self.path)
        try:
            self._mem = CoreMemory(self._source)
            self._notes: ProcessNotes = decode_notes(self._mem.notes, self.path)
        except BaseException:
            self._source.close()
            raise
        if not self._notes.threads:
            self._source.close()
            raise FormatError(f"{self.path}: an ELF core without any NT_PRSTATUS (thread) note")
        # without a search path the core's own folder is looked in (a build id must still match)
        self._binaries = binaries if binaries is not None else [os.path.dirname(os.path.abspath(self.path))]
        self._use_mapped = use_mapped_paths
        self._symtabs: dict[int, SymbolTable] = {}

    # -- context manager and display ----------------------------------------------------
    def __enter__(self) -> "Core":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the core (a decompressed copy is deleted)."""
        self._source.close()

    def __repr__(self) -> str:
        p = self._notes.psinfo
        who = f"{p.comm} pid {p.pid}" if p else "?"
        return f"<kdnb.Core {who} {self.signal.name} {self.path!r}>"

    def _repr_html_(self) -> str:
        from .report import core_html

        return core_html(self)

    # -- facts from the notes -----------------------------------------------------------
    @property
    def header(self) -> dict:
        """Container facts: compression, sizes, truncation, counts."""
        return {"format": self.format, "compression": self._source.compression,
                "file_size": self._source.compressed_size, "core_size": self._source.size,
                "truncated": self._mem.truncated, "pt_loads": len(self._mem.loads),
                "threads": len(self._notes.threads), "stored_by_systemd": stored_name_facts(self.path),
                "problems": self.problems}

    def facts(self) -> list[tuple[str, str]]:
        """The file itself in a few labelled lines (for `kdnb info` and the report)."""
        h = self.header
        held = int(self.mappings["in_core"].astype(bool).sum())
        return [("file", f"{self.path} ({h['compression']}, {h['file_size']} bytes; "
                         f"{h['core_size']} bytes of core)"),
                ("format", "ELF process core"),
                ("truncated", "yes: the kernel stopped writing (RLIMIT_CORE, disk full, or a copy cut "
                              "short)" if h["truncated"] else "no"),
                ("mappings with bytes in the core", f"{held} of {len(self.mappings)} (coredump_filter "
                                                    "keeps file-backed text out)")]

    @property
    def problems(self) -> list[str]:
        """What could not be read or decoded, one sentence each."""
        return self._mem.problems + self._notes.problems

    @cached_property
    def journal(self) -> Journal | None:
        """systemd-coredump's journal entry for this core, when one was given with `journal=`
        (a `journalctl -o json` or `-o export` file); None otherwise."""
        return load_journal(self._journal_source, self.path) if self._journal_source is not None else None

    @cached_property
    def process(self) -> dict:
        """NT_PRPSINFO: pid, ppid, pgrp, sid, uid, gid, comm, args, state; plus the executable;
        with a journal entry, the whole command line, the cwd and the unit."""
        p = self._notes.psinfo
        exe = self._exe
        out = {"pid": p.pid if p else self._notes.threads[0].tid, "ppid": p.ppid if p else None,
               "pgrp": p.pgrp if p else None, "sid": p.sid if p else None,
               "uid": p.uid if p else None, "gid": p.gid if p else None,
               "comm": p.comm if p else None, "args": p.args if p else None,
               "state": STATE_NAMES.get(p.state, p.state) if p else None,
               "executable": exe.path if exe else None, "threads": len(self._notes.threads)}
        if self.journal is not None:  # NT_PRPSINFO keeps 80 bytes of the command line
            j = self.journal.facts
            out.update(args=j["cmdline"] or out["args"], cwd=j["cwd"], unit=j["unit"] or j["user_unit"])
        return out

    @cached_property
    def signal(self) -> Signal:
        """The signal that ended the process (NT_SIGINFO, else the first thread's pr_cursig)."""
        si = self._notes.siginfo
        if si is not None and si.signo:
            name, meaning = code_meaning(si.signo, si.code)
            return Signal(si.signo, signal_name(si.signo), si.code, name, meaning, si.addr,
                          si.sender_pid, si.sender_uid, "NT_SIGINFO")
        signo = self._notes.threads[0].cursig
        return Signal(signo, signal_name(signo), None, "unknown", "no NT_SIGINFO note: si_code and "
                      "the fault address are not in the core", None, None, None, "NT_PRSTATUS")

    @cached_property
    def threads(self) -> pd.DataFrame:
        """One row per thread: tid, faulted (the thread that took the signal), signal, the
        x86_64 registers, user and system CPU seconds."""
        rows = []
        for i, t in enumerate(self._notes.threads):
            rows.append({"tid": t.tid, "faulted": i == 0, "signal": signal_name(t.cursig) if t.cursig else "",
                         **{r: t.regs[r] for r in PR_REG_NAMES}, "utime": t.utime, "stime": t.stime})
        df = pd.DataFrame(rows)
        df["tid"] = df["tid"].astype("Int32")
        for r in PR_REG_NAMES:
            df[r] = df[r].astype("UInt64")
        return self._provenance(df)

    @property
    def faulting_tid(self) -> int:
        """The thread that took the signal: Linux and gdb write its NT_PRSTATUS first."""
        return self._notes.threads[0].tid

    @cached_property
    def auxv(self) -> pd.DataFrame:
        """The auxiliary vector: type, name (AT_*), value."""
        df = pd.DataFrame([(k, AT_NAMES.get(k, f"AT_{k}"), v) for k, v in self._notes.auxv],
                          columns=["type", "name", "value"])
        df["type"] = df["type"].astype("UInt64")
        df["value"] = df["value"].astype("UInt64")
        return self._provenance(df)

    # -- memory, mappings, images ---------------------------------------------------------
    def read(self, addr: int, size: int) -> bytes:
        """Process memory; NotInCore says why an address has no bytes in the core."""
        return self._mem.read(addr, size)

    @cached_property
    def _images(self) -> list[Image]:
        return find_images(self._mem, self._notes.files, dict(self._notes.auxv), self._binaries,
                           self._use_mapped)

    @cached_property
    def _exe(self) -> Image | None:
        aux = dict(self._notes.auxv)
        for key in (AT_PHDR, AT_ENTRY):
            img = self._image_at(aux[key]) if key in aux else None
            if img is not None:
                return img
        return next((i for i in self._images if not i.path.startswith("[")), None)

    def _image_at(self, addr: int) -> Image | None:
        return next((i for i in self._images if i.contains(addr)), None)

    @cached_property
    def _maps(self) -> list[Mapping]:
        aux = dict(self._notes.auxv)
        return build_mappings(self._mem, self._notes.files, self._images, self._exe,
                              self._notes.threads, self.process["pid"], aux.get(AT_SYSINFO_EHDR),
                              aux.get(AT_EXECFN))

    @cached_property
    def mappings(self) -> pd.DataFrame:
        """start, end, size, perms, label, path, offset, in_core, bytes_in_core, build_id."""
        return self._provenance(mappings_frame(self._maps))

    @cached_property
    def images(self) -> pd.DataFrame:
        """Mapped ELF images: path, start, end, bias, build_id (from the core), file (on disk),
        file_build_id, status (found, build-id mismatch, not found, in core), debug_file."""
        cols = ["path", "start", "end", "bias", "build_id", "file", "file_build_id", "status",
                "debug_file", "notes"]
        df = pd.DataFrame([[i.path, i.start, i.end, i.bias, i.build_id, i.file, i.file_build_id,
                            i.status, i.debug_file, "; ".join(i.notes)] for i in self._images], columns=cols)
        for c in ("start", "end", "bias"):
            df[c] = df[c].astype("UInt64")
        return self._provenance(df)

    def explain(self, addr: int) -> str:
        """Where an address falls among the mappings, in a sentence."""
        return explain_address(addr, self._maps)

    # -- symbols and stacks ---------------------------------------------------------------------
    def _symtab(self, image: Image) -> SymbolTable:
        key = id(image)
        if key not in self._symtabs:
            self._symtabs[key] = SymbolTable(image)
        return self._symtabs[key]

    def lookup(self, addr: int, return_address: bool = False) -> tuple[Image | None, Symbol | None]:
        """The image and symbol of an address (a return address is looked up at addr - 1)."""
        image = self._image_at(addr)
        if image is None:
            return None, None
        probe = addr - 1 if return_address else addr
        sym = self._symtab(image).lookup(probe - image.bias)
        if sym is not None and return_address:
            sym = Symbol(sym.name, sym.offset + 1, sym.size, sym.table, sym.inside)
        return image, sym

    def symbolize(self, addr: int) -> str:
        """`function+0x1a (image)` for an address, `?? (image)` or `??` without a symbol."""
        image, sym = self.lookup(addr)
        where = f" ({image.name})" if image else ""
        return f"{sym}{where}" if sym else f"??{where}"

    def symbol(self, name: str) -> int:
        """The runtime address of a symbol of any mapped image; raises SymbolNotFound."""
        for image in self._images:
            addr = self._symtab(image).address(name)
            if addr is not None:
                return addr + image.bias
        raise SymbolNotFound(f"no mapped image of {self.path} defines {name!r}")

    def _executable(self, addr: int) -> bool:
        """In an executable PT_LOAD, or in an image's code (gcore writes no PT_LOAD for text)."""
        ld = self._mem.load_at(addr)
        if ld is not None and ld.flags & PF_X:
            return True
        image = self._image_at(addr)
        return image is not None and image.is_code(addr)

    def backtrace(self, tid: int | None = None, max_frames: int = MAX_FRAMES,
                  use_cfi: bool = True) -> pd.DataFrame:
        """The stack of a thread (default: the one that took the signal): level, pc, sp,
        function, offset, image, how (registers, cfi .eh_frame, cfi .debug_frame, frame
        pointer, return address at sp), symbol_table, inside. `attrs['kdnb']['stop']` says
        why the walk ended."""
        tid = self.faulting_tid if tid is None else tid
        thread = next((t for t in self._notes.threads if t.tid == tid), None)
        if thread is None:
            raise KdnbError(f"{self.path}: no thread {tid} (threads: {[t.tid for t in self._notes.threads]})")
        walker = Walker(self._mem.read, self._image_at, self._executable, use_cfi=use_cfi)
        steps, stop = walker.walk(thread.regs, max_frames=max_frames)
        rows = []
        for level, st in enumerate(steps):
            image, sym = self.lookup(st.pc, return_address=not st.exact)
            rows.append([level, st.pc, st.sp, sym.name if sym else None, sym.offset if sym else None,
                         image.name if image else None, st.how, sym.table if sym else None,
                         sym.inside if sym else None])
        df = pd.DataFrame(rows, columns=FRAME_COLUMNS)
        for c in ("pc", "sp", "offset"):
            df[c] = df[c].astype("UInt64")
        for c in ("function", "image", "how", "symbol_table"):
            df[c] = df[c].astype("string")
        df["inside"] = df["inside"].astype("boolean")
        df["level"] = df["level"].astype("Int32")
        return self._provenance(df, tid=tid, stop=stop)

    def backtraces(self, max_frames: int = MAX_FRAMES) -> pd.DataFrame:
        """Every thread's stack, with a tid column first."""
        parts = [self.backtrace(t.tid, max_frames=max_frames).assign(tid=t.tid) for t in self._notes.threads]
        df = pd.concat(parts, ignore_index=True)
        df["tid"] = df["tid"].astype("Int32")
        return self._provenance(df[["tid", *FRAME_COLUMNS]])

    # -- analysis ---------------------------------------------------------------------------------
    def root_cause(self) -> "ProcessRootCause":
        """Why the process died: category, culprit frame, evidence."""
        from .rootcause import root_cause

        return root_cause(self)

    @property
    def fault_signal(self) -> bool:
        """Whether the signal was raised by the CPU for an instruction (si_addr meaningful)."""
        s = self.signal
        return s.signo in FAULT_SIGNALS and s.code is not None and 0 < s.code < 0x80

    def _provenance(self, df: pd.DataFrame, **extra: object) -> pd.DataFrame:
        info = {"path": self.path, "format": self.format, "pid": self.process["pid"],
                "comm": self.process["comm"]}
        info.update(extra)
        df.attrs["kdnb"] = {**df.attrs.get("kdnb", {}), **info}
        return df
