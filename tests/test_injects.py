"""Events during the talks ("injects", issue 14.5).

- A scheduled event reaches every agent that may see it from its round on, never before, and
  never an agent outside its `visible_to`: checked on every request the fake server received
  (openings, proposals, answers, caucuses; the mediator's too).
- It is in the transcript (Markdown, under its round, in the scenario's order) and in the HTML
  report.
- A `walk_away` event changes the party's walk-away from its round on in the rounds' measures
  and the score, and only the party's agent is told the number.
- Changing an event changes the scenario hash.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from detente.html_report import unpack_messages
from detente.loading import load_bundle
from detente.scenario import ScheduledEvent
from helpers import (
    Req,
    SchemaResponder,
    display_names,
    invoke,
    parse_request,
    run_dirs,
    serve,
    tiny_variant,
)

EVENTS: list[dict[str, Any]] = [
    {"id": "ceasefire_news", "round": 2, "kind": "news", "source": "assumption",
     "text": "Wire services report a ceasefire along the whole front line."},
    {"id": "shelling", "round": 3, "kind": "incident", "visible_to": ["b", "m"],
     "source": "assumption", "text": "Shelling hits a depot near the line of contact."},
    {"id": "a_pressed_at_home", "round": 2, "kind": "walk_away", "visible_to": ["a"],
     "source": "assumption", "text": "At home, a failure of the talks now costs a more.",
     "change": {"party": "a", "reservation_utility": 25}},
    {"id": "leaders_meet", "round": 2, "kind": "summit", "visible_to": "all",
     "source": "assumption", "text": "The leaders meet and urge a settlement."},
]
NUMBER = "Your walk-away utility is now 25"


def seen_by(event: dict[str, Any], party: str) -> bool:
    audience = event.get("visible_to", "all")
    return audience == "all" or party in audience


class Rejecting(SchemaResponder):
    """Every party rejects (the talks last every round), the mediator tables a new package
    each round and caucuses with b."""

    def vote(self, req: Req) -> str:
        return "reject"

    def caucus_with(self, req: Req) -> str:
        return "b"

    def pick(self, req: Req, path: tuple[str, ...], values: Any) -> Any:
        if path[:1] == ("package",):  # a new package every round: no deadlock
            return values[req.round % len(values)]
        return super().pick(req, path, values)


@pytest.fixture(scope="module")
def llm_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("injects")
    scenario = tiny_variant(tmp, "with_events", top={"events": EVENTS})
    bundle = load_bundle(scenario)
    with serve(Rejecting(bundle)) as fake:
        done = invoke("run", scenario, "--agent", "all=fake-model", "--agent", "m=fake-model",
                      "--base-url", fake.base_url, "--rounds", "4", "--out", tmp / "runs")
        assert done.returncode == 0, done.stdout + done.stderr
        names = display_names(bundle)
        requests = [parse_request(body, names) for body in fake.requests]
    [run] = run_dirs(tmp / "runs")
    report = invoke("report", run)
    assert report.returncode == 0, report.stdout + report.stderr
    return {"run": run, "requests": requests, "scenario": scenario}


def test_an_event_reaches_every_seeing_agent_from_its_round_on(llm_run: dict[str, Any]) -> None:
    requests: list[Req] = llm_run["requests"]
    assert {r.party for r in requests} == {"a", "b", "c", "m"}
    assert {r.round for r in requests} == {0, 1, 2, 3, 4}
    assert {r.kind for r in requests} >= {"opening", "propose", "respond", "caucus"}
    for req in requests:
        for event in EVENTS:
            expected = req.round >= event["round"] and seen_by(event, req.party)
            assert (event["text"] in req.text) == expected, (req.party, req.kind, req.round,
                                                             event["id"])
        # Only the party whose walk-away changes is told its new value.
        assert (NUMBER in req.text) == (req.party == "a" and req.round >= 2), (req.party,
                                                                               req.round)


def test_an_event_is_in_the_markdown_transcript_under_its_round(
        llm_run: dict[str, Any]) -> None:
    transcript = (llm_run["run"] / "transcript.md").read_text(encoding="utf-8")
    rounds = re.split(r"^## Round (\d+)", transcript, flags=re.MULTILINE)
    body = {int(rounds[k]): rounds[k + 1] for k in range(1, len(rounds), 2)}
    for event in EVENTS:
        where = [r for r, text in body.items() if event["text"] in text]
        assert where == [event["round"]], (event["id"], where)
    # In the scenario's order within a round, each with its audience.
    two = body[2]
    assert two.index("ceasefire") < two.index("failure of the talks") < two.index("leaders meet")
    assert "*Event (incident, private: seen by b and m only):* Shelling" in body[3]
    assert "*Event (news, seen by every party):* Wire services" in two
    assert "a's walk-away utility is now 25" in two


def test_an_event_is_in_the_html_report(llm_run: dict[str, Any]) -> None:
    page = unpack_messages((llm_run["run"] / "report.html").read_text(encoding="utf-8"))
    for event in EVENTS:
        assert page.count(event["text"]) == 1, event["id"]
    assert "Event: incident" in page and "Event: walk-away" in page
    assert "private: seen by Party B (b) and Party M (m)" in page


def test_events_are_logged_once_as_inject_events(llm_run: dict[str, Any]) -> None:
    lines = (llm_run["run"] / "events.jsonl").read_text(encoding="utf-8").splitlines()
    injects = [json.loads(line) for line in lines if '"type":"inject"' in line]
    assert [(e["id"], e["round"]) for e in injects] == [
        (f"inject/{e['id']}", e["round"]) for e in sorted(EVENTS, key=lambda e: e["round"])]


# --------------------------------------------------------------------------- walk-away


def test_a_walk_away_event_counts_from_its_round_in_the_measures_and_the_score(
        tmp_path: Path) -> None:
    """c is not needed by the rule: its new walk-away (60, then 20 from round 3) moves its
    surplus, never the outcome. Every round's surplus is against the walk-away in force then."""
    change = {"id": "c_relents", "round": 3, "kind": "walk_away", "visible_to": ["c"],
              "source": "assumption", "text": "c's capital wants any settlement now.",
              "change": {"party": "c", "reservation_utility": 20}}
    scenario = tiny_variant(tmp_path, "c_relents", top={"events": [change]})
    done = invoke("run", scenario, "--agent", "all=scripted:linear", "--agent", "m=scripted:nash",
                  "--out", tmp_path / "runs")
    assert done.returncode == 0, done.stdout + done.stderr
    [run] = run_dirs(tmp_path / "runs")
    result = json.loads((run / "result.json").read_text(encoding="utf-8"))
    assert result["rounds_played"] == 4
    for measured in result["rounds"]:
        c = measured["parties"]["c"]
        walk_away = 60 if measured["round"] < 3 else 20
        assert c["surplus"] == pytest.approx(c["utility"] - walk_away), measured["round"]
    assert result["scores"]["parties"]["c"]["reservation_utility"] == 20
    # Its scripted agent values against it from round 3 (its rationale says which is in force).
    lines = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    said = {e["round"]: e["private_rationale"] for e in lines
            if e["type"] == "response" and e["speaker"] == "c"}
    assert "reservation 60.0" in said[2] and "reservation 20.0" in said[3]


