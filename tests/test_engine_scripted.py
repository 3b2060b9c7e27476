"""The whole negotiation graph with scripted agents (no model): what a run records and how it ends.

Runs go through `detente.runner.start_run`, the same entry point `detente run` uses, with the
scripted strategies or with tiny test agents defined here whose turns are fixed, so that the
protocol's endings (deal, no deal, deadlock) and the decision rules can be driven exactly.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Mapping
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
    Vote,
)
from detente.events import AgentSettings, IssueStance
from detente.loading import ScenarioBundle, load_bundle
from detente.runner import RunPlan, RunRecord, start_run
from detente.scenario import Package, Scenario
from detente.scoring import score
from helpers import BASELINE, TINY, events_of, scripted, tiny_variant

TINY_PACKAGE = Package(options={"x": "x2", "y": "y1"}, terms={"t": 5.0})


@pytest.fixture(scope="module")
def baseline() -> ScenarioBundle:
    return load_bundle(BASELINE)


@pytest.fixture(scope="module")
def tiny() -> ScenarioBundle:
    return load_bundle(TINY)


# --------------------------------------------------------------------------- test agents


class FixedAgent:
    """Tables `package` (or `package_for(round)`), always votes `vote`; records its contexts."""

    def __init__(
        self,
        party: str,
        vote: Vote = "reject",
        package: Package = TINY_PACKAGE,
        package_for: Callable[[int], Package] | None = None,
        caucus_with: str | None = None,
    ) -> None:
        self.party = party
        self.settings = AgentSettings(kind="scripted", strategy="fixed")
        self.vote = vote
        self.package = package
        self.package_for = package_for
        self.caucus_with = caucus_with
        self.contexts: list[tuple[str, Context]] = []

    def opening(self, ctx: Context) -> Turn[OpeningContent]:
        self.contexts.append(("opening", ctx))
        return Turn(OpeningContent(f"opening of {self.party}"))

    def propose(self, ctx: Context) -> Turn[ProposalContent]:
        self.contexts.append(("propose", ctx))
        package = self.package_for(ctx.round) if self.package_for else self.package
        return Turn(
            ProposalContent(
                package=package,
                rationale=f"proposal of {self.party} in round {ctx.round}",
                caucus_with=self.caucus_with,
                caucus_message=f"caucus message of {self.party} in round {ctx.round}",
            )
        )

    def respond(self, ctx: Context) -> Turn[ResponseContent]:
        self.contexts.append(("respond", ctx))
        return Turn(
            ResponseContent(
                vote=self.vote,
                stances={"x": IssueStance(stance="accept")},
                statement=f"{self.party} votes {self.vote} in round {ctx.round}",
                private_rationale=f"private reasons of {self.party} in round {ctx.round}",
            )
        )

    def caucus_reply(self, ctx: Context, message: str) -> Turn[CaucusContent]:
        self.contexts.append(("caucus", ctx))
        return Turn(CaucusContent(f"caucus reply of {self.party} in round {ctx.round}"))


def run_with(
    bundle: ScenarioBundle, agents: Mapping[str, Any], out: Path, max_rounds: int | None = None
) -> RunRecord:
    """A run whose parties are played by the given agent objects."""
    settings = {p: a.settings for p, a in agents.items()}
    plan = RunPlan(bundle=bundle, agents=settings, max_rounds=max_rounds, out_root=out)
    return start_run(plan, lambda party, _settings, _bundle: agents[party])


def run_scripted(
    bundle: ScenarioBundle, strategies: Mapping[str, str], out: Path, max_rounds: int | None = None
) -> RunRecord:
    settings = {p: scripted(strategies[p]) for p in bundle.scenario.parties}
    plan = RunPlan(bundle=bundle, agents=settings, max_rounds=max_rounds, out_root=out)
    return start_run(plan, make_agent)


def strategies_for(scenario: Scenario, negotiator: str, mediator: str = "nash") -> dict[str, str]:
    return {p: mediator if p == scenario.mediator else negotiator for p in scenario.parties}


# --------------------------------------------------------------------------- checks


def check_run(
    record: RunRecord, scenario: Scenario, max_rounds: int
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every invariant of a finished run's folder; returns its events and result.json."""
    run_dir = record.run_dir
    for name in ("events.jsonl", "transcript.md", "result.json"):
        assert (run_dir / name).is_file(), name
    events = events_of(run_dir)
    result = json.loads((run_dir / "result.json").read_text(encoding="utf-8"))

    assert events[0]["type"] == "header"
    assert events[0]["max_rounds"] == max_rounds
    assert events[-1]["type"] == "outcome"
    assert [e["type"] for e in events].count("outcome") == 1
    ids = [e["id"] for e in events]
    assert len(ids) == len(set(ids)), [i for i, n in Counter(ids).items() if n > 1]

    openings = [e["speaker"] for e in events if e["type"] == "statement" and e["kind"] == "opening"]
    assert sorted(openings) == sorted(scenario.parties)

    outcome = events[-1]
    rounds = outcome["rounds"]
    assert 1 <= rounds <= max_rounds
    for r in range(1, rounds + 1):
        in_round = [e for e in events if e.get("round") == r]
        kinds = Counter(e["type"] for e in in_round)
        assert kinds["proposal"] == 1, (r, kinds)
        assert kinds["tally"] == 1, (r, kinds)
        responders = [e["speaker"] for e in in_round if e["type"] == "response"]
        assert sorted(responders) == sorted(scenario.voters), (r, responders)
        (tally,) = [e for e in in_round if e["type"] == "tally"]
        (proposal,) = [e for e in in_round if e["type"] == "proposal"]
        assert tally["package"] == proposal["package"]
        assert tally["votes"] == {
            e["speaker"]: e["vote"] for e in in_round if e["type"] == "response"
        }
        if r < rounds:
            assert not tally["accepted"]
    assert not [e for e in events if (e.get("round") or 0) > rounds]

    last_tally = [e for e in events if e["type"] == "tally"][-1]
    status = outcome["status"]
    if status == "deal":
        assert last_tally["accepted"]
        assert outcome["package"] == last_tally["package"]
    elif status == "no_deal":
        assert not last_tally["accepted"]
        assert rounds == max_rounds
        assert outcome["package"] is None
    elif status == "deadlock":
        assert not last_tally["accepted"]
        assert last_tally["rejections_of_package"] == scenario.decision.deadlock_after
        assert outcome["package"] is None
    else:
        pytest.fail(f"unexpected status {status}")
    assert outcome["votes"] == last_tally["votes"]

    assert result["status"] == status
    assert result["rounds_played"] == rounds
    assert result["package"] == outcome["package"]
    assert result["last_table"] == last_tally["package"]
    package = Package.model_validate(outcome["package"]) if outcome["package"] else None
    expected = score(scenario, package, outcome["votes"])
    assert result["scores"] == json.loads(expected.model_dump_json())
    assert record.result.status == status
    return events, result


