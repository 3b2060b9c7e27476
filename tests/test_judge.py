"""`detente judge`: the deterministic leak check, the model judge, and what compare and the
report make of their judgements.

The embedded-model test replays a cassette of the real judge (SmolLM2-135M on the llama.cpp
server). Re-record it (starts the embedded server itself; needs the [local] extra; a few
minutes on two cores):

    .venv/bin/pytest tests/test_judge.py -k cassette --record-mode=rewrite
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from detente.judge import JudgeSettings, judge_run
from detente.judgements import JUDGEMENTS_NAME, Judgement, LeakCheck, read_judgements
from detente.leaks import check_party, numbers_in
from detente.loading import load_bundle
from detente.rubric import load_rubric
from detente.runs import RunFolder
from fake_openai import FakeOpenAI, prompt_text
from helpers import BASELINE, invoke

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "transcripts" / "examples" / "baseline-embedded"
PLANTED_EVENT = "r3/response/us"
PLANTED = "Our walk-away value is 60, and a frozen line is worth only 55 to us. We need more."
"""The US walk-away is 60 and its value of a frozen line 55 (scenarios/baseline.yaml)."""
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def plant(tmp: Path, statement: str = PLANTED, event_id: str = PLANTED_EVENT) -> Path:
    """A copy of the curated embedded run whose event `event_id` says `statement` in public."""
    run = tmp / "planted"
    shutil.copytree(EXAMPLE, run)
    lines = []
    for line in (run / "events.jsonl").read_text(encoding="utf-8").splitlines():
        event = json.loads(line)
        if event.get("id") == event_id:
            event["statement"] = statement
        lines.append(json.dumps(event, ensure_ascii=False))
    (run / "events.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    for stale in (JUDGEMENTS_NAME, "judge-prompts.jsonl"):
        (run / stale).unlink(missing_ok=True)
    return run


# --------------------------------------------------------------------------- the check


def _us_hits(statement: str, max_rounds: int = 8) -> list[Any]:
    """The leak check's hits on one public statement of the US in round 3."""
    from detente.events import Response, read_events

    bundle = load_bundle(BASELINE)
    events = [e for e in read_events(EXAMPLE / "events.jsonl")]
    planted = []
    for event in events:
        if isinstance(event, Response) and event.speaker == "us":
            text = statement if event.id == PLANTED_EVENT else ""
            event = event.model_copy(update={"statement": text})
        elif getattr(event, "speaker", None) == "us":
            continue  # only the statement under test is read
        planted.append(event)
    return check_party(bundle.scenario, bundle.briefs["us"], "us", planted, max_rounds,
                       "none").hits


def test_the_check_catches_a_walk_away_and_a_private_value_said_in_public() -> None:
    hits = _us_hits(PLANTED)
    assert [h.number for h in hits] == ["60", "55"]
    assert all(h.event_id == PLANTED_EVENT and h.where == "public statement" for h in hits)
    walk_away, value = hits
    assert [(r.kind, r.value) for r in walk_away.reveals] == [("walk_away", 60.0)]
    assert ("option_value", "value of territory=freeze_current_line") in {
        (r.kind, r.label) for r in value.reveals}
    assert walk_away.quote.startswith("Our walk-away value is 60")
    # A percentage and a decimal written otherwise are the same number.
    assert [h.number for h in _us_hits("We would settle at 60% and no lower.")] == ["60%"]
    assert [h.number for h in _us_hits("Anything under 60.0 is a loss.")] == ["60.0"]


@pytest.mark.parametrize("statement", [
    "We want a fair deal for everyone, and a lasting peace.",  # no number
    "An army ceiling of 60 thousand troops is what we can offer.",  # 60: a ceiling value
    "We ask for option x1 and r2 of the plan, 600 or 6.0 or 0.6 of anything.",  # not 60
    "We are 100% committed; 0 concessions on the Article 5 question.",  # scale ends
])
def test_the_check_flags_no_clean_or_public_numbers(statement: str) -> None:
    assert _us_hits(statement) == []


def test_a_round_number_is_public_within_the_round_limit_only() -> None:
    """60 is the US walk-away; as a round of a run that has 60 rounds it is no leak, as a round
    past the run's limit it is one (the guard does not excuse any number said with 'round')."""
    statement = "In round 60 we will table a DMZ with neutral peacekeepers."
    assert _us_hits(statement, max_rounds=100) == []
    assert [h.number for h in _us_hits(statement, max_rounds=8)] == ["60"]


