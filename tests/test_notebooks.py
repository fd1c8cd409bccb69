"""Every notebook runs top to bottom on every bundled sample (papermill + the python3 kernel that
ipykernel installs), and each .ipynb is the output-free twin of its jupytext .py file."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import REPO
from .test_ui import sample_dumps

NOTEBOOKS = sorted((REPO / "notebooks").glob("0*.ipynb"))
pytest.importorskip("papermill")
pytest.importorskip("jupytext")


def _kernel_or_skip() -> None:
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec("python3")
    except NoSuchKernel:
        pytest.skip("no python3 Jupyter kernel (install ipykernel)")


def test_notebooks_exist():
    names = {p.stem for p in NOTEBOOKS}
    assert {"01-capture-validation", "02-panic-root-cause", "03-workshop"} <= names


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_paired_and_output_free(nb: Path):
    import jupytext
    import nbformat

    ipynb = nbformat.read(nb, as_version=4)
    for cell in ipynb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, f"{nb.name} has outputs"
    py = jupytext.read(nb.with_suffix(".py"))
    assert [c.source for c in py.cells] == [c.source for c in ipynb.cells], \
        f"{nb.name} and its .py differ: run `jupytext --sync {nb.name}`"
    params = [c for c in ipynb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and "dump_path = None" in params[0].source


def test_workshop_solutions_hidden():
    import nbformat

    nb = nbformat.read(REPO / "notebooks" / "03-workshop.ipynb", as_version=4)
    solutions = [c for c in nb.cells if "solution" in c.metadata.get("tags", [])]
    assert len(solutions) >= 5
    assert all(c.metadata.get("jupyter", {}).get("source_hidden") for c in solutions)


@pytest.mark.parametrize("dump", sample_dumps(), ids=lambda p: p.parent.name)
@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_on_sample(nb: Path, dump: Path, tmp_path: Path):
    import papermill

    _kernel_or_skip()
    out = tmp_path / nb.name
    papermill.execute_notebook(str(nb), str(out), parameters={"dump_path": str(dump)},
                               kernel_name="python3", progress_bar=False, cwd=str(nb.parent),
                               execution_timeout=300)
    import nbformat

    done = nbformat.read(out, as_version=4)
    errors = [o for c in done.cells if c.cell_type == "code" for o in c.outputs
              if o.get("output_type") == "error"]
    assert not errors


def test_default_parameter_is_the_bundled_sample():
    from kdnb.ui.paths import resolve_dump, sample_paths

    if not sample_paths():
        pytest.skip("no bundled sample")
    assert resolve_dump(None) == sample_paths()[0]
    assert Path(resolve_dump(None)).resolve().is_relative_to((REPO / "data").resolve())