# --------------------------------------------------------------------------- scripted runs


@pytest.mark.parametrize(
    ("negotiator", "mediator"),
    [
        ("boulware", "nash"),
        ("linear", "nash"),
        ("conceder", "nash"),
        ("linear", "snt"),
    ],
)
def test_baseline_with_scripted_agents(
    baseline: ScenarioBundle, tmp_path: Path, negotiator: str, mediator: str
) -> None:
    scenario = baseline.scenario
    record = run_scripted(baseline, strategies_for(scenario, negotiator, mediator), tmp_path)
    events, result = check_run(record, scenario, scenario.decision.max_rounds)
    assert events[0]["agents"][scenario.mediator]["strategy"] == mediator
    assert all(t["total_tokens"] == 0 for t in result["tokens"].values())


def test_baseline_round_override(baseline: ScenarioBundle, tmp_path: Path) -> None:
    scenario = baseline.scenario
    record = run_scripted(baseline, strategies_for(scenario, "boulware"), tmp_path, max_rounds=2)
    _, result = check_run(record, scenario, 2)
    assert result["rounds_played"] <= 2


@pytest.mark.parametrize("negotiator", ["boulware", "linear", "conceder"])
def test_tiny_with_scripted_agents(tiny: ScenarioBundle, tmp_path: Path, negotiator: str) -> None:
    scenario = tiny.scenario
    record = run_scripted(tiny, strategies_for(scenario, negotiator), tmp_path)
    check_run(record, scenario, scenario.decision.max_rounds)


