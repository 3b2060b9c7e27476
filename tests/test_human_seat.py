"""A person at the table: a human seat pauses the graph (LangGraph's interrupt), is
checkpointed there, answers exactly what an agent answers, and resumes where it stopped."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pexpect
import pytest

import detente
from detente.agents.human import HumanRequest, parse_answer
from detente.errors import DetenteError
from detente.loading import load_bundle
from detente.runner import RunPaused
from detente.scenario import Scenario
from helpers import TINY, Req, SchemaResponder, events_of, load, serve

ROOT = Path(__file__).resolve().parents[1]
AGENTS = "all=scripted:boulware,a=human"

ACCEPT_ALL = {"x": {"stance": "accept"}, "y": {"stance": "accept"}, "t": {"stance": "accept"}}


class Person:
    """A scripted person: answers by turn id, and records what they were shown."""

    def __init__(self, answers: Mapping[str, Any], stop_at: str | None = None) -> None:
        self.answers = dict(answers)
        self.stop_at = stop_at
        self.seen: list[HumanRequest] = []

    def __call__(self, request: HumanRequest, scenario: Scenario) -> Mapping[str, Any] | None:
        self.seen.append(request)
        if request.turn_id == self.stop_at:
            return None
        answer = self.answers[request.turn_id]
        return answer(request) if callable(answer) else answer


def respond(vote: str, statement: str = "", **stances: Any) -> dict[str, Any]:
    return {"vote": vote, "stances": {**ACCEPT_ALL, **stances}, "statement": statement,
            "private_rationale": f"note: {vote}"}


ANSWERS = {
    "opening/a": {"text": "a is here to protect x1"},
    "r1/response/a": respond("reject", "not yet", x={"stance": "object", "wants": "x1"}),
    "r2/response/a": respond("accept", "we can live with it"),
    "r3/response/a": respond("accept", "we can live with it"),
    "r4/response/a": respond("accept", "we can live with it"),
}


def _turns(run_dir: Path) -> list[dict[str, Any]]:
    """The events without times or latencies, by id: the order of answers given at once is
    the order they finished in."""
    out = []
    for e in events_of(run_dir):
        if e["type"] in ("header", "resumed"):
            continue
        out.append({k: v for k, v in e.items() if k not in ("time", "latency")})
    return sorted(out, key=lambda e: e["id"])


def test_a_person_answers_what_an_agent_answers_and_is_marked_human(tmp_path: Path) -> None:
    person = Person(ANSWERS)
    run = detente.run(TINY, agents=AGENTS, out=tmp_path, human=person)
    events = events_of(run.path)
    mine = [e for e in events if e.get("speaker") == "a"]
    assert mine and all(e["human"] for e in mine)
    assert not any(e.get("human") for e in events if e.get("speaker") not in (None, "a"))
    assert mine[0]["text"] == "a is here to protect x1"
    r1 = next(e for e in mine if e["id"] == "r1/response/a")
    assert r1["vote"] == "reject" and r1["stances"]["x"] == {"stance": "object", "wants": "x1"}
    assert r1["private_rationale"] == "note: reject"
    assert run.header.agents["a"].label() == "human"
    # What the person saw: their own values and red lines, the table's worth to them, the record.
    view = next(r for r in person.seen if r.turn_id == "r1/response/a").view
    assert "No deal is worth 40 to you" in view and "never x3" in view
    assert "Its value to you:" in view
    assert "a is here to protect x1" in view  # the public record
    assert "t_at_most_5" not in view and "reservation" not in view  # nobody else's numbers


def test_quitting_pauses_the_run_and_resume_asks_again_where_it_stopped(tmp_path: Path
                                                                         ) -> None:
    whole = detente.run(TINY, agents=AGENTS, out=tmp_path / "whole", human=Person(ANSWERS))
    first = Person(ANSWERS, stop_at="r2/response/a")
    with pytest.raises(RunPaused) as paused:
        detente.run(TINY, agents=AGENTS, out=tmp_path / "paused", human=first)
    run_dir = paused.value.run_dir
    assert paused.value.request.turn_id == "r2/response/a"
    assert detente.load_run(run_dir).status == "running"
    assert not any(e["id"] == "r2/response/a" for e in events_of(run_dir))
    # Nothing can ask the person: the run stays paused, with one clear message.
    with pytest.raises(DetenteError, match="a person plays this seat"):
        detente.resume(run_dir)
    second = Person(ANSWERS)
    resumed = detente.resume(run_dir, human=second)
    assert second.seen[0].turn_id == "r2/response/a"  # asked again, nothing before it
    assert resumed.result.status == whole.result.status
    assert _turns(resumed.path) == _turns(whole.path)


def test_an_invalid_answer_is_asked_again_with_the_reason(tmp_path: Path) -> None:
    tries: list[str] = []

    def r1(request: HumanRequest) -> dict[str, Any]:
        tries.append(request.problem)
        if len(tries) == 1:
            return respond("reject", x={"stance": "object", "wants": "x9"})
        return ANSWERS["r1/response/a"]

    detente.run(TINY, agents=AGENTS, out=tmp_path, human=Person({**ANSWERS, "r1/response/a": r1}))
    assert tries[0] == "" and "x: expected one of x1, x2, x3, got 'x9'" in tries[1]


def test_a_person_can_mediate(tmp_path: Path) -> None:
    def table(request: HumanRequest) -> dict[str, Any]:
        return {"package": {"options": {"x": "x2", "y": "y2"}, "terms": {"t": 5}},
                "rationale": "the middle", "caucus_with": "b", "caucus_message": "take it"}

    person = Person({"opening/m": {"text": "welcome"}, **{f"r{k}/proposal": table
                                                         for k in range(1, 5)}})
    run = detente.run(TINY, agents="all=scripted:conceder,m=human", out=tmp_path, human=person)
    events = events_of(run.path)
    proposal = next(e for e in events if e["id"] == "r1/proposal")
    assert proposal["human"] and proposal["package"]["options"] == {"x": "x2", "y": "y2"}
    caucus = next(e for e in events if e["id"] == "r1/caucus")
    assert caucus["visible_to"] == ["m", "b"] and caucus["text"] == "take it"


@pytest.mark.parametrize(("kind", "answer", "problem"), [
    ("respond", {"vote": "maybe"}, "vote: expected accept or reject"),
    ("respond", {"vote": "accept", "stances": {"x": {"stance": "accept"}}},
     "stances.y: expected accept or object"),
    ("respond", respond("reject", t={"stance": "object", "wants": 7}),
     "t: expected a number from 0 to 10 in steps of 5"),
    ("propose", {"package": {"options": {"x": "x1"}, "terms": {"t": 5}}},
     "y: expected one of y1, y2"),
    ("propose", {"package": {"options": {"x": "x1", "y": "y1"}, "terms": {"t": 5}},
                 "caucus_with": "m"}, "caucus_with: expected one of a, b, c"),
    ("opening", {"text": "  "}, "text: say something"),
])
def test_answers_are_checked_against_the_scenario(kind: str, answer: dict[str, Any],
                                                  problem: str) -> None:
    scenario = load_bundle(TINY).scenario
    request = HumanRequest(party="m" if kind == "propose" else "a", kind=kind, turn_id="t",
                           round=1, max_rounds=4, view="")
    with pytest.raises(ValueError, match=problem):
        parse_answer(scenario, request, answer)


def test_a_sweep_refuses_a_human_seat(tmp_path: Path) -> None:
    with pytest.raises(DetenteError, match="a person cannot play a seat in a sweep"):
        detente.sweep(TINY, seeds=1, agents=AGENTS, out=tmp_path)


# --------------------------------------------------------------------------- the terminal


class Rejecting(SchemaResponder):
    def vote(self, req: Req) -> str:
        return "accept" if req.round >= 2 else "reject"


def _spawn(args: list[str], cwd: Path) -> pexpect.spawn:
    env = {**os.environ, "COLUMNS": "120", "LINES": "50", "TERM": "xterm"}
    env.pop("OPENAI_BASE_URL", None)
    env["OPENAI_API_KEY"] = "sk-test"
    return pexpect.spawn(sys.executable, ["-m", "detente", *args], cwd=str(cwd), env=env,
                         encoding="utf-8", timeout=60, dimensions=(50, 120))


def _answer_round(child: pexpect.spawn, vote: str, statement: str) -> None:
    child.expect("Your vote")
    child.sendline(vote)
    for issue in ("x", "y", "t"):
        child.expect(f"{issue} \\(on the table")
        child.sendline("accept" if vote == "accept" or issue != "x" else "object")
        if vote == "reject" and issue == "x":
            child.expect("the option you want instead")
            child.sendline("1")
    child.expect("public statement")
    child.sendline(statement)
    child.expect("private note")
    child.sendline("only for me")


def test_a_person_plays_in_a_terminal_quits_in_round_2_and_finishes_after_resume(
        tmp_path: Path) -> None:
    """The real CLI in a pseudo-terminal: a person plays a against LLM agents (on a fake
    OpenAI server), quits at round 2, resumes and finishes."""
    with serve(Rejecting(load(TINY))) as fake:
        child = _spawn(["run", str(TINY), "--agent", "all=fake-model", "--agent", "a=human",
                        "--base-url", fake.base_url, "--out", str(tmp_path)], tmp_path)
        child.expect("your opening statement")
        child.expect("Your words")
        child.sendline("a wants x1 and says so")
        child.expect("your answer to the package on the table")
        child.expect("Its value to you")
        _answer_round(child, "reject", "not this one")
        child.expect("Round 2 of at most 4")
        child.expect("Your vote")
        child.sendline("quit")
        child.expect("Paused")
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 0
        (run_dir,) = [p.parent for p in tmp_path.glob("*/*/events.jsonl")]
        assert json.loads((run_dir / "result.json").read_text())["status"] == "running"

        child = _spawn(["run", "--resume", str(run_dir)], tmp_path)
        child.expect("Round 2 of at most 4")
        _answer_round(child, "accept", "agreed")
        child.expect("DEAL")
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 0
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "deal" and result["rounds_played"] == 2
    mine = {e["id"]: e for e in events_of(run_dir) if e.get("speaker") == "a"}
    assert mine["opening/a"]["text"] == "a wants x1 and says so" and mine["opening/a"]["human"]
    assert mine["r1/response/a"]["vote"] == "reject"
    table = next(e for e in events_of(run_dir) if e["id"] == "r1/proposal")["package"]
    first_other = next(o for o in ("x1", "x2", "x3") if o != table["options"]["x"])
    assert mine["r1/response/a"]["stances"]["x"] == {"stance": "object", "wants": first_other}
    assert mine["r2/response/a"]["statement"] == "agreed"
    assert mine["r2/response/a"]["private_rationale"] == "only for me"
