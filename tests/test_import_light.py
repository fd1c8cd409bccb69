"""`import kdnb` and `import kdnb.cli` load no pandas (nor pyarrow, numpy): a command that needs
no DataFrame (`kdnb --version`, `kdnb lab`, `kdnb readiness` on text) starts without ~0.5 s of
imports; the names that need more still resolve on first use."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout


def test_import_kdnb_loads_no_pandas() -> None:
    out = _run("import sys, kdnb, kdnb.cli; print(sorted({m.split('.')[0] for m in sys.modules} & "
               "{'pandas', 'pyarrow', 'numpy'}))")
    assert out.strip() == "[]"


def test_lazy_names_resolve() -> None:
    out = _run("import kdnb; from kdnb.analysis.readiness import readiness; "
               "from kdnb.analysis.coredump_check import coredump_check; "
               "print(kdnb.readiness is readiness, kdnb.coredump_check is coredump_check, "
               "'readiness' in dir(kdnb) or 'readiness' in kdnb.__all__)")
    assert out.split() == ["True", "True", "True"]


def test_check_table_text_without_pandas() -> None:
    out = _run("import sys; from kdnb.analysis.checks import Check, CheckTable; "
               "print('pandas' in sys.modules)")
    assert out.strip() == "False"


def test_kdump_open_loads_no_elf_or_core_reader() -> None:
    """Opening a kdump-format vmcore and reading its tasks loads neither pyelftools (the ELF
    vmcore and vmlinux readers load it) nor the process-core reader (open only sniffs)."""
    dump = REPO / "data" / "k6.1-oops" / "vmcore.kdump-lzo"
    out = _run(f"import sys, kdnb; d = kdnb.open({str(dump)!r}); n = len(d.tasks); "
               "print(n > 0, 'elftools' in sys.modules, 'kdnb.process.core' in sys.modules)")
    assert out.split() == ["True", "False", "False"]


def test_process_names_resolve_lazily() -> None:
    out = _run("import sys, kdnb.process as p; before = 'kdnb.process.core' in sys.modules; "
               "from kdnb.process.core import Core; from kdnb.process.images import Binaries; "
               "print(before, p.Core is Core, p.Binaries is Binaries, 'open_process' in p.__all__)")
    assert out.split() == ["False", "True", "True", "True"]
