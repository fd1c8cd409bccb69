"""ground-truth.json: what we know about a lab dump, from the console, the snapshot and the run."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..dump import open_dump
from ..errors import KdnbError

#: Keys every ground-truth.json written by the lab has (the corpus schema, plus lab extras).
REQUIRED_KEYS: dict[str, type | tuple[type, ...]] = {
    "scenario": str,
    "kernel_release": str,
    "uname": str,
    "first_kernel_cmdline": str,
    "capture_kernel_cmdline": str,
    "trigger": str,
    "expected_panic_message": str,
    "observed_panic_message_console": (str, type(None)),
    "observed_crash_lines_console": list,
    "observed_panic_message_vmcore_dmesg": (str, type(None)),
    "crash_context_cpu_pid_comm": (dict, type(None)),
    "hung_task_reported_blocked": list,
    "module_trigger": (dict, type(None)),
    "trigger_cpu": (int, type(None)),
    "vcpus": int,
    "ram_mib": int,
    "crashkernel": str,
    "accel": str,
    "cpu_model": str,
    "paging_levels": int,
    "kaslr_kerneloffset": (str, type(None)),
    "vmcoreinfo": dict,
    "qemu_wall_seconds": (int, float),
    "tainted_before_crash": (str, type(None)),
    "workload_processes": list,
    "tasks_at_snapshot": list,
    "slabinfo_kdnb_obj": (str, type(None)),
    "leaked_objects": (int, type(None)),
    "kallsyms_first_kernel": dict,
    "dump_files_bytes": dict,
    "proc_vmcore_bytes": (int, type(None)),
    "capture_timings": list,
    "timings": dict,
    "dump_level": int,
    "formats": list,
    "capture_command": str,
}

CRASH_LINE_RX = re.compile(
    r"(Kernel panic - not syncing:.*|BUG: .*|Oops: .*|kernel BUG at .*|WARNING: .*|"
    r"watchdog: BUG: soft lockup.*|INFO: task \S+ blocked (?:in I/O wait )?for more than.*|"
    r"rcu: INFO: .*stall.*|.*invoked oom-killer.*|Out of memory.*|sysrq: Trigger a crash.*)$")
CONTEXT_RX = re.compile(r"CPU: (\d+) (?:UID: \d+ )?PID: (\d+) Comm: (\S+)")
BLOCKED_RX = re.compile(r"INFO: task (\S+):(\d+) blocked (?:in I/O wait )?for more than")  # 7.2: I/O wait
TASK_RX = re.compile(r"KDNB-TASK comm=(\S+) pid=(\d+)(?: cpu=(\d+))?")



def read_vmcoreinfo(path: Path) -> dict[str, str]:
    """VMCOREINFO of a finished dump, through kdnb's own readers ({} when unreadable)."""
    try:
        reader = open_dump(path)
    except KdnbError:
        return {}
    try:
        return dict(reader.vmcoreinfo)
    finally:
        reader.close()

def _strip_ts(line: str) -> str:
    return re.sub(r"^\s*\[\s*\d+\.\d+\]\s*", "", line).strip()


def validate(gt: dict[str, Any]) -> list[str]:
    """Problems with a ground-truth dict ([] when it matches the schema)."""
    problems = []
    for k, t in REQUIRED_KEYS.items():
        if k not in gt:
            problems.append(f"missing key {k}")
        elif not isinstance(gt[k], t):
            problems.append(f"{k}: expected {t}, got {type(gt[k]).__name__}")
    for t in gt.get("tasks_at_snapshot", []):
        if not {"pid", "comm", "state", "ppid"} <= set(t):
            problems.append(f"tasks_at_snapshot entry lacks pid/comm/state/ppid: {t}")
            break
    return problems


