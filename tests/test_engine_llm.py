"""LLM agents in whole runs against the fake OpenAI server (real HTTP on 127.0.0.1).

The fake answers with objects it builds from the JSON schema each request carries (see
`helpers.SchemaResponder`), so these tests exercise what the engine sends and how it copes with
what comes back: every structured mode, mixed LLM and scripted parties, corrected and persistently
invalid answers, privacy of each party's preferences and private rationale, bounded prompts.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from detente.agents import make_agent
from detente.agents.base import private_view
from detente.agents.llm_agent import system_prompt
from detente.events import AgentSettings
from detente.loading import ScenarioBundle, load_bundle
from detente.runner import RunPlan, RunRecord, start_run
from helpers import (
    BASELINE,
    CORRECTION_MARK,
    SCHEMA_MARK,
    TINY,
    Req,
    SchemaResponder,
    events_of,
    llm_settings,
    message_text,
    parse_request,
    scripted,
    serve,
)

MODES = ["json_schema", "json_object", "prompt"]


@pytest.fixture(scope="module")
def tiny() -> ScenarioBundle:
    return load_bundle(TINY)


@pytest.fixture(scope="module")
def baseline() -> ScenarioBundle:
    return load_bundle(BASELINE)


def run(
    bundle: ScenarioBundle,
    agents: Mapping[str, AgentSettings],
    out: Path,
    max_rounds: int | None = None,
) -> RunRecord:
    plan = RunPlan(bundle=bundle, agents=dict(agents), max_rounds=max_rounds, out_root=out)
    return start_run(plan, make_agent)


def all_llm(
    bundle: ScenarioBundle, base_url: str, mode: str = "json_schema"
) -> dict[str, AgentSettings]:
    return {p: llm_settings(base_url, mode) for p in bundle.scenario.parties}


def requests_of(responder: SchemaResponder, bodies: Sequence[dict[str, Any]]) -> list[Req]:
    return [parse_request(body, responder.names) for body in bodies]


def result_of(record: RunRecord) -> dict[str, Any]:
    return json.loads((record.run_dir / "result.json").read_text(encoding="utf-8"))


def check_finished(record: RunRecord, scenario: Any) -> list[dict[str, Any]]:
    events = events_of(record.run_dir)
    assert events[0]["type"] == "header" and events[-1]["type"] == "outcome"
    assert events[-1]["status"] in ("deal", "no_deal", "deadlock")
    ids = [e["id"] for e in events]
    assert len(ids) == len(set(ids))
    for r in range(1, events[-1]["rounds"] + 1):
        responders = sorted(
            e["speaker"] for e in events if e["type"] == "response" and e["round"] == r
        )
        assert responders == sorted(scenario.voters)
    assert (record.run_dir / "transcript.md").is_file()
    assert result_of(record)["status"] == events[-1]["status"]
    return events


# --------------------------------------------------------------------------- structured modes


def check_response_format(mode: str, body: dict[str, Any]) -> None:
    rf = body.get("response_format")
    if mode == "json_schema":
        assert rf is not None and rf["type"] == "json_schema"
        assert rf["json_schema"]["strict"] is True
        assert rf["json_schema"]["name"]
        assert rf["json_schema"]["schema"]["type"] == "object"
        assert SCHEMA_MARK not in message_text(body)
    elif mode == "json_object":
        assert rf is not None and set(rf) == {"type", "schema"}
        assert rf["type"] == "json_object"
        assert rf["schema"]["type"] == "object"
        assert "$ref" not in json.dumps(rf["schema"])  # inlined for llama.cpp's grammar
        assert SCHEMA_MARK not in message_text(body)
    else:
        assert "response_format" not in body
        assert SCHEMA_MARK in message_text(body)


@pytest.mark.parametrize("mode", MODES)
def test_all_llm_run_in_each_mode(tiny: ScenarioBundle, tmp_path: Path, mode: str) -> None:
    responder = SchemaResponder(tiny)
    with serve(responder) as fake:
        record = run(tiny, all_llm(tiny, fake.base_url, mode), tmp_path)
        bodies = fake.requests
    events = check_finished(record, tiny.scenario)
    assert events[-1]["status"] == "deal"  # everyone accepts the first package
    for body in bodies:
        check_response_format(mode, body)
        assert body["model"] == "fake-model"
    reqs = requests_of(responder, bodies)
    kinds = sorted((r.kind, r.party) for r in reqs)
    assert kinds == sorted(
        [("opening", p) for p in tiny.scenario.parties]
        + [("propose", "m")]
        + [("respond", p) for p in tiny.scenario.voters]
    )
    assert not any(e.get("invalid") for e in events)
    result = result_of(record)
    for party in tiny.scenario.parties:
        assert result["tokens"][party]["total_tokens"] > 0
        assert result["tokens"][party]["invalid_responses"] == 0
    # The proposal the model gave is the package tabled (first option of everything).
    assert result["package"] == {"options": {"x": "x1", "y": "y1"}, "terms": {"t": 0.0}}


@pytest.mark.parametrize(
    ("llm", "mode"), [(("a", "c"), "json_object"), (("m",), "prompt"), (("b", "m"), "json_schema")]
)
def test_llm_and_scripted_in_one_run(
    tiny: ScenarioBundle, tmp_path: Path, llm: tuple[str, ...], mode: str
) -> None:
    responder = SchemaResponder(tiny)
    with serve(responder) as fake:
        agents = {
            p: llm_settings(fake.base_url, mode)
            if p in llm
            else scripted("nash" if p == "m" else "linear")
            for p in tiny.scenario.parties
        }
        record = run(tiny, agents, tmp_path)
        reqs = requests_of(responder, fake.requests)
    events = check_finished(record, tiny.scenario)
    assert {r.party for r in reqs} == set(llm)
    result = result_of(record)
    for party in tiny.scenario.parties:
        assert (result["tokens"][party]["total_tokens"] > 0) == (party in llm)
    assert events[0]["agents"]["a"]["kind"] == ("llm" if "a" in llm else "scripted")


# --------------------------------------------------------------------------- invalid answers


class InvalidOnce(SchemaResponder):
    """Party a's first answer in round 1 breaks the schema; its corrected answer is valid."""

    BAD = json.dumps({"statement": "fine", "private_rationale": "", "issues": {}, "vote": "maybe"})

    def reply(self, req: Req) -> Any:
        if req.party == "a" and req.kind == "respond" and req.round == 1 and not req.retry:
            return self.BAD
        return super().reply(req)


