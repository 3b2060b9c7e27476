"""Recorded negotiations on the embedded model, replayed offline.

The cassettes hold the real HTTP traffic of runs against the embedded llama.cpp server; the
`.expected` folders beside them hold the events and result those runs wrote. Replaying must give
the same events (timestamps and latencies aside) and the same scores.

Re-record (starts the embedded server itself; needs the [local] extra; a few minutes):

    .venv/bin/pytest tests/test_cassettes.py --record-mode=rewrite
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from detente.agents import EMBEDDED_TIMEOUT, endpoint_config, private_view
from detente.agents.llm_agent import LLMAgent
from detente.events import AgentSettings
from detente.loading import ScenarioBundle, load_bundle
from detente.runner import EVENTS, RESULT, RunPlan, start_run
from helpers import REPLAY_URL, recording

ROOT = Path(__file__).resolve().parent.parent
CASSETTES = Path(__file__).parent / "cassettes" / "test_cassettes"
RERECORD = ".venv/bin/pytest tests/test_cassettes.py --record-mode=rewrite"
QUOTE_KEY = "recorded-cassettes"
"""Random in real runs; fixed here so that a replay sends byte-identical requests."""

RECORDINGS = {
    "baseline": (ROOT / "scenarios" / "baseline.yaml", 3),
    "tiny": (ROOT / "tests" / "data" / "tiny" / "scenario.yaml", 3),
}


def _settings(base_url: str) -> AgentSettings:
    from detente.local_server import DEFAULT_ALIAS

    # As `detente run` sets up the embedded model: compact prompts, grammar-constrained answers,
    # the exact value of the table (assist `table`), the run's seed.
    # A request waits behind the other parties' at the server, as with `detente run`.
    return AgentSettings(kind="llm", model=DEFAULT_ALIAS, base_url=base_url, temperature=0.7,
                         max_tokens=800, structured_mode="json_object", prompt="compact",
                         assist="table", timeout=EMBEDDED_TIMEOUT)


def _factory(party: str, settings: AgentSettings, bundle: ScenarioBundle) -> Any:
    """Like `make_agent`, but without HTTP retries: a replay miss must fail at once."""
    from detente.llm import LLMClient

    config = endpoint_config(settings).model_copy(update={"max_retries_http": 0})
    return LLMAgent(party, private_view(bundle.scenario, party), bundle.briefs[party], settings,
                    LLMClient(config))


def _run(name: str, base_url: str, out: Path) -> Path:
    path, rounds = RECORDINGS[name]
    bundle = load_bundle(path)
    agents = {p: _settings(base_url) for p in bundle.scenario.parties}
    # A fixed quote key: the delimiters, and so the request bodies, are the recorded ones.
    plan = RunPlan(bundle=bundle, agents=agents, seed=0, max_rounds=rounds, out_root=out,
                   quote_key=QUOTE_KEY)
    return start_run(plan, _factory).run_dir


def _normalized(run_dir: Path) -> list[dict[str, Any]]:
    """Events without what legitimately changes between runs: times, latencies, paths, endpoints."""
    events = []
    for line in (run_dir / EVENTS).read_text().splitlines():
        event = json.loads(line)
        event.pop("time", None)
        event.pop("latency", None)
        if event["type"] == "header":
            event.pop("run_id")
            event.pop("scenario_path")  # absolute, so it depends on where the checkout is
            event.pop("quote_key", None)
            for agent in event["agents"].values():
                agent.pop("base_url", None)
        events.append(event)
    return sorted(events, key=lambda e: e["id"])


def _stale(name: str, why: str) -> None:
    pytest.fail(
        f"The recorded {name} negotiation did not replay: {why}\nThe cassette is missing or "
        "stale (prompts, schemas or the protocol changed since it was recorded). Re-record "
        f"with:\n    {RERECORD}",
        pytrace=False,
    )


def _replay_or_record(name: str, endpoint: str, tmp_path: Path, config: pytest.Config) -> None:
    try:
        run_dir = _run(name, endpoint, tmp_path)
    except Exception as exc:
        if recording(config):
            raise
        _stale(name, str(exc).splitlines()[0])
    expected = CASSETTES / f"{name}.expected"
    result = json.loads((run_dir / RESULT).read_text())
    if recording(config):
        assert result["status"] != "error", result["reason"]
        if expected.exists():
            shutil.rmtree(expected)
        expected.mkdir(parents=True)
        shutil.copy(run_dir / EVENTS, expected / EVENTS)
        shutil.copy(run_dir / RESULT, expected / RESULT)
        return
    if result["status"] == "error" or not expected.exists():
        _stale(name, result["reason"])
    recorded = json.loads((expected / RESULT).read_text())
    assert _normalized(run_dir) == _normalized(expected)
    assert result["scores"] == recorded["scores"]
    for key in ("status", "rounds_played", "package", "votes", "red_lines_broken", "total_tokens"):
        assert result[key] == recorded[key], key


@pytest.mark.timeout(3600)  # recording takes minutes; a replay, a second
@pytest.mark.vcr
def test_recorded_baseline_negotiation_replays_identically(
    embedded_endpoint: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    _replay_or_record("baseline", embedded_endpoint, tmp_path, request.config)


@pytest.mark.timeout(3600)
@pytest.mark.vcr
def test_recorded_tiny_negotiation_replays_identically(
    embedded_endpoint: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    _replay_or_record("tiny", embedded_endpoint, tmp_path, request.config)


def test_recorded_baseline_has_five_llm_agents_and_three_rounds() -> None:
    events = [json.loads(line) for line in
              (CASSETTES / "baseline.expected" / EVENTS).read_text().splitlines()]
    header = events[0]
    assert set(header["agents"]) == {"us", "russia", "ukraine", "eu", "un_mediator"}
    assert all(a["kind"] == "llm" for a in header["agents"].values())
    rounds = {e["round"] for e in events if e["type"] == "tally"}
    assert len(rounds) >= 3
    assert sum(e.get("usage", {}).get("completion_tokens", 0) for e in events) > 0


@pytest.mark.replay_only  # skipped before its cassette is touched when recording
@pytest.mark.default_cassette("test_recorded_tiny_negotiation_replays_identically.yaml")
@pytest.mark.vcr
def test_changed_prompt_is_caught_as_a_cassette_mismatch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import detente.agents.llm_agent as llm_agent

    original = llm_agent.compact_system_prompt
    monkeypatch.setattr(
        llm_agent, "compact_system_prompt",
        lambda *args: original(*args) + "\nBe bolder.",
    )
    # VCR refuses the unrecorded request; the run records the failure and re-raises it.
    with pytest.raises(Exception, match=r"(?i)cassette"):
        _run("tiny", REPLAY_URL, tmp_path)
    (run_dir,) = tmp_path.glob("tiny/*/")
    result = json.loads((run_dir / RESULT).read_text())
    assert result["status"] == "error"
    assert "cassette" in result["reason"].lower()
    # Everything before the failure is kept: the header at least.
    assert (run_dir / EVENTS).read_text().startswith('{"id":"header"')