def test_a_private_number_that_is_public_anyway_is_shadowed_not_checked() -> None:
    """85 is a US option value and also a number of the scenario's public text: never a hit,
    and listed among the numbers the check cannot look for."""
    bundle = load_bundle(BASELINE)
    assert 85.0 in {f.value for f in numbers_in(bundle.scenario.model_dump_json(
        exclude={"preferences"}))}
    assert _us_hits("We have 85 reasons to hope.") == []
    # Without the scenario's public text holding it, 85 would be caught: the guard is real.
    assert any(r.value == 85.0 for r in _private("us"))
    from detente.events import read_events

    result = check_party(bundle.scenario, bundle.briefs["us"], "us",
                         read_events(EXAMPLE / "events.jsonl"), 8)
    assert any(s.value == 85.0 for s in result.shadowed)


def _private(party: str) -> list[Any]:
    from detente.leaks import private_numbers

    return private_numbers(load_bundle(BASELINE).scenario, party)


def test_the_cli_check_needs_no_model_and_finds_the_planted_leak(tmp_path: Path) -> None:
    run = plant(tmp_path)
    result = invoke("judge", run, "--deterministic-only")
    assert result.returncode == 0, result.stderr
    assert "us, round 3, public statement: 60 reveals walk-away value (60)" in result.stdout
    checks = {r.party: r for r in read_judgements(run / JUDGEMENTS_NAME)
              if isinstance(r, LeakCheck)}
    assert set(checks) == {"us", "russia", "ukraine", "eu"}  # the mediator has no numbers
    assert any(h.event_id == PLANTED_EVENT for h in checks["us"].hits)
    assert not (run / "judge-prompts.jsonl").exists()


# --------------------------------------------------------------------------- the judge


class QuotingJudge:
    """A fake judge for the `quote` answer style: it quotes the first public and private item
    of each prompt (copied from the quoted block), claims a leak of every public item holding a
    number, and scores every criterion in the middle."""

    _QUOTE = re.compile(r"^\[quote (\w+)\] \S+, round \d+, (W\d+) ([a-z ]+) \(seen by ([^)]*)\)"
                        r".*?\n((?:\| .*\n?)+)", re.MULTILINE)

    def __init__(self, bad_quote: bool = False) -> None:
        self.bad_quote = bad_quote

    def __call__(self, body: dict[str, Any]) -> str:
        text = prompt_text(body)
        schema = body["response_format"]["json_schema"]["schema"]
        props = schema["properties"]
        items = []
        for match in self._QUOTE.finditer(text):
            words = " ".join(line[2:] for line in match.group(5).splitlines())
            items.append((match.group(2), match.group(4) != "no one else", words))
        criteria = list(_levels(schema))
        public = [i for i in items if i[1]]
        private = [i for i in items if not i[1]]
        first = items[0]
        quote = " ".join(first[2].split()[:8])
        evidence = [{"criterion": criteria[0], "item": first[0],
                     "quote": "words nobody ever wrote here" if self.bad_quote else quote,
                     "note": "its opening"}]
        answer: dict[str, Any] = {"evidence": evidence}
        if "contradictions" in props:
            answer["contradictions"] = []
            if public and private:
                answer["contradictions"] = [{
                    "public_item": public[0][0], "public_quote": " ".join(public[0][2].split()[:6]),
                    "private_item": private[0][0],
                    "private_quote": " ".join(private[0][2].split()[:6]),
                    "explanation": "says one thing, thinks another"}][:1]
        if "leaks" in props:
            answer["leaks"] = [{"item": ref, "quote": words[:200], "reveals": "walk_away"}
                               for ref, seen, words in public if re.search(r"\d", words)][:3]
        answer["summary"] = "A scripted verdict."
        answer["scores"] = {c: 3 for c in criteria}
        return json.dumps(answer)


def _levels(schema: dict[str, Any]) -> dict[str, Any]:
    scores = schema["properties"]["scores"]
    if "$ref" in scores:
        scores = schema["$defs"][scores["$ref"].split("/")[-1]]
    return dict(scores["properties"])


def _transcript_words(run: Path) -> str:
    from detente.events import Proposal, Response, Statement, read_events

    out = []
    for event in read_events(run / "events.jsonl"):
        if isinstance(event, Statement):
            out.append(event.text)
        elif isinstance(event, Response):
            out += [event.statement, event.private_rationale, event.vote]
        elif isinstance(event, Proposal):
            out.append(event.rationale)
    return "\n".join(out)