def test_same_scripted_run_twice_is_identical(tiny: ScenarioBundle, tmp_path: Path) -> None:
    """Scripted agents are deterministic: two runs record the same negotiation."""
    strategies = strategies_for(tiny.scenario, "linear")
    first = run_scripted(tiny, strategies, tmp_path / "1")
    second = run_scripted(tiny, strategies, tmp_path / "2")

    def strip(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        volatile = {"time", "latency", "run_id", "quote_key"}  # the key is random per run
        return sorted(
            (
                json.dumps({k: v for k, v in e.items() if k not in volatile}, sort_keys=True)
                for e in events
            ),
            key=str,
        )  # type: ignore[return-value]

    assert strip(events_of(first.run_dir)) == strip(events_of(second.run_dir))


# --------------------------------------------------------------------------- endings


def voters_voting(
    scenario: Scenario, votes: Mapping[str, Vote], **mediator: Any
) -> dict[str, FixedAgent]:
    agents = {p: FixedAgent(p, vote=votes.get(p, "reject")) for p in scenario.voters}
    if scenario.mediator:
        agents[scenario.mediator] = FixedAgent(scenario.mediator, **mediator)
    return agents


@pytest.mark.parametrize("deadlock_after", [2, 3])
def test_same_package_rejected_ends_in_deadlock(tmp_path: Path, deadlock_after: int) -> None:
    bundle = load_bundle(tiny_variant(tmp_path, deadlock_after=deadlock_after, max_rounds=10))
    scenario = bundle.scenario
    record = run_with(bundle, voters_voting(scenario, {}), tmp_path / "runs")
    events, result = check_run(record, scenario, 10)
    assert result["status"] == "deadlock"
    assert result["rounds_played"] == deadlock_after
    tallies = [e for e in events if e["type"] == "tally"]
    assert [t["rejections_of_package"] for t in tallies] == list(range(1, deadlock_after + 1))
    assert all(t["package"] == TINY_PACKAGE.model_dump(mode="json") for t in tallies)


def test_changing_packages_never_deadlock(tmp_path: Path) -> None:
    """Rejected packages that differ run to the round limit: no_deal, not deadlock."""
    bundle = load_bundle(tiny_variant(tmp_path, deadlock_after=2, max_rounds=3))
    scenario = bundle.scenario
    options = ["x1", "x2", "x3"]
    agents = voters_voting(
        scenario,
        {},
        package_for=lambda r: Package(
            options={"x": options[(r - 1) % 3], "y": "y1"}, terms={"t": 0.0}
        ),
    )
    record = run_with(bundle, agents, tmp_path / "runs")
    events, result = check_run(record, scenario, 3)
    assert result["status"] == "no_deal"
    assert [t["rejections_of_package"] for t in events if t["type"] == "tally"] == [1, 1, 1]


def test_round_limit_override_caps_rounds(tiny: ScenarioBundle, tmp_path: Path) -> None:
    scenario = tiny.scenario
    terms = [0.0, 5.0, 10.0]
    agents = voters_voting(
        scenario,
        {},
        package_for=lambda r: Package(
            options={"x": "x1", "y": "y1"}, terms={"t": terms[(r - 1) % 3]}
        ),
    )
    record = run_with(tiny, agents, tmp_path, max_rounds=2)
    _, result = check_run(record, scenario, 2)
    assert (result["status"], result["rounds_played"]) == ("no_deal", 2)


def test_deal_ends_the_run(tiny: ScenarioBundle, tmp_path: Path) -> None:
    scenario = tiny.scenario
    agents = voters_voting(scenario, {"a": "accept", "b": "accept", "c": "reject"})
    record = run_with(tiny, agents, tmp_path)
    _, result = check_run(record, scenario, scenario.decision.max_rounds)
    assert (result["status"], result["rounds_played"]) == ("deal", 1)
    assert result["package"] == TINY_PACKAGE.model_dump(mode="json")
    assert result["votes"] == {"a": "accept", "b": "accept", "c": "reject"}
    # The mediator tabled once; nobody was asked anything after the deal.
    assert [k for k, _ in agents["m"].contexts] == ["opening", "propose"]
    assert [k for k, _ in agents["a"].contexts] == ["opening", "respond"]


NO_MEDIATOR_ROTATION = ["a", "b", "c", "a"]


def test_without_mediator_voters_propose_in_turn(tmp_path: Path) -> None:
    path = tiny_variant(tmp_path, top={"parties": ["a", "b", "c"], "mediator": None}, max_rounds=4)
    bundle = load_bundle(path)
    scenario = bundle.scenario
    assert scenario.mediator is None and scenario.voters == ["a", "b", "c"]
    terms = [0.0, 5.0, 10.0]
    agents = {
        p: FixedAgent(
            p,
            package_for=lambda r: Package(
                options={"x": "x2", "y": "y2"}, terms={"t": terms[(r - 1) % 3]}
            ),
        )
        for p in "abc"
    }
    record = run_with(bundle, agents, tmp_path / "runs")
    events, _ = check_run(record, scenario, 4)
    assert [e["speaker"] for e in events if e["type"] == "proposal"] == NO_MEDIATOR_ROTATION


# --------------------------------------------------------------------------- decision rules


A, R = "accept", "reject"
RULES: list[tuple[dict[str, Any], dict[str, Vote], bool]] = [
    ({"required": ["a", "b"]}, {"a": A, "b": A, "c": R}, True),
    ({"required": ["a", "b"]}, {"a": A, "b": R, "c": A}, False),
    ({"required": ["a"], "veto": ["c"]}, {"a": A, "b": R, "c": A}, True),
    ({"required": ["a"], "veto": ["c"]}, {"a": A, "b": A, "c": R}, False),
    ({"required": [], "quorum": {"min": 2}}, {"a": R, "b": A, "c": A}, True),
    ({"required": [], "quorum": {"min": 2}}, {"a": A, "b": R, "c": R}, False),
    ({"required": [], "quorum": {"min": 2, "including": ["c"]}}, {"a": A, "b": A, "c": R}, False),
    ({"required": [], "quorum": {"min": 2, "including": ["c"]}}, {"a": A, "b": R, "c": A}, True),
    ({"required": ["a"], "quorum": {"min": 3}}, {"a": A, "b": A, "c": A}, True),
    ({"required": ["a"], "quorum": {"min": 3}}, {"a": A, "b": A, "c": R}, False),
    ({"required": ["b"], "veto": ["a"], "quorum": {"min": 2}}, {"a": R, "b": A, "c": A}, False),
]


@pytest.mark.parametrize(("rule", "votes", "passes"), RULES)
def test_tally_honours_decision_rule(
    tmp_path: Path, rule: dict[str, Any], votes: dict[str, Vote], passes: bool
) -> None:
    bundle = load_bundle(tiny_variant(tmp_path, max_rounds=1, **rule))
    scenario = bundle.scenario
    record = run_with(bundle, voters_voting(scenario, votes), tmp_path / "runs")
    events, result = check_run(record, scenario, 1)
    (tally,) = [e for e in events if e["type"] == "tally"]
    assert tally["votes"] == votes
    assert tally["accepted"] is passes
    assert result["status"] == ("deal" if passes else "no_deal")


# --------------------------------------------------------------------------- what agents see


def test_caucus_is_seen_only_by_its_two_parties(tiny: ScenarioBundle, tmp_path: Path) -> None:
    scenario = tiny.scenario
    agents = voters_voting(
        scenario,
        {},
        caucus_with="a",
        package_for=lambda r: Package(
            options={"x": "x2", "y": "y1"}, terms={"t": [0.0, 5.0, 10.0, 0.0][r - 1]}
        ),
    )
    record = run_with(tiny, agents, tmp_path)
    events, _ = check_run(record, scenario, scenario.decision.max_rounds)
    caucus = [e for e in events if e["type"] == "statement" and e["kind"] != "opening"]
    assert {e["id"] for e in caucus} == {
        f"r{r}/{k}" for r in range(1, 5) for k in ("caucus", "caucus_reply")
    }
    assert all(sorted(e["visible_to"]) == ["a", "m"] for e in caucus)
    # Only the mediator and a were ever shown a caucus line; b and c never.
    secret = "caucus"
    for party, agent in agents.items():
        shown = [
            line
            for _, ctx in agent.contexts
            for line in ctx.caucus + ctx.statements
            if secret in line.text
        ]
        if party in ("a", "m"):
            assert shown, party
        else:
            assert not shown, party
    # The caucus reply of round r reaches a before it votes in round r.
    respond_ctx = [ctx for kind, ctx in agents["a"].contexts if kind == "respond"]
    assert any(line.text == "caucus reply of a in round 1" for line in respond_ctx[0].caucus)
    # No context anywhere carries another party's private rationale.
    for agent in agents.values():
        for _, ctx in agent.contexts:
            assert not any("private reasons" in line.text for line in ctx.statements + ctx.caucus)


def test_context_is_bounded(tmp_path: Path) -> None:
    bundle = load_bundle(tiny_variant(tmp_path, max_rounds=12, deadlock_after=20))
    scenario = bundle.scenario
    agents = voters_voting(scenario, {}, caucus_with="b")
    record = run_with(bundle, agents, tmp_path / "runs")
    check_run(record, scenario, 12)
    header = events_of(record.run_dir)[0]
    k = header["bounded_context"]
    for agent in agents.values():
        for _, ctx in agent.contexts:
            assert len(ctx.statements) <= k
            assert len(ctx.own_positions) <= k
            assert len(ctx.caucus) <= k
    last = [ctx for kind, ctx in agents["b"].contexts if kind == "respond"][-1]
    assert last.round == 12
    assert len(last.statements) == k and len(last.own_positions) == k and len(last.caucus) == k
