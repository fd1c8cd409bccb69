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
# # 01 · Capture validation: can this dump be trusted?
#
# Before anyone trusts an analysis they must know whether the capture is **complete and usable**,
# and before the next crash, whether the machine will **capture one at all**. This notebook walks
# through both: `Dump.validate()` for the dump, `kdnb.readiness()` for a live machine.
#
# Run it on your own dump by changing `dump_path` below (or with papermill:
# `papermill 01-capture-validation.ipynb out.ipynb -p dump_path /var/crash/vmcore`).

# %% tags=["parameters"]
dump_path = None  # the vmcore to check; None: the first bundled sample (kdnb.samples)
readiness_root = "/"  # the filesystem root whose kdump setup is checked

# %%
import kdnb
import kdnb.ui as ui

ui.init()  # searchable tables that work offline
d = kdnb.open(ui.resolve_dump(dump_path))
d

# %% [markdown]
# ## 1. What the file is
# The format is detected from the file's magic, not its name. The header tells how it was made:
# makedumpfile's *dump level* says which kinds of pages were left out on purpose.

# %%
print("format:", d.format)
for key in ("compression", "dump_level", "incomplete", "truncated", "nr_cpus"):
    if key in d.header:
        print(f"{key}: {d.header[key]}")
print("release:", d.vmcoreinfo.get("OSRELEASE"))

# %% [markdown]
# ## 2. Coverage: which physical memory is in the dump
# Every physical range is *present*, *excluded* (filtered on purpose), *truncated* (the file ends
# early) or *lost*. A dump holding under a quarter of RAM is partial.

# %%
seg = d.segments
print(seg.groupby("state", observed=True)["pages"].sum().to_string())
ui.table(seg)

# %% [markdown]
# ## 3. Every check, explained
# `validate()` never stops at the first problem. Each row says what was checked, what it found,
# and what it limits (`consequence`). The verdict is `usable`, `degraded` or `unusable`.

# %%
v = ui.piece("capture validation", d.validate)
ui.result(v)

# %% [markdown]
# The checks that did not pass, and what to fix:

# %%
if v is not None:
    bad = v.checks[v.checks["status"].astype(str).isin(["warn", "fail"])]
    print(f"verdict: {v.verdict}; {len(bad)} check(s) need attention")
    for row in bad.itertuples():
        print(f"- [{row.status}] {row.check}: {row.detail}\n    consequence: {row.consequence}")

# %% [markdown]
# ## 4. Did the key kernel structures read completely?
# A wrong filter (a makedumpfile older than the kernel) can drop in-use kernel memory. The views
# then return every row they could read and mark the gap in `df.attrs["kdnb"]`.

# %%
for name in ("tasks", "slab", "modules", "log"):
    df = ui.piece(name, lambda name=name: getattr(d, name))
    if df is not None:
        gap = df.attrs.get("kdnb", {}).get("incomplete")
        print(f"{name:8} {len(df):6} rows   {'INCOMPLETE: ' + str(gap)[:120] if gap else 'complete'}")

# %% [markdown]
# ## 5. Is *this* machine ready to capture the next crash?
# `kdnb.readiness(root)` checks the kdump setup a guide walks through: kernel config,
# `crashkernel=` reservation, a loaded capture kernel, the capture service, makedumpfile's version,
# free space, and process core dumps. (On a notebook server this checks the server itself.)

# %%
r = ui.piece("kdump readiness", lambda: kdnb.readiness(readiness_root))
ui.result(r)

# %%
if r is not None and hasattr(r, "checks"):
    todo = r.checks[r.checks["status"].astype(str).isin(["warn", "fail"])]
    for row in todo.itertuples():
        print(f"- [{row.status}] {row.check}: {row.detail}")
