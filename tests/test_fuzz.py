"""A short fixed-seed fuzz run over the data/ samples (the long one is benchmarks/fuzz_campaign.py).

Every case runs in a child process with a time and memory limit; the test fails on an untyped
exception, a hang, an out-of-memory failure or a crash, unless its innermost kdnb frame is in a
file listed in KNOWN_FAILURES (open failures whose owners have been told; remove a line once
its file is fixed).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fuzz import campaign
from tests.fuzz.runner import Case, outcome_table, signature_table
from tests.fuzz.samples import sample_paths

SEED = 20261202
CASES = 48
JOBS = 2
TIMEOUT = 20.0

# innermost file of a known failure -> what fails there (and the mutation that triggers it)
KNOWN_FAILURES: dict[str, str] = {
    "kdnb/kernel/kallsyms.py": "IndexError/ValueError/struct.error on patched kallsyms tables or counts",
    "kdnb/kernel/symbols.py": "OverflowError in lookup (uint64 from -1) when the notes or registers are damaged",
    "kdnb/kernel/kernel.py": "ValueError/TypeError on patched kernel values",
    "kdnb/kernel/btf.py": "IndexError in _decode/scan on patched BTF bytes",
    "kdnb/kernel/types.py": "hang/RecursionError on a self-referencing BTF type",
    "kdnb/kernel/objects.py": "TypeError on a member whose BTF type changed",
    "kdnb/kernel/unwind.py": "errors on patched stacks / ORC tables",
    "kdnb/kernel/unwind_orc.py": "errors on patched ORC tables",
    "kdnb/kernel/module_btf.py": "ValueError/TypeError on sprayed module BTF",
    "kdnb/kernel/kallsyms_scan.py": "errors on patched kallsyms tables (5.10, no VMCOREINFO kallsyms)",
    "kdnb/views/common.py": "MemoryError in online_cpus when nr_cpu_ids is patched (e.g. 0x2bc50988)",
    "kdnb/views/tasks.py": "TypeError 'cannot safely cast' in _frame on patched task fields",
    "kdnb/views/slab.py": "TypeError on patched kmem_cache fields",
    "kdnb/views/modules.py": "TypeError on patched module fields",
    "kdnb/views/backtrace.py": "TypeError/OverflowError on patched stacks or _stext",
    "kdnb/analysis/validate_kernel.py": "TypeError in check_log_printk",
    "kdnb/analysis/validate_coverage.py": "KeyError in _judge when the log layout is implausible",
    "kdnb/analysis/validate_context.py": "errors from kernel walks it calls",
    "kdnb/analysis/validate.py": "errors re-raised from the checks",
    "kdnb/analysis/rootcause.py": "errors on damaged logs/stacks",
}


def _known(where: str) -> bool:
    return where.split(":", 1)[0] in KNOWN_FAILURES


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> list[Case]:
    if not sample_paths():
        pytest.skip("no data/ samples")
    return campaign.run(Path(tmp_path_factory.mktemp("fuzz")), SEED, CASES, JOBS, TIMEOUT)


def test_fuzz_no_untyped_hang_or_oom(cases: list[Case]) -> None:
    table = outcome_table(cases)
    print(table)
    print(signature_table(cases))
    unknown = [c for c in cases if any(not _known(s.where) for s in c.bad_steps())]
    assert not unknown, f"{table}\n\nnew failures:\n{signature_table(unknown)}"


def test_fuzz_cases_ran(cases: list[Case]) -> None:
    assert len(cases) == CASES
    assert all(c.steps for c in cases)
    outcomes = {c.outcome for c in cases}
    assert outcomes & {"typed", "flagged"}, outcome_table(cases)
