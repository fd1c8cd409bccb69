# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# <!-- kdnb report notebook: `kdnb report` executes it with papermill and renders it through the
# kdnb_report nbconvert template (code cells hidden). Every section degrades to a short note when
# a piece cannot be read from this dump; the `# kdnb:` comment of a cell is the progress line
# `kdnb report` prints while it runs. This file is read-only from `kdnb notebook`. -->

# %% tags=["parameters"]
dump_path = None  # the vmcore; None: the first bundled sample (kdnb.samples)
include_memory = False  # raw memory bytes go into the report only when True

# %%
# kdnb: opening the dump
import itables
from IPython.display import HTML, display

import kdnb
from kdnb.ui import sections as S
from kdnb.ui import sections_data as D
from kdnb.ui.paths import resolve_dump

itables.init_notebook_mode(all_interactive=False, connected=False)
d = kdnb.open(resolve_dump(dump_path))
display(HTML(S.css() + S.title(d) + S.toc(include_memory)))

# %%
# kdnb: validating the capture and finding the root cause
display(HTML(S.verdict(d)))

# %%
# kdnb: the system
display(HTML(S.system(d)))

# %%
# kdnb: the last seconds
display(HTML(S.timeline(d)))

# %%
# kdnb: what each CPU was doing
display(HTML(S.cpus(d)))

# %%
# kdnb: the evidence
display(HTML(S.evidence(d)))

# %%
# kdnb: every task's stack
display(HTML(D.stacks(d)))

# %%
# kdnb: the kernel log
display(HTML(D.log(d)))

# %%
# kdnb: memory
display(HTML(D.memory(d)))

# %%
# kdnb: modules
display(HTML(D.modules(d)))

# %%
# kdnb: the capture validation
display(HTML(S.validation(d)))

# %%
# kdnb: tasks
display(HTML(D.tasks(d)))

# %%
# kdnb: slab caches
display(HTML(D.slab(d)))

# %%
# kdnb: CPU registers
display(HTML(D.registers(d)))

# %%
# kdnb: dump coverage
display(HTML(D.segments(d)))

# %%
# kdnb: raw memory
if include_memory:
    display(HTML(D.raw_memory(d)))

# %%
display(HTML(S.footer(d)))
