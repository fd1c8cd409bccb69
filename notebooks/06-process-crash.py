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
# # 06 · A process crash: the core file, and the core that was never written
#
# Most crashes people meet are not kernel panics but programs killed by a signal. When the kernel
# writes a core, `kdnb.open(core)` turns it into tables: the threads and their registers, the
# signal and what its code means, the mappings, the images with their build ids, every thread's
# stack (call-frame information from the binaries, frame pointers otherwise) and a root cause in
# the same form as a kernel one. When no core appears, `kdnb.coredump_check()` says why, on this
# machine, for a running process, or from a kernel dump's memory.

# %% tags=["parameters"]
dump_path = None  # a kernel dump for the "why no core" part; None: the first bundled sample
core_path = None  # a process core; None: the bundled core of a crash in one of four threads

# %%
import tempfile
from pathlib import Path

import kdnb
import kdnb.ui as ui
from kdnb.samples import sample_core
from kdnb.ui.paths import resolve_dump

ui.init()
core = kdnb.open(core_path or sample_core("threads"))
core

# %% [markdown]
# ## Who died, of what
# `core.process` is NT_PRPSINFO, `core.signal` NT_SIGINFO: the signal, its code and, for a fault,
# the address, explained against the mappings.

# %%
print(core.process)
print(core.signal)
if core.signal.addr is not None:
    print("fault address:", core.explain(core.signal.addr))

# %%
ui.table(core.threads[["tid", "faulted", "signal", "rip", "rsp", "rbp"]])

# %% [markdown]
# ## Stacks
# The faulting thread first; `how` says how each frame was found.

# %%
ui.table(core.backtrace())

# %%
ui.table(core.backtraces())

# %% [markdown]
# ## Memory: mappings and images
# `in_core` tells whether the core holds the mapping's bytes (coredump_filter decides; file-backed
# text usually stays out, which is why the binaries help).

# %%
ui.table(core.mappings)

# %%
ui.table(core.images)

# %% [markdown]
# ## The answer

# %%
ui.result(core.root_cause(), "root cause")

# %% [markdown]
# ## The same crash as a minidump
# Crash reporters (Crashpad, Breakpad) write minidumps instead of cores: the threads' registers
# and stacks, the signal and the images' build ids, not the whole memory. `kdnb.open` reads them
# into the same tables; this one was written by Crashpad's own handler for the same crash.

# %%
from kdnb.samples import sample_minidump

md = kdnb.open(sample_minidump("threads"))
print(md.signal)
ui.table(md.backtrace())

# %%
ui.result(md.root_cause(), "root cause (minidump)")

# %% [markdown]
# ## "Segmentation fault", but no core dumped
# The same checks a person would run by hand, each with its fix: RLIMIT_CORE, core_pattern and its
# handler, suid_dumpable, coredump_filter, the target directory, the kernel's own messages.

# %%
print(kdnb.coredump_check())

# %% [markdown]
# A kernel dump holds the same settings in memory: what a process that crashed before the panic
# would have met. Here for pid 1 of the dump.

# %%
d = kdnb.open(resolve_dump(dump_path))
print(d.coredump_settings)
print(kdnb.coredump_check(dump=d, pid=1))

# %% [markdown]
# ## An offline report of the core
# `kdnb report CORE -o core.html` writes the same story as one HTML file.

# %%
from kdnb.ui.process_report import make_process_report

out = make_process_report(core.path, Path(tempfile.mkdtemp()) / "core.html")
print("written:", out, Path(out).stat().st_size, "bytes")