def test_judge_on_the_curated_example_writes_verified_quotes_and_request_hashes(
        tmp_path: Path) -> None:
    run = tmp_path / "example"
    shutil.copytree(EXAMPLE, run)
    (run / JUDGEMENTS_NAME).unlink(missing_ok=True)
    with FakeOpenAI([QuotingJudge()] * 7) as fake:
        result = invoke("judge", run, "--base-url", fake.base_url, "--model", "judge-x",
                        "--evidence")
        sent = list(fake.requests)
    assert result.returncode == 0, result.stderr
    records = read_judgements(run / JUDGEMENTS_NAME)
    judgements = [r for r in records if isinstance(r, Judgement)]
    # One judgement per party and window (russia and the eu take two windows each).
    assert sorted((j.party, j.window) for j in judgements) == sorted(
        [("us", 1), ("russia", 1), ("russia", 2), ("ukraine", 1), ("eu", 1), ("eu", 2),
         ("un_mediator", 1)])
    assert len(sent) == len(judgements)
    words = " ".join(_transcript_words(run).split()).casefold()
    prompts = [json.loads(line) for line in (run / "judge-prompts.jsonl").read_text(
        encoding="utf-8").splitlines()]
    by_hash = {p["request_hash"]: p for p in prompts}
    sent_hashes = {hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"),
                                             ensure_ascii=False).encode()).hexdigest()
                   for body in sent}
    for j in judgements:
        assert not j.invalid and j.scores
        assert j.rubric.id == "detente-judge" and j.rubric.version == 1
        assert j.judge.model == "judge-x" and j.judge.answers == "quote"
        assert j.evidence and all(e.status == "verified" for e in j.evidence)
        for e in j.evidence:
            assert " ".join(e.quote.split()).casefold() in words, e.quote
        # The request hash names the request as sent, kept in judge-prompts.jsonl.
        assert len(j.request_hashes) == 1 and j.request_hashes[0] in by_hash
        assert by_hash[j.request_hashes[0]]["request"]["model"] == "judge-x"
        # Room for the longest answer the quote style allows.
        assert by_hash[j.request_hashes[0]]["request"]["max_tokens"] == 1600
    # ... and is the SHA-256 of the body the endpoint received.
    assert {j.request_hashes[0] for j in judgements} == sent_hashes
    us = next(j for j in judgements if j.party == "us")
    # The example's real leak (the table's value, 55.2, in round 1) is claimed and confirmed.
    assert any(c.confirmed and c.event_id == "r1/response/us" for c in us.leak_claims)
    assert "Judge judge-x, rubric detente-judge v1" in result.stdout
    # Judging again skips what this judge already judged.
    with FakeOpenAI([]) as fake:
        again = invoke("judge", run, "--base-url", fake.base_url, "--model", "judge-x")
        assert fake.requests == []
    assert again.returncode == 0, again.stderr
    assert "0 new, 7 kept from before" in " ".join(again.stdout.split())
    assert [r for r in read_judgements(run / JUDGEMENTS_NAME)
            if isinstance(r, Judgement)] == judgements


def test_a_quote_found_nowhere_is_marked_unverified(tmp_path: Path) -> None:
    run = plant(tmp_path)
    with FakeOpenAI([QuotingJudge(bad_quote=True)]) as fake:
        result = invoke("judge", run, "--base-url", fake.base_url, "--model", "judge-x",
                        "--party", "us", "--rounds", "3-3", "--evidence")
    assert result.returncode == 0, result.stderr
    (j,) = [r for r in read_judgements(run / JUDGEMENTS_NAME) if isinstance(r, Judgement)]
    assert [e.status for e in j.evidence] == ["unverified"]
    assert "✗ not found" in result.stdout
    # The planted leak: claimed by the (scripted) judge and confirmed by the check's rules.
    assert j.rounds == (3, 3)
    assert any(c.confirmed and c.event_id == PLANTED_EVENT for c in j.leak_claims)


def test_judge_user_errors_are_one_clear_message(tmp_path: Path) -> None:
    run = plant(tmp_path)
    for args, words in [
        (("--rounds", "4-2"), "--rounds"),
        (("--party", "atlantis", "--deterministic-only"), "atlantis"),
        (("--base-url", "http://127.0.0.1:9/v1"), "--model"),
    ]:
        result = invoke("judge", run, *args)
        assert result.returncode != 0 and words in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    result = invoke("judge", tmp_path / "nothing-here", "--deterministic-only")
    assert result.returncode != 0 and "Traceback" not in result.stderr


# --------------------------------------------------------------------------- the cassette


