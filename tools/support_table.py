"""Write README.md's kernel support table from a run of the per-dump tests.

    python3 tools/support_table.py [--no-write]

Runs the tests that check one dump at a time against drgn's answers, makedumpfile's dmesg and the
ground truth (tests parametrised by a corpus folder such as `k5.10-sysrq` or a sample such as
`data-k7.2-oops`), groups their outcomes by kernel series and by what they check, and replaces the
table between the `support-table` markers in README.md. Corpus tests skip when ../shared/corpus is
absent; the table then says so.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
START, END = "<!-- support-table:start -->", "<!-- support-table:end -->"
TEST_FILES = ["tests/test_kernel_corpus.py", "tests/test_views.py", "tests/test_log.py",
              "tests/test_backtrace_corpus.py", "tests/test_backtrace_samples.py", "tests/test_rootcause.py"]

# column -> the test functions whose outcome it reports
COLUMNS: dict[str, tuple[str, ...]] = {
    "symbols + types": ("test_symbols_match_proc_kallsyms", "test_symbol_count", "test_types_vs_drgn"),
    "tasks": ("test_tasks_equal_drgn", "test_tasks_ground_truth", "test_task_walk_vs_drgn"),
    "slab": ("test_slab_equals_drgn", "test_slab_kdnb_obj_cache"),
    "log": ("test_log_matches_dmesg", "test_sample_log_matches_dmesg"),
    "modules": ("test_modules_equal_proc_modules", "test_modules"),
    "sys": ("test_sys_info",),
    "stacks": ("test_panic_backtrace_matches_drgn", "test_d_state_stacks_match_drgn",
               "test_every_task_unwinds_to_the_end", "test_sample_stacks_match_call_trace"),
    "root cause": ("test_corpus_root_cause", "test_samples_root_cause"),
}
_CASE = re.compile(r"^(?P<func>test_\w+)\[(?P<param>[^\]]+)\]$")
_SERIES = re.compile(r"k(\d+\.\d+)")


def run_tests(xml_path: Path) -> None:
    """Run the per-dump tests, writing JUnit XML (failures do not stop the table)."""
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                    f"--junitxml={xml_path}", *TEST_FILES], cwd=REPO, check=False)


def outcomes(xml_path: Path) -> dict[tuple[str, str], dict[str, list[str]]]:
    """(series, column) -> outcome -> the dumps with that outcome."""
    table: dict[tuple[str, str], dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    by_func = {f: col for col, funcs in COLUMNS.items() for f in funcs}
    for case in ET.parse(xml_path).getroot().iter("testcase"):
        m = _CASE.match(case.get("name", ""))
        if not m or m["func"] not in by_func:
            continue
        series = _SERIES.search(m["param"])
        if not series:
            continue
        state = "fail" if case.find("failure") is not None or case.find("error") is not None else \
            "skip" if case.find("skipped") is not None else "pass"
        table[(series[1], by_func[m["func"]])][state].append(m["param"])
    return table


def markdown(table: dict[tuple[str, str], dict[str, list[str]]]) -> str:
    """The support table: one row per kernel series, one column per kind of check."""
    series = sorted({s for s, _c in table}, key=lambda s: tuple(int(x) for x in s.split(".")))
    lines = ["| kernel | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for s in series:
        cells = []
        for col in COLUMNS:
            got = table.get((s, col), {})
            dumps = {d for v in got.values() for d in v}
            failed, passed = set(got.get("fail", [])), set(got.get("pass", []))
            ran = {d for d in dumps if d in failed or d in passed}
            if not dumps:
                cells.append("—")
            elif failed:
                cells.append(f"FAIL ({len(ran - failed)}/{len(ran)} dumps)")
            elif passed:
                cells.append(f"yes ({len(ran)} dumps)")
            else:
                cells.append("skipped")
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_readme(table_md: str) -> None:
    """Replace the text between the markers in README.md."""
    text = README.read_text()
    if START not in text or END not in text:
        sys.exit(f"README.md has no {START} ... {END} markers")
    head, rest = text.split(START, 1)
    _old, tail = rest.split(END, 1)
    README.write_text(f"{head}{START}\n{table_md}\n{END}{tail}")


def main(argv: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        xml_path = Path(tmp) / "results.xml"
        run_tests(xml_path)
        table_md = markdown(outcomes(xml_path))
    print(table_md)
    if "--no-write" not in argv:
        write_readme(table_md)


if __name__ == "__main__":
    main(sys.argv[1:])
