"""`detente.diff` and `detente diff`: two runs aligned by round and issue.

Two real runs of the tiny scenario, played in-process by scripted agents (conceders reach a deal,
boulwares do not), are diffed; what the diff says is checked against their event logs. Copies of a
run with edited logs give runs that stop early, belong to another scenario, or share no issue.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from detente.agents import make_agent
from detente.agents.base import (
    CaucusContent,
    Context,
    OpeningContent,
    ProposalContent,
    ResponseContent,
    Turn,
)
from detente.diff import RunDiff, diff_runs
from detente.errors import InputError
from detente.events import AgentSettings, IssueStance
from detente.loading import ScenarioBundle, load_bundle
from detente.runner import RunPlan, start_run
from detente.scenario import Package
from helpers import TINY, events_of
from helpers import CliResult as Result

# Tiny scenario packages (x, y, t): the mediator tables P1, P2, then P3 in run A (where b gives
# in and the deal breaks b's red line t <= 5) and P3b, P4 in run B (where b never gives in).
P1 = Package(options={"x": "x2", "y": "y1"}, terms={"t": 10.0})
P2 = Package(options={"x": "x2", "y": "y1"}, terms={"t": 5.0})
P3 = Package(options={"x": "x2", "y": "y2"}, terms={"t": 10.0})
P3B = Package(options={"x": "x2", "y": "y1"}, terms={"t": 0.0})
P4 = Package(options={"x": "x1", "y": "y1"}, terms={"t": 0.0})


class ScriptAgent:
    """Tables `tables[round]` (mediator); votes accept from round `accept_from` on (None: never),
    objecting to t (wanting 0) before that."""

    def __init__(self, party: str, tables: dict[int, Package] | None = None,
                 accept_from: int | None = 1) -> None:
        self.party = party
        self.settings = AgentSettings(kind="scripted", strategy="script")
        self.tables = tables or {}
        self.accept_from = accept_from

    def opening(self, ctx: Context) -> Turn[OpeningContent]:
        return Turn(OpeningContent(f"{self.party} opens"))

    def propose(self, ctx: Context) -> Turn[ProposalContent]:
        return Turn(ProposalContent(package=self.tables[ctx.round], rationale="scripted"))

    def respond(self, ctx: Context) -> Turn[ResponseContent]:
        accept = self.accept_from is not None and ctx.round >= self.accept_from
        stances = {"t": IssueStance(stance="accept" if accept else "object",
                                    wants=None if accept else 0.0)}
        return Turn(ResponseContent(vote="accept" if accept else "reject", stances=stances,
                                    statement="", private_rationale=""))

    def caucus_reply(self, ctx: Context, message: str) -> Turn[CaucusContent]:
        return Turn(CaucusContent("noted"))


def _run(bundle: ScenarioBundle, agents: dict[str, Any], out: Path) -> Path:
    plan = RunPlan(bundle=bundle, agents={p: a.settings for p, a in agents.items()},
                   out_root=out)
    return start_run(plan, lambda party, _s, _b: agents[party]).run_dir


@dataclass(frozen=True)
class Runs:
    deal: Path
    """Run A: b accepts P3 in round 3; a deal that breaks b's red line."""
    no_deal: Path
    """Run B: b never accepts; no deal after 4 rounds."""
    conceder: Path
    boulware: Path


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    bundle = load_bundle(TINY)
    out = tmp_path_factory.mktemp("runs")
    deal = _run(bundle, {"a": ScriptAgent("a"), "b": ScriptAgent("b", accept_from=3),
                         "c": ScriptAgent("c"),
                         "m": ScriptAgent("m", tables={1: P1, 2: P2, 3: P3})}, out / "deal")
    no_deal = _run(bundle, {"a": ScriptAgent("a"), "b": ScriptAgent("b", accept_from=None),
                            "c": ScriptAgent("c"),
                            "m": ScriptAgent("m", tables={1: P1, 2: P2, 3: P3B, 4: P4})},
                   out / "no_deal")
    scripted = []
    for strategy in ("conceder", "boulware"):
        agents = {p: AgentSettings(kind="scripted",
                                   strategy="nash" if p == bundle.scenario.mediator else strategy)
                  for p in bundle.scenario.parties}
        plan = RunPlan(bundle=bundle, agents=agents, seed=0, out_root=out / strategy)
        scripted.append(start_run(plan, make_agent).run_dir)
    return Runs(deal, no_deal, *scripted)