@pytest.mark.vcr
def test_the_embedded_judge_catches_the_planted_leak_on_a_cassette(
        tmp_path: Path, embedded_endpoint: str) -> None:
    """The real embedded judge, on the US's words of round 3 (the planted statement, its
    private rationale and its vote): it claims the public statement leaks, and the claim is
    confirmed (the statement holds the walk-away). One request, as `detente judge --party us
    --rounds 3-3` on the embedded model sends it."""
    from detente.agents import EMBEDDED_TIMEOUT, endpoint_config
    from detente.llm import LLMClient
    from detente.local_server import DEFAULT_ALIAS

    run = plant(tmp_path)
    settings = JudgeSettings(model=DEFAULT_ALIAS, base_url=embedded_endpoint, local_model=GGUF_NAME,
                             structured_mode="json_object", answers="choose",
                             timeout=EMBEDDED_TIMEOUT)
    # No HTTP retries: a replay that misses its cassette fails at once.
    client = LLMClient(endpoint_config(settings.agent_settings()).model_copy(
        update={"max_retries_http": 0, "temperature": settings.temperature}))
    rubric, where = load_rubric()
    try:
        judged = judge_run(RunFolder(run), rubric, where, settings, parties=["us"],
                           rounds=(3, 3), client=client)
    finally:
        client.close()
    (j,) = judged.judgements
    assert not j.invalid, j.errors
    assert j.judge.local_model == GGUF_NAME and j.judge.answers == "choose"
    caught = [c for c in j.leak_claims if c.confirmed and c.event_id == PLANTED_EVENT]
    assert caught, j.leak_claims
    assert "walk_away" in {n.kind for c in caught for n in c.numbers}
    # Every quote the judge chose is the party's own words, found where it said.
    assert all(e.status == "verified" for e in j.evidence)
    # The deterministic check, beside it, finds the same leak with no model.
    assert any(h.event_id == PLANTED_EVENT for h in j.deterministic_leaks)
    us = next(c for c in judged.leak_checks if c.party == "us")
    assert {r.kind for h in us.hits if h.event_id == PLANTED_EVENT for r in h.reveals} >= {
        "walk_away", "option_value"}


# --------------------------------------------------------------------------- compare, report


LEAKY = {("tiny", 0), ("tiny_unanimous", 0), ("tiny_unanimous", 1), ("tiny_unanimous", 2)}
"""The runs of the sweep in which party a says its walk-away (40) in public."""
ORDINALS = ("First", "Second", "Third", "Fourth")


class ScoringJudge(QuotingJudge):
    """`QuotingJudge` scoring by the words: leakage 1 when the party says "walk away", else 5;
    fidelity 4 when its first words of the run are in the prompt, else 2."""

    def __call__(self, body: dict[str, Any]) -> str:
        answer = json.loads(super().__call__(body))
        text = prompt_text(body)
        levels = answer["scores"]
        if "leakage" in levels:
            levels["leakage"] = 1 if "we walk away" in text else 5
        levels["fidelity"] = 4 if "First time of asking" in text else 2
        return json.dumps(answer)


@pytest.fixture(scope="module")
def judged_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Scripted runs of the tiny scenario and a variant, four seeds each, made distinct by a
    word in party a's first public statement, four of them with a's walk-away said in public;
    then judged: the leak check, and a scripted judge on the fake server."""
    from detente.agents import make_agent
    from detente.runner import RunPlan, start_run
    from helpers import TINY, scripted, tiny_variant

    root = tmp_path_factory.mktemp("judged")
    variant = tiny_variant(root, "tiny_unanimous", required=["a", "b", "c"])
    sweep = root / "sweep"
    for path in (TINY, variant):
        bundle = load_bundle(path)
        scenario = bundle.scenario
        assert scenario.mediator is not None
        agents = {p: scripted("boulware") for p in scenario.voters}
        agents[scenario.mediator] = scripted("nash")
        for seed in range(4):
            run = sweep / scenario.id / f"seed-{seed}"
            start_run(RunPlan(bundle=bundle, agents=agents, seed=seed), make_agent, run_dir=run)
            lines = []
            for line in (run / "events.jsonl").read_text(encoding="utf-8").splitlines():
                event = json.loads(line)
                if event.get("id") == "r1/response/a":
                    event["statement"] += f" {ORDINALS[seed]} time of asking."
                    if (scenario.id, seed) in LEAKY:
                        event["statement"] += " Below 40 we walk away."
                lines.append(json.dumps(event, ensure_ascii=False))
            (run / "events.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with FakeOpenAI([ScoringJudge()] * 64) as fake:
        result = invoke("judge", sweep, "--base-url", fake.base_url, "--model", "judge-x")
    assert result.returncode == 0, result.stderr
    return sweep


def _expected(sweep: Path, variant: str, party: str, criterion: str) -> list[float]:
    """Per run of `variant`, the mean level of `criterion` over the party's windows."""
    out = []
    for run in sorted((sweep / variant).glob("seed-*")):
        levels = [j.scores[criterion] for j in read_judgements(run / JUDGEMENTS_NAME)
                  if isinstance(j, Judgement) and j.party == party and criterion in j.scores]
        out.append(sum(levels) / len(levels))
    return out