@pytest.mark.parametrize("mode", MODES)
def test_invalid_then_valid_answer_is_corrected(
    tiny: ScenarioBundle, tmp_path: Path, mode: str
) -> None:
    responder = InvalidOnce(tiny)
    with serve(responder) as fake:
        record = run(tiny, all_llm(tiny, fake.base_url, mode), tmp_path)
        reqs = requests_of(responder, fake.requests)
    events = check_finished(record, tiny.scenario)
    (response,) = [e for e in events if e["id"] == "r1/response/a"]
    assert response["invalid"] is False
    assert response["vote"] == "accept"
    assert len(response["errors"]) == 1 and "vote" in response["errors"][0]
    a_round1 = [r for r in reqs if (r.party, r.kind, r.round) == ("a", "respond", 1)]
    assert [r.retry for r in a_round1] == [False, True]
    retried = a_round1[1].body["messages"]
    first = a_round1[0].body["messages"]
    assert retried[: len(first)] == first
    assert retried[len(first)] == {"role": "assistant", "content": InvalidOnce.BAD}
    correction = retried[len(first) + 1]
    assert correction["role"] == "user"
    assert CORRECTION_MARK in correction["content"]
    assert response["errors"][0] in correction["content"]
    check_response_format(mode, a_round1[1].body)
    assert result_of(record)["tokens"]["a"]["invalid_responses"] == 0


