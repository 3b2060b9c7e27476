"""Incentives (issue 14.4): a private goal overlaid on one party's brief.

- The overlay reaches the overlaid party's prompt, and no one else's: checked on every request
  the fake server received, for each of the four kinds at once (each party its own).
- A scripted saboteur on one seat blocks the deal the cooperative baseline reaches, in a
  scripted sweep, and `detente compare` says so: the deal rate against the baseline, whether the
  saboteur succeeded, and whether the others noticed (a word check of their words).
- A seat whose incentive no scripted strategy can play is one clear error, before the run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from detente.events import read_events
from detente.loading import load_bundle
from detente.sabotage import accusations
from helpers import (
    TINY,
    Req,
    SchemaResponder,
    display_names,
    invoke,
    parse_request,
    run_dirs,
    serve,
    tiny_variant,
)

MARK = "PRIVATE INCENTIVE (known only to you)"
EVERY_KIND = {
    "a": {"kind": "targeted", "target": "b", "source": "assumption"},
    "b": {"kind": "greedy", "source": "assumption"},
    "c": {"kind": "cooperative", "source": "assumption"},
    "m": {"kind": "saboteur", "source": "assumption"},
}
# A phrase only each kind's overlay says (see detente.agents.llm_agent.incentive_text).
PHRASE = {
    "a": "leave b as badly off as possible",
    "b": "pursue your own value only",
    "c": "you want these talks to succeed",
    "m": "these talks end without any agreement",
}


class Rejecting(SchemaResponder):
    """Every party rejects every package: the talks last every round."""

    def vote(self, req: Req) -> str:
        return "reject"


def llm_run(tmp_path: Path, scenario: Path, responder_class: type[SchemaResponder] = Rejecting,
            rounds: int = 2) -> tuple[Path, list[Req]]:
    """`detente run` with every seat, the mediator's too, an LLM on the fake server."""
    bundle = load_bundle(scenario)
    with serve(responder_class(bundle)) as fake:
        done = invoke("run", scenario, "--agent", "all=fake-model", "--agent", "m=fake-model",
                      "--base-url", fake.base_url, "--rounds", str(rounds),
                      "--out", tmp_path / "runs")
        assert done.returncode == 0, done.stdout + done.stderr
        names = display_names(bundle)
        requests = [parse_request(body, names) for body in fake.requests]
    [run] = run_dirs(tmp_path / "runs")
    return run, requests


@pytest.mark.parametrize("given", [["a", "b", "c", "m"], ["a"]], ids=["every-kind", "a-alone"])
def test_an_incentive_reaches_its_party_prompt_and_no_one_elses(
        tmp_path: Path, given: list[str]) -> None:
    incentives = {p: EVERY_KIND[p] for p in given}
    scenario = tiny_variant(tmp_path, "every_kind", top={"incentives": incentives})
    run, requests = llm_run(tmp_path, scenario)
    seen = {r.party for r in requests}
    assert seen == {"a", "b", "c", "m"}, seen
    assert {r.kind for r in requests} >= {"opening", "propose", "respond"}
    for req in requests:
        told = req.party in given
        assert req.text.count(MARK) == int(told), (req.party, req.kind, req.round)
        assert (MARK in req.system) == told  # in its brief (the system prompt), every turn
        for party, phrase in PHRASE.items():
            assert (phrase in req.text) == (party == req.party and told), \
                (req.party, req.kind, phrase)
    # The transcript names every incentive; the result keeps them for compare.
    transcript = (run / "transcript.md").read_text(encoding="utf-8")
    assert "Private incentives (each told to its own party only" in transcript
    assert "a **targeted at b**" in transcript
    assert ("m **saboteur**" in transcript) == ("m" in given)
    result = json.loads((run / "result.json").read_text(encoding="utf-8"))
    assert {p: {k: v for k, v in i.items() if v is not None}
            for p, i in result["incentives"].items()} == incentives