def console_facts(console: list[str]) -> dict[str, Any]:
    """Crash lines, panic line, crash context, blocked tasks and KDNB-TASK lines after the crash."""
    try:
        start = max(i for i, l in enumerate(console) if "KDNB-STEP crash" in l)
    except ValueError:
        start = 0
    try:
        end = next(i for i, l in enumerate(console) if "KDNB-STEP capture" in l and i > start)
    except StopIteration:
        end = len(console)
    after = console[start:end]
    crash_lines: list[str] = []
    panic = None
    context = None
    blocked = []
    for raw in after:
        line = _strip_ts(raw)
        m = CRASH_LINE_RX.search(line)
        if m and "KDNB" not in line:
            text = m.group(1)
            if text not in crash_lines:
                crash_lines.append(text)
            if text.startswith("Kernel panic - not syncing") and panic is None:
                panic = text
        b = BLOCKED_RX.search(line)
        if b and {"comm": b.group(1), "pid": int(b.group(2))} not in blocked:
            blocked.append({"comm": b.group(1), "pid": int(b.group(2))})
        if "sysrq: Trigger a crash" in line:
            context = None  # a crash after an earlier report (oom-kill): its own CPU line counts
        c = CONTEXT_RX.search(line)
        if c and context is None and crash_lines:
            context = {"cpu": int(c.group(1)), "pid": int(c.group(2)), "comm": c.group(3)}
    tasks = [{"comm": m.group(1), "pid": int(m.group(2)),
              "cpu": int(m.group(3)) if m.group(3) else None}
             for l in console if (m := TASK_RX.search(l)) and "echo" not in l]
    return {"crash_lines": crash_lines, "panic": panic, "context": context, "blocked": blocked,
            "tasks": tasks}


def parse_proc_stat(text: str) -> list[dict[str, Any]]:
    """/proc/*/stat lines -> [{pid, comm, state, ppid}] (comm may contain spaces/parens)."""
    out = []
    for line in text.splitlines():
        m = re.match(r"(\d+) \((.*)\) (\S) (\d+)", line)
        if m:
            out.append({"pid": int(m.group(1)), "comm": m.group(2), "state": m.group(3),
                        "ppid": int(m.group(4))})
    return sorted(out, key=lambda t: t["pid"])


def parse_kallsyms(text: str) -> dict[str, str]:
    """kallsyms-subset.txt -> {name: '0x...'} (first address of each name)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3:
            out.setdefault(parts[2], "0x" + parts[0])
    return out


def _io_hang(scenario, blocked: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The stalled disk of a scenario with ``io_throttle``: the disk, what the workload writes
    to it, QEMU's throttle, and the task(s) the hung-task detector named."""
    if not scenario.io_throttle:
        return None
    timeout = scenario.sysctls.get("kernel.hung_task_timeout_secs")
    return {"disk": "vdb", "op": "WRITE", "bytes_per_write": 4096, "throttle": scenario.io_throttle,
            "hung_task_timeout_secs": int(timeout) if timeout else None,
            "blocked": [b for b in blocked if b["comm"] in scenario.blocked]}


def _read(p: Path) -> str | None:
    try:
        return p.read_text(errors="replace")
    except OSError:
        return None