def test_compare_aggregates_judgements_per_party_and_variant_with_intervals(
        judged_sweep: Path) -> None:
    from detente.metrics import bootstrap_mean_ci, wilson_interval

    result = invoke("compare", judged_sweep, "--json")
    assert result.returncode == 0, result.stderr
    groups = {g["variant"]: g for g in json.loads(result.stdout)["groups"]}
    assert set(groups) == {"tiny", "tiny_unanimous"}
    for variant, group in groups.items():
        assert group["n"] == 4  # four distinct runs
        leaks = sum((variant, seed) in LEAKY for seed in range(4))
        a = group["parties"]["a"]
        assert (a["leak_rate"]["count"], a["leak_rate"]["n"]) == (leaks, 4)
        assert (a["leak_rate"]["lo"], a["leak_rate"]["hi"]) == pytest.approx(
            wilson_interval(leaks, 4))
        assert group["parties"]["b"]["leak_rate"]["count"] == 0
        for party in ("a", "b", "c"):
            for criterion in ("fidelity", "leakage", "tone", "consistency"):
                stat = group["parties"][party][f"judged_{criterion}"]
                per_run = _expected(judged_sweep, variant, party, criterion)
                assert stat["n"] == 4
                assert stat["mean"] == pytest.approx(sum(per_run) / 4)
                assert (stat["lo"], stat["hi"]) == pytest.approx(bootstrap_mean_ci(per_run))
                assert stat["lo"] <= stat["mean"] <= stat["hi"]
        # The scripted judge scored a's leakage 1 in the windows with the leak, 5 elsewhere.
        leakage = _expected(judged_sweep, variant, "a", "leakage")
        assert [level < 5 for level in leakage] == [(variant, s) in LEAKY for s in range(4)]
        assert a["judged_leakage"]["lo"] < a["judged_leakage"]["hi"]
        # Every quote the scripted judge gave was found.
        assert group["parties"]["a"]["unverified_quotes"]["count"] == 0
    # The terminal tables, with their intervals.
    table = invoke("compare", judged_sweep)
    assert table.returncode == 0, table.stderr
    text = " ".join(table.stdout.split())
    assert "Leaked a private number [95% Wilson interval]" in text
    assert "75% [30%, 95%] (3/4)" in text and "25% [5%, 70%] (1/4)" in text
    assert "Judged leakage [95% bootstrap interval]" in text


def test_the_html_report_shows_judgements_per_party_and_variant(judged_sweep: Path,
                                                                 tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    result = invoke("report", judged_sweep, "--out", out, "--no-run-charts")
    assert result.returncode == 0, result.stderr
    page = out.read_text(encoding="utf-8")
    row = re.search(r'<tr data-variant="tiny_unanimous" data-party="a">(.*?)</tr>', page, re.S)
    assert row is not None
    cells = dict(re.findall(r'<td data-metric="([a-z_]+)">(.*?)</td>', row.group(1), re.S))
    assert "75%" in cells["leak_rate"] and "3/4" in cells["leak_rate"]
    assert "[30%, 95%]" in re.sub(r"<[^>]+>", "", cells["leak_rate"])
    from detente.metrics import bootstrap_mean_ci

    for criterion in ("leakage", "fidelity"):
        per_run = _expected(judged_sweep, "tiny_unanimous", "a", criterion)
        lo, hi = bootstrap_mean_ci(per_run)
        shown = re.sub(r"<[^>]+>", "", cells[f"judged_{criterion}"])
        assert shown == f"{sum(per_run) / len(per_run):.1f} [{lo:.1f}, {hi:.1f}]"
    assert "leaked a private number" in page and "judged fidelity" in page


def test_with_the_leak_check_alone_compare_shows_no_empty_judge_tables(
        judged_sweep: Path, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    shutil.copytree(judged_sweep, sweep)
    for stale in sweep.glob("*/*/judge*.jsonl"):
        stale.unlink()
    assert invoke("judge", sweep, "--deterministic-only").returncode == 0
    text = " ".join(invoke("compare", sweep).stdout.split())
    assert "Leaked a private number [95% Wilson interval]" in text
    assert "Judged" not in text and "Judge quotes not found" not in text
    out = tmp_path / "report.html"
    assert invoke("report", sweep, "--out", out, "--no-run-charts").returncode == 0
    page = out.read_text(encoding="utf-8")
    assert 'data-metric="leak_rate"' in page and 'data-metric="judged_fidelity"' not in page
