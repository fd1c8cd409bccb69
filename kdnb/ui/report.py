"""`kdnb report`: execute the report notebook with papermill, render it with nbconvert through the
kdnb_report template into ONE offline HTML file (no code, no network resource)."""

from __future__ import annotations

import os
import re
import tempfile
import time
from dataclasses import dataclass
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


def report_notebook():
    """The report notebook (jupytext percent file shipped with the package) as a NotebookNode."""
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


def execute(dump: str, include_memory: bool = False, timeout: int = 600):
    """Run the report notebook on `dump` with papermill; return the executed notebook."""
    import nbformat
    import papermill

    nb = report_notebook()
    pkg_root = str(Path(__file__).resolve().parents[2])
    old = os.environ.get("PYTHONPATH")
    # The kernel must import this very kdnb even when it is not installed.
    os.environ["PYTHONPATH"] = pkg_root + (os.pathsep + old if old else "")
    try:
        with tempfile.TemporaryDirectory(prefix="kdnb-report-") as tmp:
            src, dst = Path(tmp) / "report.ipynb", Path(tmp) / "report.out.ipynb"
            nbformat.write(nb, src)
            try:
                papermill.execute_notebook(
                    str(src), str(dst), parameters={"dump_path": dump, "include_memory": include_memory},
                    kernel_name=KERNEL, progress_bar=False, log_output=False, cwd=tmp,
                    execution_timeout=timeout)
            except papermill.PapermillExecutionError as exc:
                raise KdnbError(f"report notebook failed on {dump}: {exc.ename}: {exc.evalue}") from exc
            return nbformat.read(dst, as_version=4)
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


def make_report(path: "str | os.PathLike | None" = None, out: "str | os.PathLike" = "report.html",
                include_memory: bool = False, timeout: int = 600) -> Report:
    """Write an offline HTML report on the dump at `path` (None: the first bundled sample)."""
    t0 = time.perf_counter()
    dump = os.path.abspath(resolve_dump(path))
    if not os.path.exists(dump):
        raise KdnbError(f"{dump}: no such file")
    nb = execute(dump, include_memory=include_memory, timeout=timeout)
    t1 = time.perf_counter()
    _clean(nb)
    text = render_html(nb, title=f"kdnb report: {os.path.basename(dump)}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = offline_html(text)
    out.write_text(text, encoding="utf-8")
    t2 = time.perf_counter()
    return Report(path=out, dump=dump, seconds=t2 - t0, execute_seconds=t1 - t0,
                  render_seconds=t2 - t1)
