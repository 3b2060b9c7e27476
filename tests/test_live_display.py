"""The live display of `detente run`: never looks hung, tells what each vote asks for."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from detente.cli import run as run_cli
from detente.events import (
    AgentSettings,
    IssueStance,
    LLMCall,
    Proposal,
    Response,
    RunHeader,
    Statement,
)
from detente.scenario import Package
from helpers import TINY, Cli, load


def _display(tmp_path: Path, embedded: bool = True) -> tuple[run_cli.LiveDisplay, io.StringIO]:
    bundle = load(TINY)
    out = io.StringIO()
    display = run_cli.LiveDisplay(bundle.scenario)
    display.live.console = Console(file=out, width=160, force_terminal=False)
    agents = {p: AgentSettings(kind="llm", model="m", local_model="x.gguf" if embedded else None)
              for p in bundle.scenario.parties}
    header = RunHeader(id="header", run_id="r", scenario_id="tiny", scenario_path=str(TINY),
                       scenario_hash="h", package_version="0", seed=0, max_rounds=4,
                       agents=agents, bounded_context=6)
    display.started(tmp_path, header)
    return display, out


def _status(display: run_cli.LiveDisplay) -> str:
    console = Console(file=io.StringIO(), width=200)
    with console.capture() as capture:
        console.print(display)
    return capture.get()


def test_elapsed_and_left_show_from_the_first_second(tmp_path: Path) -> None:
    display, _ = _display(tmp_path)
    text = _status(display)
    assert "round 0 of 4 · elapsed 0:00" in text
    # 4 openings and 4 rounds of 1 proposal + 3 responses, at 15 s a call before any ends.
    assert "left ≤ 5:00" in text


def test_a_pending_call_shows_how_long_it_has_waited(tmp_path: Path) -> None:
    display, _ = _display(tmp_path)
    display.speaking("a", "opening", 0)
    display.active["a"] = ("opening", display.active["a"][1] - 42)
    assert "waiting for: a (opening, 0:42)" in _status(display)


def test_every_vote_shows_its_objections_and_a_caucus_is_one_exchange(tmp_path: Path) -> None:
    display, out = _display(tmp_path)
    display.event(Proposal(id="r1/proposal", round=1, speaker="m",
                           package=Package(options={"x": "x1", "y": "y1"}, terms={"t": 5}),
                           rationale="r"))
    display.event(Statement(id="r1/caucus", kind="caucus", round=1, speaker="m",
                            visible_to=["m", "a"], text="psst"))
    display.event(Statement(id="r1/caucus_reply", kind="caucus_reply", round=1, speaker="a",
                            visible_to=["m", "a"], text="no"))
    display.event(Response(id="r1/response/a", round=1, speaker="a", vote="reject",
                           stances={"x": IssueStance(stance="object", wants="x2"),
                                    "y": IssueStance(stance="accept")},
                           statement="s", private_rationale="p",
                           llm=LLMCall(request_hashes=["h"], settings={})))
    text = out.getvalue()
    assert "round 1  a rejects; objects to x (wants x2)" in text
    assert text.count("private caucus") == 1 and "private caucus: m and a" in text
    assert "votes this round: a:reject" in _status(display)


def test_a_rejected_package_that_stands_after_its_refusals_is_said_to(tmp_path: Path) -> None:
    display, out = _display(tmp_path)
    package = Package(options={"x": "x1", "y": "y1"}, terms={"t": 5})
    display.event(Proposal(id="r2/proposal", round=2, speaker="m", package=package,
                           rationale="r", repeats_rejected=True))
    display.event(Proposal(id="r3/proposal", round=3, speaker="m", package=package,
                           rationale="r"))
    lines = out.getvalue().splitlines()
    assert any(line.startswith("round 2  m tables (a rejected package again") for line in lines)
    assert any(line.startswith("round 3  m tables: ") for line in lines)


def test_a_resumed_run_shows_what_is_already_logged(tmp_path: Path, cli: Cli) -> None:
    result = cli("run", TINY, "--agent", "all=scripted:linear", "--out", tmp_path)
    assert result.returncode == 0
    (run_dir,) = tmp_path.glob("tiny/*/")
    _, out = _display(run_dir)
    assert "resumed:" in out.getvalue() and "turns already logged" in out.getvalue()


def test_the_final_table_counts_votes_against_own_red_lines(tmp_path: Path, cli: Cli) -> None:
    result = cli("run", TINY, "--agent", "all=scripted:linear", "--out", tmp_path)
    assert "went against the voter's own red lines" in result.stdout
