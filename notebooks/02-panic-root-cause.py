# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 02 · From the panic line to the culprit
#
# A step-by-step post-mortem with the DataFrames: the panic line, the crashing CPU and task, its
# stack, the tasks that were stuck, the memory picture, and finally `Dump.root_cause()`.

# %% tags=["parameters"]
dump_path = None  # the vmcore; None: the first bundled sample (kdnb.samples)

# %%
import kdnb
import kdnb.ui as ui
from kdnb.ui.filters import LogFilter, TaskFilter, panic_line, panic_mask
from kdnb.ui.plots import log_rate, task_states_by_cpu, top_slab_caches

ui.init()
d = kdnb.open(ui.resolve_dump(dump_path))
d

# %% [markdown]
# ## 1. The panic line
# The kernel's last words are in its log ring buffer, which kdnb reads from the dump alone.
# The lines that explain a crash (panic, Oops, BUG, lockup and hung-task reports) are highlighted.

# %%
log = d.log
print("panic line:", panic_line(log))
ui.table(log[panic_mask(log)][["seq", "time", "level_name", "text"]])

# %% [markdown]
# The last seconds before the crash, and the lines at warning level or worse:

# %%
log_rate(log)

# %%
ui.table(LogFilter(max_level=4, last_seconds=30).apply(log)[["seq", "time", "level_name", "text"]])

# %% [markdown]
# ## 2. Who was running on each CPU
# Each CPU's registers come from its NT_PRSTATUS note; `is_current` marks the task on the CPU.

# %%
ui.table(d.cpus[["cpu", "pid", "rip", "rsp"]])

# %%
tasks = ui.piece("tasks", lambda: d.tasks)
if tasks is not None:
    ui.table(tasks[tasks["is_current"]])

# %% [markdown]
# ## 3. The stack of the CPU that panicked
# Unwound with the kernel's own ORC tables found in the dump (no vmlinux needed).

# %%
bt = ui.piece("panic backtrace", lambda: d.panic_backtrace)
if bt is not None:
    ui.table(bt)

# %% [markdown]
# ## 4. Stuck tasks
# Tasks in uninterruptible sleep (`D`) are what hung-task panics are about.

# %%
if tasks is not None:
    stuck = TaskFilter(states=["D"]).apply(tasks)
    print(f"{len(stuck)} task(s) in D state")
    ui.table(stuck)
    for pid in stuck["pid"].head(5):
        stack = ui.piece(f"backtrace of {pid}", lambda pid=pid: d.backtrace(pid=int(pid)))
        if stack is not None:
            print(f"--- pid {pid}")
            print("\n".join(stack["text"].astype(str)))

# %%
if tasks is not None:
    display(task_states_by_cpu(tasks))

# %% [markdown]
# ## 5. Memory: was something eating it?

# %%
slab = ui.piece("slab caches", lambda: d.slab)
if slab is not None:
    display(top_slab_caches(slab))

# %%
meminfo = ui.piece("memory counters", lambda: d.meminfo)
ui.table(meminfo)

# %% [markdown]
# ## 6. The verdict: root cause
# `root_cause()` classifies the crash, names the culprit and lists the evidence it used.
# For a cascade (a hung task waiting behind a CPU that never schedules) it names the root, not the
# symptom.

# %%
rc = ui.piece("root cause", d.root_cause)
ui.result(rc)

# %%
if rc is not None:
    print("category:", rc.category)
    print("culprit: ", rc.culprit)

# %% [markdown]
# ## 7. Browse everything: the viewer
# `d.show()` opens the tabbed viewer: filter the tasks and pick one to see its stack, search the
# log, look at every stack grouped by call chain, the validation and the root cause.

# %%
viewer = d.show()
viewer