class BAlwaysInvalid(SchemaResponder):
    """Party b never gives a valid answer to the package; everyone else accepts it."""

    def reply(self, req: Req) -> Any:
        if req.party == "b" and req.kind == "respond":
            return "I would rather not say."
        return super().reply(req)


@pytest.mark.parametrize("mode", ["json_schema", "prompt"])
def test_persistently_invalid_answer_counts_as_reject(
    tiny: ScenarioBundle, tmp_path: Path, mode: str
) -> None:
    responder = BAlwaysInvalid(tiny)
    with serve(responder) as fake:
        record = run(tiny, all_llm(tiny, fake.base_url, mode), tmp_path)
        reqs = requests_of(responder, fake.requests)
    events = check_finished(record, tiny.scenario)
    rounds = events[-1]["rounds"]
    assert rounds >= 2  # the run went on after the first invalid response
    assert events[-1]["status"] in ("no_deal", "deadlock")  # b is required
    b_responses = [e for e in events if e["type"] == "response" and e["speaker"] == "b"]
    assert len(b_responses) == rounds
    for e in b_responses:
        assert e["invalid"] is True
        assert e["vote"] == "reject"
        assert len(e["errors"]) == 3  # the first answer and two corrections
    for tally in (e for e in events if e["type"] == "tally"):
        assert tally["votes"]["b"] == "reject"
        assert not tally["accepted"]
    b_asks = [r for r in reqs if (r.party, r.kind) == ("b", "respond")]
    assert len(b_asks) == 3 * rounds
    result = result_of(record)
    assert result["tokens"]["b"]["invalid_responses"] == rounds
    assert all(result["tokens"][p]["invalid_responses"] == 0 for p in ("a", "c", "m"))
    transcript = (record.run_dir / "transcript.md").read_text(encoding="utf-8")
    assert "invalid response" in transcript


# --------------------------------------------------------------------------- privacy


class Secretive(SchemaResponder):
    """Private rationales and caucus messages carry markers; nobody accepts; packages vary."""

    def __init__(self, bundle: ScenarioBundle) -> None:
        super().__init__(bundle)
        self.voters = bundle.scenario.voters

    def vote(self, req: Req) -> str:
        return "reject"

    def caucus_with(self, req: Req) -> str:
        return self.voters[req.round % len(self.voters)]

    def pick(self, req: Req, path: tuple[str, ...], values: Sequence[Any]) -> Any:
        if path[:1] == ("package",):
            return values[req.round % len(values)]
        return super().pick(req, path, values)

    def text(self, req: Req, path: tuple[str, ...]) -> str:
        field = path[-1]
        if field == "private_rationale":
            return f"SECRET-{req.party}-{req.round}"
        if field == "caucus_message":
            return f"CAUCUS-{self.caucus_with(req)}-{req.round}"
        if field == "reply":
            return f"CAUCUSREPLY-{req.party}-{req.round}"
        return f"public {field} of {req.party} in round {req.round}"


def private_lines(prompt: str) -> list[str]:
    """The lines of a system prompt from its PRIVATE section on."""
    lines = prompt.splitlines()
    start = next((k for k, line in enumerate(lines) if line.startswith("PRIVATE")), len(lines))
    return [line for line in lines[start + 1 :] if line.strip()]