# --------------------------------------------------------------------------- the hash


@pytest.mark.parametrize("change", [
    {"text": "Wire services report a ceasefire along half the front line."},
    {"round": 3},
    {"kind": "incident"},
    {"visible_to": ["a"]},
])
def test_changing_an_event_changes_the_scenario_hash(tmp_path: Path,
                                                     change: dict[str, Any]) -> None:
    same = tiny_variant(tmp_path, "same", top={"events": EVENTS})
    again = tiny_variant(tmp_path, "copy", top={"events": EVENTS, "id": "same"})
    edited = [{**EVENTS[0], **change}, *EVENTS[1:]]
    other = tiny_variant(tmp_path, "edited", top={"events": edited, "id": "same"})
    assert load_bundle(same).content_hash == load_bundle(again).content_hash
    assert load_bundle(same).content_hash != load_bundle(other).content_hash
    none = tiny_variant(tmp_path, "none", top={"id": "same"})
    assert load_bundle(none).content_hash != load_bundle(same).content_hash


@pytest.mark.parametrize(("event", "problem"), [
    ({"round": 9}, "expected a round from 1 to 4"),
    ({"visible_to": ["zz"]}, "unknown party 'zz'"),
    ({"kind": "walk_away"}, "a `walk_away` event gives its `change`"),
    ({"change": {"party": "a", "reservation_utility": 10}}, "only a `walk_away` event has"),
    ({"kind": "walk_away", "visible_to": ["b"],
      "change": {"party": "a", "reservation_utility": 10}}, "('a') must see the event"),
])
def test_validate_names_what_is_wrong_with_an_event(
        tmp_path: Path, event: dict[str, Any], problem: str) -> None:
    scenario = tiny_variant(tmp_path, "bad", top={"events": [{**EVENTS[0], **event}]})
    done = invoke("validate", scenario)
    assert done.returncode == 2, done.stdout
    assert problem in " ".join((done.stdout + done.stderr).split())
    assert "Traceback" not in done.stdout + done.stderr


def test_analyze_at_a_round_uses_the_walk_aways_then(tmp_path: Path) -> None:
    scenario = tiny_variant(tmp_path, "a_relents", top={"events": [{
        **EVENTS[2], "change": {"party": "a", "reservation_utility": 0}}]})
    first = json.loads(invoke("analyze", scenario, "--json", "--no-frontier").stdout)
    later = json.loads(invoke("analyze", scenario, "--json", "--no-frontier", "--round", "2")
                       .stdout)
    assert first["reservation_utilities"]["a"] == 40
    assert later["reservation_utilities"]["a"] == 0
    assert later["zopa"] > first["zopa"]
    text = " ".join(invoke("analyze", scenario, "--no-frontier").stdout.split())
    assert "Event in round 2 (walk_away, seen by a): a_pressed_at_home; a's walk-away becomes 0" \
        in text


def test_a_scheduled_event_model_is_seen_by_its_audience() -> None:
    event = ScheduledEvent(id="e", round=1, kind="news", text="t", visible_to=["a"])
    assert event.seen_by("a") and not event.seen_by("b")
