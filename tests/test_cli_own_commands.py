"""`kdnb why|info|report` build a parser with this module's own subcommands only: the same
arguments parse the same, their help reads the same, and the other modules are not imported."""

from __future__ import annotations

import subprocess
import sys

import pytest

from kdnb import cli

LINES = [["why"], ["why", "x.vmcore", "--json"], ["info", "x.vmcore"], ["info"],
         ["report", "x.vmcore", "-o", "r.html", "--include-memory", "--journal", "j.json"]]


@pytest.mark.parametrize("argv", LINES, ids=" ".join)
def test_own_commands_parse_as_with_every_subcommand(argv: list[str]) -> None:
    full, own = cli.build_parser(), cli.build_parser(argv[0])
    assert vars(own.parse_args(argv)) == vars(full.parse_args(argv))
    assert len(own._subparsers._group_actions[0].choices) < len(full._subparsers._group_actions[0].choices)


@pytest.mark.parametrize("command", cli.OWN_COMMANDS)
def test_own_command_help_unchanged(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    texts = []
    for parser in (cli.build_parser(), cli.build_parser(command)):
        with pytest.raises(SystemExit):
            parser.parse_args([command, "--help"])
        texts.append(capsys.readouterr().out)
    assert texts[0] == texts[1] and "usage: kdnb " + command in texts[0]


def test_why_imports_no_other_command_module() -> None:
    code = ("import sys; from kdnb.cli import main; main(['why']); "
            "print(sorted(m for m in sys.modules if m.split('.')[:2] in "
            "(['kdnb', 'lab'], ['kdnb', 'fleet'], ['kdnb', 'crash_cli'])))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "Root cause:" in out and out.strip().splitlines()[-1] == "[]"
