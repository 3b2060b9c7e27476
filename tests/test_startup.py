"""An instant command line: commands import their modules when used, and the light ones never
load langgraph, openai, numpy, scipy or matplotlib.

How fast they start is measured by bench/bench_startup.py, not here; these tests hold the
structure that makes it fast: the command list (`detente --help`) comes from
`detente.cli._app.COMMANDS` without importing any command, that list says what each command's
own help says, and a subprocess shows which heavy modules a command really imported.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from detente.cli._app import COMMANDS, app, load_command
from helpers import ROOT, TINY, Cli

HEAVY = ("langgraph", "langchain_core", "openai", "numpy", "scipy", "matplotlib")

PROBE = """
import json, sys
args, heavy = json.loads(sys.argv[1]), json.loads(sys.argv[2])
from detente.cli import main
sys.argv = ["detente", *args]
try:
    main()
except SystemExit:
    pass
loaded = sorted({m.split(".")[0] for m in sys.modules} & set(heavy))
print("\\nIMPORTED " + json.dumps(loaded))
"""


def imported_heavy(*args: str | Path) -> list[str]:
    """The heavy modules `detente ARGS` imported, run in a fresh interpreter."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps([str(a) for a in args]), json.dumps(HEAVY)],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    marker = [line for line in done.stdout.splitlines() if line.startswith("IMPORTED ")]
    assert marker, done.stderr
    loaded: list[str] = json.loads(marker[-1].removeprefix("IMPORTED "))
    return loaded


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import detente

    folder = detente.run(TINY, agents="all=scripted:boulware",
                         out=tmp_path_factory.mktemp("runs"))
    assert folder.result.status in ("deal", "no_deal", "deadlock")
    return folder.path


def test_the_command_list_says_what_each_command_says() -> None:
    for name, (_, summary) in COMMANDS.items():
        command = load_command(name)
        assert command.name == name
        assert command.help is not None
        assert command.help.split("\n")[0] == summary, name


def test_every_command_is_in_the_command_list() -> None:
    for name in COMMANDS:
        load_command(name)
    registered = {info.name or info.callback.__name__.replace("_", "-")
                  for info in app.registered_commands if info.callback is not None}
    registered |= {group.name for group in app.registered_groups}  # `cache stats|clear`
    assert registered == set(COMMANDS)


def test_help_lists_every_command(cli: Cli) -> None:
    done = cli("--help")
    assert done.returncode == 0
    for name in COMMANDS:
        assert f" {name} " in done.stdout, name


@pytest.mark.parametrize("args", [["--help"], ["compare", "--help"], ["run", "--help"],
                                  ["sweep", "--help"]], ids=" ".join)
def test_help_imports_nothing_heavy(args: list[str]) -> None:
    assert imported_heavy(*args) == []


def test_show_imports_nothing_heavy(finished_run: Path) -> None:
    assert imported_heavy("show", finished_run) == []


def test_show_still_scores_a_run_without_its_result(finished_run: Path, tmp_path: Path,
                                                    cli: Cli) -> None:
    """Without result.json, show scores the run from its events (the slow path stays right)."""
    import shutil

    copy = tmp_path / finished_run.name
    shutil.copytree(finished_run, copy)
    (copy / "result.json").unlink()
    done = cli("show", copy)
    assert done.returncode == 0, done.stderr
    assert "Scores" in done.stdout
    assert not (copy / "result.json").exists()  # show writes nothing
