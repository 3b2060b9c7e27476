"""The five protocols, end to end: with scripted agents, and with LLM agents on the fake server.

Each runs the baseline (the protocol variants in `scenarios/protocols/`); the checks are what
each protocol promises: who tables, who answers, in what order, and who sees what.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from detente.agents import make_agent
from detente.events import AgentSettings, Response
from detente.loading import ScenarioBundle, load_bundle
from detente.protocols.offers_graph import counter_offer
from detente.runner import RunPlan, RunRecord, start_run
from detente.scenario import Package
from helpers import (
    BASELINE,
    ROOT,
    Cli,
    Req,
    SchemaResponder,
    events_of,
    llm_settings,
    parse_request,
    scripted,
    serve,
)

VARIANTS = ROOT / "scenarios" / "protocols"
SCENARIOS = {
    "mediated": BASELINE,
    "rotating": VARIANTS / "rotating.yaml",
    "no_talk": VARIANTS / "no_talk.yaml",
    "alternating_offers": VARIANTS / "alternating_offers.yaml",
    "bilateral_first": VARIANTS / "bilateral_first.yaml",
}
VOTERS = ["us", "russia", "ukraine", "eu"]


@pytest.fixture(scope="module")
def bundles() -> dict[str, ScenarioBundle]:
    return {name: load_bundle(path) for name, path in SCENARIOS.items()}


def scripted_team(bundle: ScenarioBundle, strategy: str = "conceder") -> dict[str, AgentSettings]:
    team = {p: scripted(strategy) for p in bundle.scenario.voters}
    if bundle.scenario.mediator:
        team[bundle.scenario.mediator] = scripted("nash")
    return team


def run(bundle: ScenarioBundle, agents: Mapping[str, AgentSettings], out: Path,
        rounds: int | None = None) -> RunRecord:
    return start_run(RunPlan(bundle=bundle, agents=dict(agents), max_rounds=rounds,
                             out_root=out), make_agent)


def of(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == kind]


# --------------------------------------------------------------------------- scripted


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_each_protocol_runs_the_baseline_with_scripted_agents(
    name: str, bundles: dict[str, ScenarioBundle], tmp_path: Path
) -> None:
    record = run(bundles[name], scripted_team(bundles[name]), tmp_path)
    events = events_of(record.run_dir)
    assert events[0]["protocol"] == name
    assert events[-1]["type"] == "outcome"
    assert events[-1]["status"] in ("deal", "no_deal", "deadlock")
    assert len({e["id"] for e in events}) == len(events)
    result = json.loads((record.run_dir / "result.json").read_text())
    assert len(result["rounds"]) == len(of(events, "tally"))
    transcript = (record.run_dir / "transcript.md").read_text()
    assert f"- Protocol: `{name}`" in transcript
    check = globals()[f"_check_{name}"]
    check(events)


def _check_mediated(events: list[dict[str, Any]]) -> None:
    assert {e["speaker"] for e in of(events, "proposal")} == {"un_mediator"}
    for tally in of(events, "tally"):
        assert set(tally["votes"]) == set(VOTERS)


def _check_rotating(events: list[dict[str, Any]]) -> None:
    proposers = [e["speaker"] for e in of(events, "proposal")]
    assert proposers == [VOTERS[k % 4] for k in range(len(proposers))]
    assert not [e for e in events if e.get("speaker") == "un_mediator"]


def _check_no_talk(events: list[dict[str, Any]]) -> None:
    assert not [e for e in of(events, "statement")]  # no openings, no caucus
    assert all(e["statement"] == "" for e in of(events, "response"))
    assert all(e["rationale"] == "" for e in of(events, "proposal"))
    assert all(e["stances"] for e in of(events, "response"))  # the votes still say what


def _check_alternating_offers(events: list[dict[str, Any]]) -> None:
    assert not [e for e in events if e.get("speaker") == "un_mediator"]
    by_round: dict[int, list[dict[str, Any]]] = {}
    for e in of(events, "response"):
        by_round.setdefault(e["round"], []).append(e)
    proposals = {e["round"]: e for e in of(events, "proposal")}
    for round_, answers in by_round.items():
        proposer = proposals[round_]["speaker"]
        circle = VOTERS[VOTERS.index(proposer) + 1:] + VOTERS[:VOTERS.index(proposer)]
        assert [a["speaker"] for a in sorted(answers, key=lambda a: a["slot"])] == \
            circle[: len(answers)]
        assert [a["slot"] for a in sorted(answers, key=lambda a: a["slot"])] == \
            list(range(1, len(answers) + 1))
        *accepted, last = sorted(answers, key=lambda a: a["slot"])
        assert all(a["vote"] == "accept" for a in accepted)
        if last["vote"] == "reject" and round_ + 1 in proposals:
            nxt = proposals[round_ + 1]
            assert nxt["speaker"] == last["speaker"]  # a rejection is a counter-offer
            counter = counter_offer(Package.model_validate(proposals[round_]["package"]),
                                    Response.model_validate(last))
            assert Package.model_validate(nxt["package"]) == counter
    outcome = events[-1]
    if outcome["status"] == "deal":
        last_round = max(by_round)
        assert len(by_round[last_round]) == 3
        assert all(a["vote"] == "accept" for a in by_round[last_round])


def _check_bilateral_first(events: list[dict[str, Any]]) -> None:
    private = [e for e in events if e["type"] in ("proposal", "response", "tally")
               and e.get("phase") == "bilateral"]
    assert private and all(e["visible_to"] == ["us", "russia"] for e in private)
    assert {e["speaker"] for e in private if e["type"] != "tally"} <= {"us", "russia"}
    assert max(e["round"] for e in private) <= 3
    plenary = [e for e in of(events, "proposal") if e.get("phase", "plenary") == "plenary"]
    assert plenary and plenary[0]["round"] == 4
    agreed = [e for e in of(events, "tally") if e.get("phase") == "bilateral" and e["accepted"]]
    if agreed:
        assert plenary[0]["package"] == agreed[0]["package"]  # it opens the plenary
        assert plenary[0]["speaker"] == "us"


# --------------------------------------------------------------------------- LLM agents


class Rejecting(SchemaResponder):
    """Everyone objects to one issue with a distinct wish and rejects, until round 3."""

    def vote(self, req: Req) -> str:
        return "accept" if req.round >= 3 else "reject"

    def pick(self, req: Req, path: tuple[str, ...], values: Any) -> Any:
        if path == ("issues", "territory", "stance"):
            return "object" if req.round < 3 else "accept"
        if path == ("issues", "territory", "wants"):
            return values[VOTERS.index(req.party) + 1] if req.party in VOTERS else values[0]
        if path[:1] == ("package",):
            return values[req.round % len(values)]
        return super().pick(req, path, values)


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_each_protocol_runs_with_llm_agents_on_the_fake_server(
    name: str, bundles: dict[str, ScenarioBundle], tmp_path: Path
) -> None:
    bundle = bundles[name]
    responder = Rejecting(bundle)
    with serve(responder) as fake:
        agents = {p: llm_settings(fake.base_url, seed=None) for p in bundle.scenario.parties}
        record = run(bundle, agents, tmp_path, rounds=4)
        reqs = [parse_request(body, responder.names) for body in fake.requests]
    events = events_of(record.run_dir)
    assert events[-1]["type"] == "outcome" and events[-1]["status"] != "error"
    asked = {r.party for r in reqs}
    if name in ("rotating", "alternating_offers"):
        assert "un_mediator" not in asked
    if name == "no_talk":
        assert all(r.kind != "opening" and not re.search(r"^\[quote \w+\] ", r.text, re.M)
                   for r in reqs)
        titles = {r.schema.get("title") for r in reqs}
        assert titles <= {"SilentResponse", "SilentProposal"}
    if name == "bilateral_first":
        early = [r for r in reqs if 1 <= r.round <= 3 and r.kind in ("propose", "respond")]
        assert early and {r.party for r in early} <= {"us", "russia"}
        private = [Package.model_validate(e["package"]).describe() for e in of(events, "tally")
                   if e.get("phase") == "bilateral" and not e["accepted"]]
        for r in reqs:
            if r.party in ("ukraine", "eu", "un_mediator"):
                assert not any(p in r.text for p in private), r.party
    check = globals()[f"_check_{name}"]
    check(events)


# --------------------------------------------------------------------------- side by side


def test_compare_shows_the_protocols_side_by_side(tmp_path: Path, cli: Cli) -> None:
    result = cli("sweep", BASELINE, VARIANTS, "--seeds", "1", "--agent",
                 "all=scripted:conceder", "--out", tmp_path, "--name", "p")
    assert result.returncode == 0, result.stderr
    compared = cli("compare", tmp_path / "p", "--json")
    assert compared.returncode == 0, compared.stderr
    groups = [g["variant"] for g in json.loads(compared.stdout)["groups"]]
    assert set(groups) == {"baseline", "protocol_rotating", "protocol_no_talk",
                           "protocol_alternating_offers", "protocol_bilateral_first"}


def test_an_unknown_protocol_or_bad_settings_are_one_clear_error(tmp_path: Path,
                                                                  cli: Cli) -> None:
    import yaml

    for protocol, expected in (("mediatd", "did you mean mediated?"),
                               ({"name": "bilateral_first", "params": {"parties": ["us"]}},
                                "protocol.params"),
                               ({"name": "bilateral_first",
                                 "params": {"parties": ["us", "narnia"]}},
                                "expected a voting party")):
        path = tmp_path / "v.yaml"
        path.write_text(yaml.safe_dump({"extends": str(BASELINE), "id": "v",
                                        "protocol": protocol}))
        result = cli("validate", path)
        assert result.returncode == 2, result.stdout
        assert expected in result.stderr and "Traceback" not in result.stderr
    rotating_only = tmp_path / "m.yaml"
    rotating_only.write_text(yaml.safe_dump({"extends": str(VARIANTS.parent / "variants" /
                                                            "no_mediator.yaml"),
                                             "id": "m", "protocol": "mediated"}))
    result = cli("validate", rotating_only)
    assert "'mediated' needs a mediator" in result.stderr
