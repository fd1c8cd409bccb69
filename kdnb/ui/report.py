"""`kdnb report`: execute the report notebook with nbclient, render it with nbconvert through the
kdnb_report template into ONE offline HTML file (no code, no network resource)."""

from __future__ import annotations

import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Callable
from pathlib import Path

from ..errors import KdnbError
from .paths import resolve_dump

TEMPLATES = Path(__file__).resolve().parent / "templates"
REPORT_NOTEBOOK = TEMPLATES / "report.py"
TEMPLATE_NAME = "kdnb_report"
KERNEL = "python3"
# A reference that would make a browser fetch something from the network.
REMOTE_RE = re.compile(r"""(?:src|href|action|poster|data)\s*=\s*["']?\s*(?:https?:)?//"""
                       r"""|url\(\s*["']?\s*(?:https?:)?//|@import\s+["']?(?:https?:)?//"""
                       r"""|import\s*\(?\s*["'](?:https?:)?//""", re.I)


@dataclass
class Report:
    """What `make_report` made: the file, its size and how long each step took."""

    path: Path
    dump: str
    seconds: float
    execute_seconds: float
    render_seconds: float

    @property
    def size(self) -> int:
        return self.path.stat().st_size

    def __str__(self) -> str:
        return (f"{self.path} ({self.size / 1024:.0f} KiB) from {self.dump} in {self.seconds:.1f} s "
                f"(execute {self.execute_seconds:.1f} s, render {self.render_seconds:.1f} s)")


def _skip_iri_grammar() -> None:
    """jsonschema (under nbformat) imports rfc3987_syntax when it is installed, to check IRI
    formats no notebook schema uses; building that grammar costs ~2.5 s per process. Mark it
    absent unless something in this process loaded it already."""
    sys.modules.setdefault("rfc3987_syntax", None)


def report_notebook():
    """The report notebook (jupytext percent file shipped with the package) as a NotebookNode."""
    _skip_iri_grammar()
    import jupytext

    nb = jupytext.read(REPORT_NOTEBOOK)
    nb.metadata["kernelspec"] = {"name": KERNEL, "display_name": "Python 3", "language": "python"}
    nb.metadata.pop("jupytext", None)
    return nb


def _clean(nb) -> None:
    """Drop what must not reach a report: stderr noise, widget state, execution bookkeeping."""
    nb.metadata.pop("widgets", None)
    nb.metadata.pop("papermill", None)
    for cell in nb.cells:
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs
                            if not (o.get("output_type") == "stream" and o.get("name") == "stderr")]


def render_html(nb, title: str = "kdnb report") -> str:
    """nbconvert through the kdnb_report template, code cells and prompts excluded."""
    _skip_iri_grammar()
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name=TEMPLATE_NAME, extra_template_basedirs=[str(TEMPLATES)])
    exporter.exclude_input = True
    exporter.exclude_input_prompt = True
    exporter.exclude_output_prompt = True
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": title}})
    return body


_ITABLES_LINK_RE = re.compile(r"""<a href=["']?https://itables\.org[^>]*>(.*?)</a>""", re.S)
_XMLNS_RE = re.compile(r"""\s+xmlns(?::\w+)?=["']https?://www\.w3\.org/[^"']*["']""")


def offline_html(text: str) -> str:
    """Remove the remaining outbound links: itables' help/logo anchors (their content stays) and
    the SVG namespace attributes (an HTML parser does not need them)."""
    text = _ITABLES_LINK_RE.sub(lambda m: m.group(1), text)
    return _XMLNS_RE.sub("", text)


def remote_references(text: str) -> list[str]:
    """Every place in an HTML text that would fetch from the network (should be empty)."""
    return [text[max(0, m.start() - 40):m.end() + 40] for m in REMOTE_RE.finditer(text)]


