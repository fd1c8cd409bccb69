"""ELF notes of a vmcore: NT_PRSTATUS per CPU, VMCOREINFO, QEMU notes."""

from __future__ import annotations

import struct
from dataclasses import dataclass

import pandas as pd

from ..bounds import NR_CPUS_MAX

NT_PRSTATUS = 1
NT_PRPSINFO = 3
NT_AUXV = 6
NT_FILE = 0x46494C45

# x86_64 struct user_regs_struct, in pr_reg order
PR_REG_NAMES = (
    "r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx", "rdx",
    "rsi", "rdi", "orig_rax", "rip", "cs", "eflags", "rsp", "ss", "fs_base", "gs_base",
    "ds", "es", "fs", "gs",
)
PRSTATUS_PID_OFFSET = 32
PRSTATUS_REG_OFFSET = 112
PRSTATUS_MIN_SIZE = PRSTATUS_REG_OFFSET + 8 * len(PR_REG_NAMES)
CPU_FRAME_REGS = (
    "rip", "rsp", "rbp", "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "r8", "r9", "r10", "r11",
    "r12", "r13", "r14", "r15", "cs", "ss", "eflags", "fs_base", "gs_base",
)


@dataclass(frozen=True)
class Note:
    """One ELF note: owner name, type and descriptor bytes."""

    name: str
    type: int
    desc: bytes
    offset: int  # where the note header starts, relative to the blob


def parse_notes(blob: bytes, problems: list[str] | None = None) -> list[Note]:
    """Split an ELF note blob into notes (4-byte aligned name and desc).

    A note that runs past the end of the blob ends the parse; the reason is appended to
    `problems` when given.
    """
    notes: list[Note] = []
    pos = 0
    end = len(blob)
    while pos + 12 <= end:
        namesz, descsz, ntype = struct.unpack_from("<III", blob, pos)
        if namesz == 0 and descsz == 0 and ntype == 0:
            break  # zero padding after the last note
        name_start = pos + 12
        desc_start = name_start + ((namesz + 3) & ~3)
        desc_end = desc_start + descsz
        if namesz > 4096 or desc_end > end:
            if problems is not None:
                problems.append(f"note at offset {pos:#x} runs past the end of the note data "
                                f"(namesz={namesz}, descsz={descsz})")
            break
        name = blob[name_start:name_start + namesz].rstrip(b"\0").decode("ascii", "replace")
        notes.append(Note(name, ntype, bytes(blob[desc_start:desc_end]), pos))
        pos = desc_start + ((descsz + 3) & ~3)
    return notes


def parse_vmcoreinfo(data: bytes) -> dict[str, str]:
    """VMCOREINFO text (`KEY=VALUE` lines) as a dict, keys exactly as the kernel wrote them."""
    info: dict[str, str] = {}
    text = data.split(b"\0", 1)[0].decode("ascii", "replace")
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            info[key] = value
    return info


def vmcoreinfo_note(notes: list[Note]) -> bytes | None:
    """The raw VMCOREINFO text from a note list, or None."""
    for note in notes:
        if note.name == "VMCOREINFO":
            return note.desc
    return None


def prstatus_notes(notes: list[Note]) -> list[Note]:
    """The CORE/NT_PRSTATUS notes, in file order (one per CPU)."""
    return [n for n in notes if n.name == "CORE" and n.type == NT_PRSTATUS]


def is_qemu(notes: list[Note]) -> bool:
    """True when the notes carry QEMU's per-CPU state (dump-guest-memory)."""
    return any(n.name == "QEMU" for n in notes)


def decode_prstatus(desc: bytes) -> tuple[int, dict[str, int]] | None:
    """(pid, registers) of an x86_64 elf_prstatus, or None when it is too short."""
    if len(desc) < PRSTATUS_MIN_SIZE:
        return None
    pid = struct.unpack_from("<i", desc, PRSTATUS_PID_OFFSET)[0]
    regs = struct.unpack_from(f"<{len(PR_REG_NAMES)}Q", desc, PRSTATUS_REG_OFFSET)
    return pid, dict(zip(PR_REG_NAMES, regs))


def cpus_frame(notes: list[Note]) -> pd.DataFrame:
    """One row per NT_PRSTATUS note: cpu, pid and registers.

    In a kernel vmcore the notes are in CPU order; in a QEMU dump the "pid" is the vCPU
    index + 1, which gives the CPU number.
    """
    qemu = is_qemu(notes)
    rows = []
    for index, note in enumerate(prstatus_notes(notes)):
        decoded = decode_prstatus(note.desc)
        if decoded is None:
            continue
        pid, regs = decoded
        cpu = pid - 1 if qemu else index
        if not 0 <= cpu < NR_CPUS_MAX:  # a damaged QEMU note: the CPU is unknown
            cpu = None
        rows.append({"cpu": cpu, "pid": pid, **{r: regs[r] for r in CPU_FRAME_REGS}})
    df = pd.DataFrame(rows, columns=["cpu", "pid", *CPU_FRAME_REGS])
    df["cpu"] = df["cpu"].astype("Int16")
    df["pid"] = df["pid"].astype("Int32")
    for reg in CPU_FRAME_REGS:
        df[reg] = df[reg].astype("UInt64")
    return df


# QEMU's per-CPU note (target/i386/arch_dump.c, QEMUCPUState): version, size, 18 general
# registers, rip/rflags as u64, 10 segment descriptors of 24 bytes, then cr[0..4]
QEMU_CPU_CR_OFFSET = 8 + 18 * 8 + 10 * 24


def qemu_control_registers(notes: list[Note]) -> list[dict[str, int]]:
    """cr0, cr2, cr3 and cr4 of every vCPU from the QEMU notes (empty when there are none)."""
    out = []
    for n in notes:
        if n.name == "QEMU" and len(n.desc) >= QEMU_CPU_CR_OFFSET + 40:
            cr = struct.unpack_from("<5Q", n.desc, QEMU_CPU_CR_OFFSET)
            out.append({"cr0": cr[0], "cr2": cr[2], "cr3": cr[3], "cr4": cr[4]})
    return out
