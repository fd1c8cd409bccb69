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
# # 05 · Fleet triage: many dumps, which bugs?
#
# A team that runs many machines does not read one dump at a time. It asks *which crashes are new,
# which are the same bug, which kernel or module brings them*. `kdnb.triage(paths)` gives one row
# per dump, computed on Dask, one task per dump. `kdnb.buckets(df)` groups the rows by crash
# signature: a syzbot-style title whose guilty frame is chosen past a list of generic frames, then
# hashed. Nothing in it depends on KASLR, the build, the CPU or the pid.
#
# The fleet here is made from lab dumps: every bundled sample, the folders in `more` when they
# exist, and a few files that are not good dumps (a truncated copy, a text file, an empty file).

# %% tags=["parameters"]
dump_path = None  # a dump (or folder) to triage with the bad files; None: the samples + `more`
more = ["../../shared/corpus"]  # further folders of dumps, used when present (dump_path None)
workers = 2  # local Dask worker processes (0: compute in this process)

# %%
import os
import tempfile
from pathlib import Path

import pandas as pd

import kdnb
import kdnb.ui as ui
from kdnb.fleet import write_report
from kdnb.fleet.signature import GENERIC_FRAMES

ui.init()

fleet_dir = Path(tempfile.mkdtemp(prefix="kdnb-fleet-"))
sources = [Path(dump_path)] if dump_path else list(kdnb.samples()["path"])
for i, src in enumerate(sources):  # one "machine" per dump: links, no copies
    (fleet_dir / f"host{i:02d}").mkdir()
    (fleet_dir / f"host{i:02d}" / "vmcore").symlink_to(src.resolve())
bad = fleet_dir / "bad"
bad.mkdir()
smallest = min(kdnb.samples()["path"], key=lambda p: p.stat().st_size)
data = smallest.read_bytes()
(bad / "vmcore.truncated").write_bytes(data[: len(data) * 3 // 10])
(bad / "vmcore.txt").write_text("console log, not a dump\n")
(bad / "vmcore.empty").write_bytes(b"")
paths = [str(fleet_dir)] + ([m for m in more if os.path.isdir(m)] if not dump_path else [])
paths

# %% [markdown]
# ## 1. One row per dump
# A LocalCluster with `workers` worker processes opens one dump at a time each. The progress bar
# is Dask's. With `client=` (or `kdnb triage --scheduler ADDRESS`) an existing cluster works
# instead, when its workers see the same paths. Files that cannot be read are rows with an
# `error`; they never stop the run.

# %%
cache = fleet_dir / "triage-cache.parquet"  # a fresh cache: every dump is computed now
df = kdnb.triage(paths, workers=workers, cache=cache)
ui.table(df[["path", "release", "verdict", "category", "title", "comm", "seconds", "error"]])

# %% [markdown]
# ## 2. Buckets: the same bug on every kernel
# The same scenario on two kernels (a hung task in 5.10 and 6.12, the module's NULL write in 6.1
# and 7.2) gets one signature, so it is one bucket. The `kernels` column says where it shows.

# %%
b = kdnb.buckets(df)
ui.table(b[["count", "title", "kernels", "modules", "first_crash", "last_crash", "example"]])

# %% [markdown]
# ## 3. How a title is made
# The title comes from the root cause's category and culprit. When the culprit is generic code
# (a lock, `memcpy`, the panic path), the printed call trace gives the first frame past these.
# Compiler clone suffixes (`.isra.0`, `.cold`, `.constprop.N`, `.part.N`) and offsets are dropped.

# %%
print(f"{len(GENERIC_FRAMES)} generic frame prefixes, e.g.:")
for prefix, why in list(GENERIC_FRAMES.items())[-8:]:
    print(f"  {prefix:<28} {why}")
ui.table(df.loc[df["error"].isna(), ["title", "guilty_function", "guilty_module", "frames",
                                     "signature"]])

# %% [markdown]
# ## 4. Which kernels, which modules
# Crashes per kernel and category, and the modules the guilty frames live in with their taints
# (O: out-of-tree, E: unsigned).

# %%
ok = df[df["error"].isna()]
ui.table(pd.crosstab(ok["release"], ok["category"]).reset_index())

# %%
ui.table(ok.groupby(["guilty_module", "taints"], dropna=False).size().rename("dumps")
         .reset_index())

# %% [markdown]
# ## 5. What could not be triaged

# %%
ui.table(df.loc[df["error"].notna(), ["path", "verdict", "error"]])

# %% [markdown]
# ## 6. The nightly re-run and the fleet report
# With the cache (on by default), the rows are kept per dump in Parquet, keyed by path, size,
# mtime and a hash of the headers. A second run computes only new or changed dumps. The report is
# one offline HTML file: buckets, crashes over time, kernels × categories, modules and taints, new
# buckets since a date, and the `kdnb report` command of each bucket's example dump.

# %%
again = kdnb.triage(paths, workers=workers, cache=cache)  # nothing new: no cluster is started
print(again.attrs["kdnb"]["computed"], "dumps computed again,",
      again.attrs["kdnb"]["from_cache"], "from the cache")
since = (ok["crash_time"].max() - pd.Timedelta(days=1)).date() if len(ok) else None
report = write_report(df, fleet_dir / "fleet.html", since=since)
print(report, os.path.getsize(report), "bytes")
