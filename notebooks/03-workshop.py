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
# # 03 · Workshop: a hands-on post-mortem
#
# Exercises on the bundled sample dumps. Each exercise has a cell for you and a **hidden
# solution** cell below it (collapsed; click the `…` to open it). Try first!
#
# Useful: `d.log`, `d.tasks`, `d.slab`, `d.modules`, `d.cpus`, `d.backtrace(pid=…)`,
# `d.root_cause()`, and the filters in `kdnb.ui.filters`.

# %% tags=["parameters"]
dump_path = None  # None: the first bundled sample (kdnb.samples)

# %%
import pandas as pd

import kdnb
import kdnb.ui as ui

ui.init()
print("bundled samples:", ui.sample_paths())
d = kdnb.open(ui.resolve_dump(dump_path))
d

# %% [markdown]
# ## Exercise 1 — Which kernel, and when did it die?
# Find the kernel release and how long the machine had been up (the time of the last log line).

# %%
# your answer here

# %% tags=["solution"] jupyter={"source_hidden": true}
release = d.vmcoreinfo.get("OSRELEASE")
uptime = d.log["time"].max()
print(release, uptime)

# %% [markdown]
# ## Exercise 2 — The panic line
# Print the log line that says why the kernel died. Hint: search `d.log["text"]`.

# %%
# your answer here

# %% tags=["solution"] jupyter={"source_hidden": true}
text = d.log["text"].astype(str)
decisive = text[text.str.contains("Kernel panic|BUG:|Oops", regex=True)]
print(decisive.tolist())

# %% [markdown]
# ## Exercise 3 — Find the task that blocked the system
# Which tasks were in uninterruptible sleep (state `D`), and what were they waiting in?

# %%
# your answer here

# %% tags=["solution"] jupyter={"source_hidden": true}
tasks = ui.piece("tasks", lambda: d.tasks)
if tasks is not None:
    blocked = tasks[tasks["state"].astype(str) == "D"]
    print(blocked[["pid", "comm", "cpu", "last_run"]] if len(blocked) else "no task in D state")
    for pid in blocked["pid"]:
        bt = ui.piece(f"backtrace of {pid}", lambda pid=pid: d.backtrace(pid=int(pid)))
        if bt is not None:
            print(pid, " <- ".join(bt["function"].astype(str).head(6)))

# %% [markdown]
# ## Exercise 4 — Which slab cache grew?
# List the five slab caches holding the most memory. Is one of them from an out-of-tree module?

# %%
# your answer here

# %% tags=["solution"] jupyter={"source_hidden": true}
slab = ui.piece("slab caches", lambda: d.slab)
if slab is not None:
    top = slab.sort_values("total_bytes", ascending=False).head(5)
    print(top[["name", "object_size", "active_objs", "total_bytes"]].to_string(index=False))
    print("module caches:", slab[slab["name"].astype(str).str.startswith("kdnb")]["name"].tolist())

# %% [markdown]
# ## Exercise 5 — Tainted by whom?
# Which loaded modules taint the kernel (out-of-tree `O`, unsigned `E`)?

# %%
# your answer here

# %% tags=["solution"] jupyter={"source_hidden": true}
mods = ui.piece("modules", lambda: d.modules)
if mods is not None:
    print(mods[mods["taints"].astype(str) != ""][["name", "taints", "base", "size"]])

# %% [markdown]
# ## Exercise 6 — Check your diagnosis
# Compare your answer with `d.root_cause()`.

# %%
# your answer here

# %% tags=["solution"] jupyter={"source_hidden": true}
rc = ui.piece("root cause", d.root_cause)
rc