def test_no_prompt_carries_another_partys_secrets(baseline: ScenarioBundle, tmp_path: Path) -> None:
    scenario = baseline.scenario
    responder = Secretive(baseline)
    with serve(responder) as fake:
        record = run(baseline, all_llm(baseline, fake.base_url), tmp_path, max_rounds=4)
        reqs = requests_of(responder, fake.requests)
    events = check_finished(record, scenario)
    rounds = events[-1]["rounds"]
    assert rounds == 4

    # The markers really were said (the test is not vacuous).
    rationales = {e["private_rationale"] for e in events if e["type"] == "response"}
    assert rationales == {f"SECRET-{p}-{r}" for p in scenario.voters for r in range(1, rounds + 1)}
    caucus = [e for e in events if e["type"] == "statement" and e["kind"] != "opening"]
    assert len(caucus) == 2 * rounds
    caucus_markers = {e["text"]: e["visible_to"] for e in caucus}

    expected_prompt = {
        p: system_prompt(private_view(scenario, p), baseline.briefs[p], scenario.preferences.get(p))
        for p in scenario.parties
    }
    secrets_of = {
        p: private_lines(expected_prompt[p])
        + [rl.description for rl in scenario.preferences[p].red_lines]
        for p in scenario.voters
    }
    assert all(secrets_of[p] for p in scenario.voters)
    assert private_lines(expected_prompt[scenario.mediator]) == []

    by_party: dict[str, list[Req]] = defaultdict(list)
    for req in reqs:
        by_party[req.party].append(req)
    assert set(by_party) == set(scenario.parties)
    for party, mine in by_party.items():
        own = set(expected_prompt[party].splitlines())
        for req in mine:
            # A party's system prompt is built from its own private view only.
            assert req.system == expected_prompt[party]
            # No other party's private rationale, ever.
            for other in scenario.voters:
                if other != party:
                    assert f"SECRET-{other}-" not in req.text, (party, req.kind, req.round)
            # Caucus messages reach only the two parties in the caucus.
            for marker, visible_to in caucus_markers.items():
                if marker in req.text:
                    assert party in visible_to, (party, marker)
            # No other party's utilities, weights, reservation or red lines.
            for other, secrets in secrets_of.items():
                if other == party:
                    continue
                for line in secrets:
                    if line not in own:
                        assert line not in req.text, (party, other, line)
    # Each caucus message did reach its addressee (the mediator hears a reply at its next
    # proposal, so not after the last round).
    for e in caucus:
        (addressee,) = [p for p in e["visible_to"] if p != e["speaker"]]
        if e["kind"] == "caucus_reply" and e["round"] == rounds:
            continue
        assert any(e["text"] in req.text for req in by_party[addressee]), e


# --------------------------------------------------------------------------- bounded context


class Stubborn(Secretive):
    """Nobody ever accepts; every answer is as long as the schema allows; objections galore."""

    def pick(self, req: Req, path: tuple[str, ...], values: Sequence[Any]) -> Any:
        if path[-1:] == ("stance",):
            return "object"
        if path[-1:] == ("wants",):
            return values[-1]
        return super().pick(req, path, values)

    def text(self, req: Req, path: tuple[str, ...]) -> str:
        head = super().text(req, path)
        return (head + " " + "blah " * 200)[:2000]


def prompt_chars(req: Req) -> int:
    return sum(len(m.get("content") or "") for m in req.body["messages"])


def test_prompts_stay_bounded_over_ten_rounds(baseline: ScenarioBundle, tmp_path: Path) -> None:
    scenario = baseline.scenario
    responder = Stubborn(baseline)
    with serve(responder) as fake:
        record = run(baseline, all_llm(baseline, fake.base_url), tmp_path, max_rounds=10)
        reqs = requests_of(responder, fake.requests)
    events = check_finished(record, scenario)
    assert (events[-1]["status"], events[-1]["rounds"]) == ("no_deal", 10)
    size: dict[tuple[str, str, int], int] = {}
    tokens: dict[tuple[str, str, int], int] = {}
    for req in reqs:
        size[(req.party, req.kind, req.round)] = prompt_chars(req)
    for e in events:
        if e["type"] in ("response", "proposal"):
            tokens[
                (e["speaker"], "respond" if e["type"] == "response" else "propose", e["round"])
            ] = e["usage"]["prompt_tokens"]
    for party in scenario.parties:
        kind = "propose" if party == scenario.mediator else "respond"
        r2, r10 = size[(party, kind, 2)], size[(party, kind, 10)]
        assert r10 <= 1.5 * r2, (party, r2, r10)
        assert tokens[(party, kind, 10)] <= 1.5 * tokens[(party, kind, 2)], party