def _by_round(run_dir: Path) -> dict[int, dict[str, Any]]:
    """Per round, from the raw log: the table and each party's (vote, objections)."""
    rounds: dict[int, dict[str, Any]] = {}
    for e in events_of(run_dir):
        if e["type"] == "proposal":
            rounds.setdefault(e["round"], {})["table"] = {**e["package"]["options"],
                                                          **e["package"]["terms"]}
            rounds[e["round"]]["proposer"] = e["speaker"]
        elif e["type"] == "response":
            objections = {k: s["wants"] for k, s in e["stances"].items()
                          if s["stance"] == "object"}
            rounds.setdefault(e["round"], {}).setdefault("answers", {})[e["speaker"]] = (
                e["vote"], objections)
        elif e["type"] == "tally":
            rounds.setdefault(e["round"], {})["passed"] = e["accepted"]
    return rounds


def _result(run_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((run_dir / "result.json").read_text(encoding="utf-8"))
    return data


def _edit_copy(src: Path, dst: Path, edit: Callable[[str], str],
               keep: Callable[[dict[str, Any]], bool] = lambda e: True) -> Path:
    shutil.copytree(src, dst)
    lines = [json.loads(line) for line in
             (dst / "events.jsonl").read_text(encoding="utf-8").splitlines()]
    text = "".join(json.dumps(e) + "\n" for e in lines if keep(e))
    (dst / "events.jsonl").write_text(edit(text), encoding="utf-8")
    (dst / "result.json").write_text(edit((dst / "result.json").read_text(encoding="utf-8")),
                                     encoding="utf-8")
    return dst


# --------------------------------------------------------------------------- the library


@pytest.mark.parametrize("pair", [("deal", "no_deal"), ("conceder", "boulware")])
def test_the_diff_says_what_each_log_says_round_by_round(
    runs: Runs, pair: tuple[str, str]
) -> None:
    dir_a, dir_b = (getattr(runs, name) for name in pair)
    d = diff_runs(dir_a, dir_b)
    a, b = _by_round(dir_a), _by_round(dir_b)
    assert d.same_scenario and d.issues == ["x", "y", "t"]
    assert [r.round for r in d.rounds] == sorted(set(a) | set(b))
    previous: dict[str, dict[str, Any]] = {"a": {}, "b": {}}
    for rd in d.rounds:
        ra, rb = a.get(rd.round, {}), b.get(rd.round, {})
        assert (rd.reached_a, rd.reached_b) == (bool(ra), bool(rb))
        assert {c.issue: c.a for c in rd.issues if c.a is not None} == ra.get("table", {})
        assert {c.issue: c.b for c in rd.issues if c.b is not None} == rb.get("table", {})
        assert rd.tables_differ == (ra.get("table") != rb.get("table"))
        assert (rd.proposer_a, rd.proposer_b) == (ra.get("proposer"), rb.get("proposer"))
        assert (rd.passed_a, rd.passed_b) == (ra.get("passed"), rb.get("passed"))
        answers_a, answers_b = ra.get("answers", {}), rb.get("answers", {})
        assert set(rd.moved) == {p for p in answers_a | answers_b
                                 if answers_a.get(p) != answers_b.get(p)}
        for m in rd.parties:
            assert (m.vote_a, m.objects_a) == answers_a.get(m.party, (None, {}))
            assert (m.vote_b, m.objects_b) == answers_b.get(m.party, (None, {}))
        for side, r in (("a", ra), ("b", rb)):
            before, now = previous[side], r.get("table", {})
            expected = [k for k in now if before and before[k] != now[k]]
            assert getattr(rd, f"changed_{side}") == expected
            previous[side] = now
    diverging = [rd.round for rd in d.rounds if a.get(rd.round) != b.get(rd.round)]
    assert d.first_divergence == (diverging[0] if diverging else None)


def test_a_deal_and_a_no_deal_explain_where_they_diverged(runs: Runs) -> None:
    d = diff_runs(runs.deal, runs.no_deal)
    assert [rd.round for rd in d.rounds] == [1, 2, 3, 4]
    assert not d.rounds[0].diverges and not d.rounds[1].diverges
    assert d.rounds[1].changed_a == d.rounds[1].changed_b == ["t"]
    third = d.rounds[2]
    assert d.first_divergence == 3
    assert [c.issue for c in third.issues if not c.same] == ["y", "t"]
    assert third.changed_a == ["y", "t"] and third.changed_b == ["t"]
    assert third.moved == ["b"] and (third.passed_a, third.passed_b) == (True, False)
    (b_move,) = [m for m in third.parties if m.party == "b"]
    assert (b_move.vote_a, b_move.objects_a) == ("accept", {})
    assert (b_move.vote_b, b_move.objects_b) == ("reject", {"t": 0.0})
    fourth = d.rounds[3]
    assert (fourth.reached_a, fourth.reached_b) == (False, True)
    assert all(c.a is None and c.b is not None for c in fourth.issues)
    assert d.summary == [
        "Round 3: the tables first differ, on y (A y2, B y1), t (A 10, B 0).",
        "Round 3: b votes accept in A, reject in B.",
        "Round 3: the package passes in A and fails in B.",
        "Outcome: A deal after 3 rounds, B no_deal after 4 rounds.",
        "Utility B - A: a -5.0, b -15.0, c -15.0.",
        "b's red lines broken: A t_at_most_5; B none.",
    ]


def test_the_outcomes_are_compared_per_party(runs: Runs) -> None:
    d = diff_runs(runs.deal, runs.no_deal)
    o = d.outcome
    assert (o.status_a, o.status_b, o.rounds_a, o.rounds_b) == ("deal", "no_deal", 3, 4)
    assert (d.a.status, d.b.status) == ("deal", "no_deal")
    assert d.a.agents == "all=scripted:script"
    # P3 = (x2, y2, t 10) by hand from the tiny preferences; no deal: the reservations.
    assert [(p.party, p.utility_a, p.utility_b, p.delta) for p in o.parties] == [
        ("a", 45.0, 40.0, -5.0), ("b", 55.0, 40.0, -15.0), ("c", 75.0, 60.0, -15.0)]
    assert [(p.red_lines_a, p.red_lines_b) for p in o.parties] == [
        ([], []), (["t_at_most_5"], []), ([], [])]
    assert {c.issue: c.a for c in o.package} == {"x": "x2", "y": "y2", "t": 10.0}
    assert all(c.b is None and not c.same for c in o.package)
    ra, rb = _result(runs.deal), _result(runs.no_deal)
    assert o.distance_to_nash_a == ra["scores"]["deal"]["distance_to_nash"]
    assert o.distance_to_nash_b == rb["scores"]["deal"]["distance_to_nash"]


def test_a_run_against_itself_never_diverges(runs: Runs) -> None:
    d = diff_runs(runs.deal, runs.deal)
    assert d.first_divergence is None
    assert not any(rd.diverges for rd in d.rounds)
    assert d.summary[0].startswith("The runs go the same way in every round")
    assert all(p.delta == 0 for p in d.outcome.parties)


def test_a_run_that_stopped_earlier_is_marked_as_not_reaching_the_round(
    runs: Runs, tmp_path: Path
) -> None:
    short = _edit_copy(runs.no_deal, tmp_path / "short", lambda t: t,
                       keep=lambda e: (e.get("round") or 0) <= 2 and e["type"] != "outcome")
    d = diff_runs(runs.no_deal, short)
    late = [rd for rd in d.rounds if rd.round > 2]
    assert late and all(rd.reached_a and not rd.reached_b for rd in late)
    assert all(c.b is None for c in late[0].issues)
    assert d.first_divergence == 3
    assert d.summary[0] == "Round 3: only A reaches this round; B ended after 2."


def test_runs_of_different_scenarios_are_diffed_on_shared_issues(
    runs: Runs, tmp_path: Path
) -> None:
    other = _edit_copy(runs.no_deal, tmp_path / "other",
                       lambda t: t.replace('"scenario_id": "tiny"', '"scenario_id": "tiny2"')
                       .replace('"scenario_id":"tiny"', '"scenario_id":"tiny2"'))
    d = diff_runs(runs.deal, other)
    assert (d.a.scenario_id, d.b.scenario_id, d.same_scenario) == ("tiny", "tiny2", False)
    assert d.first_divergence == diff_runs(runs.deal, runs.no_deal).first_divergence

    def rename(text: str) -> str:
        text = text.replace('"scenario_id": "tiny"', '"scenario_id": "elsewhere"')
        text = text.replace('"scenario_id":"tiny"', '"scenario_id":"elsewhere"')
        for old, new in (("x", "p"), ("y", "q"), ("t", "r")):
            text = text.replace(f'"{old}":', f'"{new}":')
        return text

    disjoint = _edit_copy(runs.no_deal, tmp_path / "disjoint", rename)
    with pytest.raises(InputError, match="share no issue ids: nothing to align"):
        diff_runs(runs.deal, disjoint)


def test_bad_run_folders_are_input_errors(runs: Runs, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a folder"):
        diff_runs(tmp_path / "missing", runs.deal)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"no events\.jsonl"):
        diff_runs(runs.deal, tmp_path / "empty")
    no_result = tmp_path / "no_result"
    shutil.copytree(runs.deal, no_result)
    (no_result / "result.json").unlink()
    with pytest.raises(InputError, match="detente replay"):
        diff_runs(runs.deal, no_result)


# --------------------------------------------------------------------------- the command


def test_diff_command_shows_rounds_divergence_and_outcomes(
    cli: Callable[..., Result], runs: Runs
) -> None:
    d = diff_runs(runs.deal, runs.no_deal)
    result = cli("diff", runs.deal, runs.no_deal)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert d.summary[0] in out.replace("\n", " ") or d.summary[0][:60] in out
    for rd in d.rounds:
        assert title(rd.round, d) in out
    assert "Agreed packages" in out and "no deal" in out
    assert "utility A" in out and "B - A" in out and "red lines broken A" in out
    for p in d.outcome.parties:
        assert f"{p.delta:+.1f}" in out

    only = cli("diff", runs.deal, runs.no_deal, "--diverging").stdout
    assert any(not rd.diverges for rd in d.rounds)
    for rd in d.rounds:
        assert (title(rd.round, d) in only) == rd.diverges


def title(round_: int, d: RunDiff) -> str:
    """How a round's table title starts."""
    return f"Round {round_}{' (first divergence)' if round_ == d.first_divergence else ''}: A "


def test_diff_json_round_trips(cli: Callable[..., Result], runs: Runs) -> None:
    result = cli("diff", runs.deal, runs.no_deal, "--json")
    assert result.returncode == 0, result.stderr
    assert RunDiff.model_validate_json(result.stdout) == diff_runs(runs.deal, runs.no_deal)


def test_diff_command_bad_paths_exit_2_with_one_message(
    cli: Callable[..., Result], runs: Runs, tmp_path: Path
) -> None:
    result = cli("diff", runs.deal, tmp_path / "nope")
    assert result.returncode == 2
    assert result.stdout == "" and "Traceback" not in result.stderr
    assert result.stderr.strip() == f"error: {tmp_path / 'nope'}: not a folder; expected a run " \
        "folder"