def _progress_label(cell) -> str | None:
    """The `# kdnb: <what>` first line of a report cell, if any."""
    first = cell.source.lstrip().split("\n", 1)[0]
    return first[len("# kdnb:"):].strip() if first.startswith("# kdnb:") else None


def with_parameters(nb, values: dict):
    """The notebook with a cell setting `values` right after its `parameters` cell (what
    papermill injects; values are str/bool/int/None, written as Python literals)."""
    import nbformat

    params = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    if not params:
        raise KdnbError(f"{REPORT_NOTEBOOK}: no cell tagged 'parameters'")
    source = "\n".join(f"{k} = {v!r}" for k, v in values.items())
    cell = nbformat.v4.new_code_cell(source=source, metadata={"tags": ["injected-parameters"]})
    nb.cells.insert(params[0] + 1, cell)
    return nb


def execute(dump: str, include_memory: bool = False, timeout: int = 600,
            progress: Callable[[str], None] | None = None):
    """Run the report notebook on `dump` (nbclient); return the
    executed notebook. `progress(line)` is called as each section starts. The kernel's own
    stderr (ipykernel's start-up chatter) is kept out of the terminal and only shown when the
    notebook fails."""
    _skip_iri_grammar()
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = with_parameters(report_notebook(), {"dump_path": dump, "include_memory": include_memory})
    labels = [_progress_label(c) if c.cell_type == "code" else None for c in nb.cells]
    total = sum(1 for x in labels if x)
    done = [0]

    def started(cell, cell_index: int) -> None:
        label = labels[cell_index] if cell_index < len(labels) else None
        if label and progress is not None:
            done[0] += 1
            progress(f"[{done[0]}/{total}] {label}")

    pkg_root = str(Path(__file__).resolve().parents[2])
    old = os.environ.get("PYTHONPATH")
    # The kernel must import this very kdnb even when it is not installed.
    os.environ["PYTHONPATH"] = pkg_root + (os.pathsep + old if old else "")
    try:
        with tempfile.TemporaryDirectory(prefix="kdnb-report-") as tmp, \
                open(Path(tmp) / "kernel.stderr", "w+b") as err:
            client = NotebookClient(nb, timeout=timeout, kernel_name=KERNEL,
                                    resources={"metadata": {"path": tmp}}, on_cell_start=started,
                                    shutdown_kernel="immediate")
            try:
                client.execute(stderr=err, stdout=err)
            except CellExecutionError as exc:
                raise KdnbError(f"report notebook failed on {dump}: {exc.ename}: {exc.evalue}") from exc
            except RuntimeError as exc:  # the kernel died or never started
                err.seek(0)
                tail = err.read().decode("utf-8", "replace").strip().splitlines()[-3:]
                raise KdnbError(f"report kernel failed on {dump}: {exc}; {' / '.join(tail)}") from exc
            return nb
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


def check_dump(path: str) -> None:
    """Raise a KdnbError now (before any kernel starts) when `path` is not a readable dump."""
    from ..dump import open_dump

    open_dump(path).close()


def make_report(path: "str | os.PathLike | None" = None, out: "str | os.PathLike" = "report.html",
                include_memory: bool = False, timeout: int = 600,
                progress: Callable[[str], None] | None = None) -> Report:
    """Write an offline HTML report on the dump at `path` (None: the first bundled sample);
    `progress(line)` hears about each section as it is written."""
    t0 = time.perf_counter()
    dump = os.path.abspath(resolve_dump(path))
    check_dump(dump)
    nb = execute(dump, include_memory=include_memory, timeout=timeout, progress=progress)
    t1 = time.perf_counter()
    if progress is not None:
        progress("rendering the HTML")
    _clean(nb)
    text = render_html(nb, title=f"kdnb report: {os.path.basename(dump)}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = offline_html(text)
    out.write_text(text, encoding="utf-8")
    t2 = time.perf_counter()
    return Report(path=out, dump=dump, seconds=t2 - t0, execute_seconds=t1 - t0,
                  render_seconds=t2 - t1)