def test_without_an_incentive_no_prompt_states_one(tmp_path: Path) -> None:
    scenario = tiny_variant(tmp_path, "plain")
    _, requests = llm_run(tmp_path, scenario, rounds=1)
    assert requests and not any(MARK in r.text for r in requests)


# --------------------------------------------------------------------------- the scripted sweep


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A scripted sweep: the cooperative baseline (every voting party told to cooperate), the
    same scenario with party a a saboteur (its incentive), and the baseline with a played by
    `scripted:saboteur` (no incentive: the seat alone); compared by `detente compare`."""
    tmp = tmp_path_factory.mktemp("saboteur-sweep")
    cooperative = {p: {"kind": "cooperative", "source": "assumption"} for p in "abc"}
    base = tiny_variant(tmp, "cooperative", top={"incentives": cooperative})
    sabotaged = tiny_variant(tmp, "a_saboteur", top={
        "incentives": {**cooperative, "a": {"kind": "saboteur", "source": "assumption"}}})
    seats = ["--agent", "all=scripted:conceder", "--agent", "m=scripted:nash"]
    for args in ([base, sabotaged, *seats],
                 [base, *seats, "--agent", "a=scripted:saboteur", "--name", "seat"]):
        done = invoke("sweep", *args, "--seeds", "2", "--out", tmp / "sweeps")
        assert done.returncode == 0, done.stdout + done.stderr
    compared = invoke("compare", tmp / "sweeps", "--by", "scenario+agents",
                      "--against", "cooperative [all=scripted:conceder, m=scripted:nash]",
                      "--json")
    assert compared.returncode == 0, compared.stdout + compared.stderr
    table = invoke("compare", tmp / "sweeps", "--by", "scenario+agents",
                   "--against", "cooperative [all=scripted:conceder, m=scripted:nash]")
    assert table.returncode == 0, table.stdout + table.stderr
    return {"json": json.loads(compared.stdout), "text": table.stdout, "tmp": tmp}


def groups(sweep: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {g["variant"]: g for g in sweep["json"]["groups"]}


BASE = "cooperative [all=scripted:conceder, m=scripted:nash]"
BY_INCENTIVE = "a_saboteur [all=scripted:conceder, m=scripted:nash]"
BY_SEAT = "cooperative [all=scripted:conceder, a=scripted:saboteur, m=scripted:nash]"


def test_a_scripted_saboteur_lowers_the_deal_rate_shown_by_compare(
        sweep: dict[str, Any]) -> None:
    found = groups(sweep)
    assert set(found) == {BASE, BY_INCENTIVE, BY_SEAT}, set(found)
    assert sweep["json"]["reference"] == BASE
    assert found[BASE]["deal_rate"]["rate"] == 1.0
    for saboteur in (BY_INCENTIVE, BY_SEAT):
        assert found[saboteur]["deal_rate"]["rate"] == 0.0, saboteur
        # Tested against the reference: the saboteur's group less the cooperative baseline's.
        test = next(t for t in sweep["json"]["tests"] if t["a"] == saboteur)
        assert test["b"] == BASE
        assert test["deal_rate_diff"] == pytest.approx(-1.0)


def test_compare_reports_whether_the_saboteur_succeeded_and_was_noticed(
        sweep: dict[str, Any]) -> None:
    found = groups(sweep)
    assert found[BASE]["saboteur_succeeded"] is None  # no saboteur: not measured
    assert found[BASE]["saboteur_noticed"] is None
    for saboteur in (BY_INCENTIVE, BY_SEAT):
        assert found[saboteur]["saboteur_succeeded"]["rate"] == 1.0, saboteur
        # Scripted parties never accuse anyone.
        assert found[saboteur]["saboteur_noticed"]["rate"] == 0.0, saboteur
    text = " ".join(sweep["text"].split())
    assert "saboteur succeeded" in text and "saboteur noticed" in text


def test_the_saboteur_blocks_what_its_base_strategy_accepts(sweep: dict[str, Any]) -> None:
    """The deal the baseline makes is one the saboteur rejects, with a hard bargainer's
    objection in public and its reason only in its private rationale."""
    runs = sorted((sweep["tmp"] / "sweeps").glob("*/a_saboteur/*/events.jsonl"))
    assert runs
    events = read_events(runs[0])
    mine = [e for e in events if getattr(e, "speaker", None) == "a" and e.type == "response"]
    blocked = [e for e in mine if e.private_rationale.startswith("Saboteur:")]
    assert blocked, [e.private_rationale for e in mine]
    for answer in blocked:
        assert answer.vote == "reject"
        assert "Saboteur" not in answer.statement and "sabot" not in answer.statement.lower()


def test_a_saboteur_seat_as_a_design_factor_lowers_the_deal_rate_with_a_test(
        tmp_path: Path) -> None:
    """Scripted runs repeat themselves over seeds, so the samples come from the other seats:
    a's seat (conceder or saboteur) crossed with two mediators and two strategies for b, each
    cell a distinct run; `compare --by agent:a` pools over the rest and tests the deal rate."""
    done = invoke("sweep", TINY, "--seeds", "1", "--out", tmp_path,
                  "--agent", "all=scripted:conceder",
                  "--agent", "a=scripted:conceder,scripted:saboteur",
                  "--agent", "m=scripted:snt,scripted:oracle",
                  "--agent", "b=scripted:conceder,scripted:linear")
    assert done.returncode == 0, done.stdout + done.stderr
    compared = invoke("compare", tmp_path, "--by", "agent:a", "--json")
    assert compared.returncode == 0, compared.stdout + compared.stderr
    report = json.loads(compared.stdout)
    found = {g["variant"]: g for g in report["groups"]}
    assert report["reference"] == "scripted:conceder"
    assert (found["scripted:conceder"]["deals"], found["scripted:conceder"]["n"]) == (4, 4)
    assert (found["scripted:saboteur"]["deals"], found["scripted:saboteur"]["n"]) == (0, 4)
    assert found["scripted:saboteur"]["saboteur_succeeded"]["rate"] == 1.0
    [test] = report["tests"]
    assert test["a"] == "scripted:saboteur"
    assert test["deal_rate_diff"] == pytest.approx(-1.0)
    assert test["deal_rate_p"] < 0.05  # Fisher's exact test, 4 of 4 against 0 of 4


# --------------------------------------------------------------------------- noticed


class Accusing(Rejecting):
    """Party b says, in its answers, that party a is stalling."""

    def __init__(self, bundle: Any, accused: str) -> None:
        super().__init__(bundle)
        self.accused = accused

    def text(self, req: Req, path: tuple[str, ...]) -> str:
        if req.party == "b" and path[-1] == "statement":
            return f"We note that {self.accused} is stalling these talks. We want a deal."
        return super().text(req, path)


@pytest.mark.parametrize(("accused", "noticed"), [("Party A", True), ("Party C", False)])
def test_noticed_means_another_party_accused_the_saboteur(
        tmp_path: Path, accused: str, noticed: bool) -> None:
    scenario = tiny_variant(tmp_path, "llm_saboteur", top={
        "incentives": {"a": {"kind": "saboteur", "source": "assumption"}}})

    class Responder(Accusing):
        def __init__(self, bundle: Any) -> None:
            super().__init__(bundle, accused)

    run, _ = llm_run(tmp_path, scenario, Responder, rounds=1)
    compared = invoke("compare", run, "--json")
    assert compared.returncode == 0, compared.stdout + compared.stderr
    [group] = json.loads(compared.stdout)["groups"]
    assert group["saboteur_succeeded"]["rate"] == 1.0
    assert group["saboteur_noticed"]["rate"] == (1.0 if noticed else 0.0)


def test_the_word_check_names_the_party_and_an_accusation_in_one_sentence() -> None:
    from detente.events import Statement

    def said(speaker: str, text: str) -> Statement:
        return Statement(id=f"s{len(text)}", kind="caucus", round=2, speaker=speaker, text=text)

    events = [
        said("ukraine", "Russia keeps stalling. We want peace."),  # accuses
        said("eu", "The Russian delegation is playing for time!"),  # the stem of its id
        said("us", "Russia wants the army ceiling lower. Someone is stalling."),  # two sentences
        said("russia", "Russia is not stalling."),  # its own words
        said("ukraine", "Give us time; the Russian Federation has a point."),  # no accusation
    ]
    found = accusations(events, "russia", ["Russian Federation"])
    assert [(s.party, s.quote) for s in found] == [
        ("ukraine", "Russia keeps stalling."),
        ("eu", "The Russian delegation is playing for time!")]
    # A short id is a name only in capitals: "us" the pronoun never names the United States.
    assert not accusations([said("eu", "They want us to stall.")], "us")
    assert accusations([said("eu", "The US wants to stall.")], "us")


# --------------------------------------------------------------------------- errors


def test_an_incentive_no_scripted_strategy_plays_is_one_clear_error(tmp_path: Path) -> None:
    scenario = tiny_variant(tmp_path, "targeted", top={
        "incentives": {"a": {"kind": "targeted", "target": "b", "source": "assumption"}}})
    done = invoke("run", scenario, "--agent", "all=scripted:conceder", "--out", tmp_path / "o")
    assert done.returncode == 2
    output = done.stdout + done.stderr
    assert "Traceback" not in output
    message = " ".join(output.split())
    assert "'a' a `targeted` incentive, which scripted:conceder cannot play" in message
    assert "play 'a' with an LLM agent" in message
    assert not list((tmp_path / "o").glob("*/*/events.jsonl"))  # refused before any run


@pytest.mark.parametrize("design", [False, True])
def test_a_sweep_with_a_seat_no_scripted_strategy_can_play_is_refused_before_any_run(
    tmp_path: Path, design: bool
) -> None:
    # The tiny scenario next to a variant whose party `a` has a `targeted` incentive: the
    # variant's cells cannot run with scripted seats, so nothing runs, not even the tiny ones.
    scenario = tiny_variant(tmp_path, "targeted", top={
        "incentives": {"a": {"kind": "targeted", "target": "b", "source": "assumption"}}})
    if design:
        spec = tmp_path / "design.yaml"
        spec.write_text(json.dumps({"scenarios": [str(TINY), str(scenario)], "seeds": 2,
                                    "factors": {"agent:a": ["scripted:linear",
                                                            "scripted:boulware"]}}))
        done = invoke("sweep", spec, "--agent", "all=scripted:linear", "--out", tmp_path / "o")
    else:
        done = invoke("sweep", TINY, scenario, "--seeds", "2", "--agent", "all=scripted:linear",
                      "--out", tmp_path / "o")
    assert done.returncode == 2, done.stdout + done.stderr
    output = done.stdout + done.stderr
    assert "Traceback" not in output
    message = " ".join(output.split())
    assert "'a' a `targeted` incentive, which scripted:linear cannot play" in message
    assert "targeted" in message and "play 'a' with an LLM agent" in message
    assert not list((tmp_path / "o").rglob("events.jsonl"))  # refused before any run


@pytest.mark.parametrize(("incentive", "problem"), [
    ({"kind": "targeted", "source": "assumption"}, "names its `target` party"),
    ({"kind": "targeted", "target": "a", "source": "assumption"}, "cannot target itself"),
    ({"kind": "targeted", "target": "m", "source": "assumption"}, "unknown voting party 'm'"),
    ({"kind": "greedy", "target": "b", "source": "assumption"}, "only a `targeted` incentive"),
    ({"kind": "saboteur"}, "missing source tag"),
])
def test_validate_names_what_is_wrong_with_an_incentive(
        tmp_path: Path, incentive: dict[str, Any], problem: str) -> None:
    scenario = tiny_variant(tmp_path, "bad", top={"incentives": {"a": incentive}})
    done = invoke("validate", scenario)
    assert done.returncode == 2, done.stdout
    assert problem in " ".join((done.stdout + done.stderr).split())
    assert "Traceback" not in done.stdout + done.stderr