def build(*, scenario, release: str, snapshot: Path, out_files: dict[str, Path], capture_dir: Path,
          console: list[str], first_cmdline: str, memory_mib: int, crashkernel: str, accel: str,
          cpu_model: str, dump_level: int, formats: list[str], capture_commands: list[str],
          wall_seconds: float, timings: dict[str, float], smp: int) -> dict[str, Any]:
    """Assemble the ground-truth dict for one lab run."""
    cf = console_facts(console)
    vmci: dict[str, str] = {}
    for p in out_files.values():
        vmci = read_vmcoreinfo(p)
        if vmci:
            break
    dmesg = _read(capture_dir / "dmesg.txt") or ""
    dmesg_panic = next((_strip_ts(l) for l in dmesg.splitlines()
                        if "Kernel panic - not syncing" in l), None)
    if dmesg_panic:
        dmesg_panic = dmesg_panic[dmesg_panic.index("Kernel panic"):]
    workload = []
    for line in (_read(snapshot / "workload.txt") or "").splitlines():
        parts = line.split()
        if len(parts) == 2:
            workload.append({"comm": parts[0], "pid": int(parts[1])})
    trigger_tasks = [t for t in cf["tasks"] if t["comm"] not in {w["comm"] for w in workload}]
    workload += [{"comm": t["comm"], "pid": t["pid"]} for t in trigger_tasks
                 if t["comm"] != "kdnb_trigger"]
    module_trigger = None
    if scenario.module and trigger_tasks:
        t = trigger_tasks[0]
        module_trigger = {"what": scenario.name, "comm": t["comm"], "pid": t["pid"], "cpu": t["cpu"]}
    slab_line = next((l for l in (_read(snapshot / "slabinfo.txt") or "").splitlines()
                      if l.startswith("kdnb_obj ")), None)
    timings_lines = [l for l in (_read(capture_dir / "timings.txt") or "").splitlines() if l.strip()]
    vmcore_bytes = (_read(capture_dir / "proc-vmcore-bytes.txt") or "").strip()
    uname = (_read(snapshot / "uname.txt") or "").strip()
    tainted = (_read(snapshot / "tainted.txt") or "").strip() or None
    koff = vmci.get("KERNELOFFSET")
    return {
        "scenario": scenario.name,
        "description": scenario.description,
        "kernel_release": release,
        "uname": uname,
        "first_kernel_cmdline": first_cmdline,
        "capture_kernel_cmdline": (_read(capture_dir / "capture-cmdline.txt") or "").strip(),
        "trigger": scenario.trigger,
        "expected_panic_message": scenario.expected_panic,
        "observed_panic_message_console": cf["panic"],
        "observed_crash_lines_console": cf["crash_lines"],
        "observed_panic_message_vmcore_dmesg": dmesg_panic,
        "crash_context_cpu_pid_comm": cf["context"],
        "expected_crash_comm": scenario.crash_comm,
        "hung_task_reported_blocked": cf["blocked"],
        "expected_blocked_comms": list(scenario.blocked),
        "io_hang": _io_hang(scenario, cf["blocked"]),
        "module_trigger": module_trigger,
        "trigger_cpu": trigger_tasks[0]["cpu"] if trigger_tasks else None,
        "expected_current_on_cpu1": "kdnb_spin_cpu1 (busy loop pinned to CPU 1), unless the "
                                    "scenario itself runs there",
        "vcpus": smp,
        "ram_mib": memory_mib,
        "crashkernel": crashkernel,
        "accel": accel,
        "cpu_model": cpu_model,
        "paging_levels": 5 if vmci.get("NUMBER(pgtable_l5_enabled)") == "1" else 4,
        "kaslr_kerneloffset": f"0x{koff}" if koff else None,
        "vmcoreinfo": vmci,
        "qemu_wall_seconds": round(wall_seconds, 2),
        "tainted_before_crash": tainted,
        "workload_processes": workload,
        "tasks_at_snapshot": parse_proc_stat(_read(snapshot / "proc-stat.txt") or ""),
        "slabinfo_kdnb_obj": slab_line,
        "live_objects": 16 if scenario.module else None,
        "leaked_objects": scenario.leaked_objects,
        "slabinfo_note": "snapshot/slabinfo.txt is /proc/slabinfo just before the trigger; "
                         "kdnb_crash.ko creates cache 'kdnb_obj' (32-byte objects, magic "
                         "0x6b646e62+index, tag 'kdnb-obj-NNNN'): `live_objects` kept, "
                         "`leaked_objects` allocated and never freed",
        "kallsyms_first_kernel": parse_kallsyms(_read(snapshot / "kallsyms-subset.txt") or ""),
        "dump_files_bytes": {n: p.stat().st_size for n, p in out_files.items()},
        "dump_files_bytes_as_written_in_guest": dict(sorted({
            **{p.name: p.stat().st_size for p in capture_dir.iterdir() if p.is_file()},
            **{n: p.stat().st_size for n, p in out_files.items()}}.items())),
        "proc_vmcore_bytes": int(vmcore_bytes) if vmcore_bytes.isdigit() else None,
        "capture_timings": timings_lines,
        "timings": {k: round(v, 2) for k, v in timings.items()},
        "dump_level": dump_level,
        "format": formats[0] if formats else None,
        "formats": formats,
        "capture_command": "; ".join(capture_commands),
        "notes": "tasks_at_snapshot is /proc/*/stat just before the trigger; processes started "
                 "after it (the trigger subshells) are in workload_processes/module_trigger.",
    }
