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
# a piece cannot be read from this dump. -->

# %% tags=["parameters"]
dump_path = None  # the vmcore; None: the first bundled sample (kdnb.samples)
include_memory = False  # raw memory bytes go into the report only when True

# %%
import itables
from IPython.display import HTML, display

import kdnb
from kdnb.ui import sections as S
from kdnb.ui.paths import resolve_dump

itables.init_notebook_mode(all_interactive=False, connected=False)
d = kdnb.open(resolve_dump(dump_path))
display(HTML(S.css() + S.title(d) + S.toc(include_memory)))

# %%
display(HTML(S.summary(d)))

# %%
display(HTML(S.rootcause(d)))

# %%
display(HTML(S.validation(d)))

# %%
display(HTML(S.log(d)))

# %%
display(HTML(S.backtraces(d)))

# %%
display(HTML(S.tasks(d)))

# %%
display(HTML(S.slab(d)))

# %%
display(HTML(S.memory(d)))

# %%
display(HTML(S.modules(d)))

# %%
display(HTML(S.cpus(d)))

# %%
display(HTML(S.segments(d)))

# %%
if include_memory:
    display(HTML(S.raw_memory(d)))

# %%
display(HTML(S.footer(d)))
