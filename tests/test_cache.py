"""The response cache (issue 13, part 4): a repeated sweep or run makes no model call, hits are
recorded on the events (`cached: true`) and cost nothing, distinct seeds stay distinct requests,
an expired entry or an error is never served, and `detente cache stats|clear`.

Each test has its own cache folder (`DETENTE_CACHE_DIR`, set by conftest.py). The runs talk to
the fake OpenAI server, whose request log tells what reached the endpoint; the CLI runs in this
process.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from fake_openai import FakeOpenAI, HTTPError
from helpers import (
    ROOT,
    TINY,
    CliResult,
    Req,
    SchemaResponder,
    events_of,
    invoke,
    load,
    serve,
)

MODEL = "gpt-4o-mini"
LLM_TURNS = ("statement", "proposal", "refused_proposal", "response")


class Rejecting(SchemaResponder):
    """Every package rejected, so a run plays all its rounds."""

    def vote(self, req: Req) -> str:
        return "reject"


def sweep(fake: FakeOpenAI, out: Path, name: str, *extra: str, seeds: int = 2) -> CliResult:
    done = invoke("sweep", TINY, "--seeds", str(seeds), "--agent", f"all={MODEL}",
                  "--base-url", fake.base_url, "--rounds", "2", "--out", out, "--name", name,
                  *extra, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return done


def chat_calls(fake: FakeOpenAI) -> int:
    return len(fake.requests)


def turns(run_dir: Path) -> list[dict[str, Any]]:
    return [e for e in events_of(run_dir) if e["type"] in LLM_TURNS and e.get("llm")]


def result_of(run_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((run_dir / "result.json").read_text(encoding="utf-8"))
    return data


def flat(text: str) -> str:
    return " ".join(text.split())


def test_the_same_sweep_again_makes_no_model_call_and_costs_nothing(tmp_path: Path) -> None:
    with serve(Rejecting(load(TINY))) as fake:
        sweep(fake, tmp_path, "first")
        paid = chat_calls(fake)
        log_before = len(fake.log)
        again = sweep(fake, tmp_path, "second")
        assert chat_calls(fake) == paid  # zero model calls the second time
        # Zero requests of any kind: the endpoint answered the check before round one minutes
        # ago, so the repeat does not ask it again.
        assert fake.log[log_before:] == []

    assert paid > 0
    for seed in (0, 1):
        first = tmp_path / "first" / "tiny" / f"seed-{seed}"
        second = tmp_path / "second" / "tiny" / f"seed-{seed}"
        assert all(not t["llm"]["cached"] for t in turns(first))
        hits = turns(second)
        assert hits and all(t["llm"]["cached"] for t in hits)
        assert all(t["llm"]["cached_requests"] == len(t["llm"]["request_hashes"])
                   for t in hits)
        assert all(t["llm"]["cached_usage"] == t["usage"] for t in hits)
        # The same negotiation, word for word, for nothing.
        said = sorted(json.dumps([t["id"], t.get("text"), t.get("statement"), t.get("vote"),
                                  t.get("package")]) for t in hits)
        assert said == sorted(json.dumps([t["id"], t.get("text"), t.get("statement"),
                                          t.get("vote"), t.get("package")])
                              for t in turns(first))
        cost = result_of(second)["cost"]["total"]
        paid_cost = result_of(first)["cost"]["total"]
        assert paid_cost["usd"] > 0
        assert cost["usd"] == 0 and cost["priced_usd"] == 0
        assert cost["cached_requests"] == cost["requests"] == paid_cost["requests"]
        assert cost["prompt_tokens"] == paid_cost["prompt_tokens"]
        transcript = (second / "transcript.md").read_text(encoding="utf-8")
        assert (f"{cost['requests']} request(s) came from the response cache and cost nothing"
                in transcript)
    assert (f"Cost: $0 over {paid} model requests ({paid} answered from the response cache, "
            "free)") in flat(again.stdout)


def test_distinct_seeds_stay_distinct_and_extending_a_sweep_pays_only_for_the_new_seed(
    tmp_path: Path,
) -> None:
    with serve(Rejecting(load(TINY))) as fake:
        sweep(fake, tmp_path, "two")
        two = fake.requests
        sweep(fake, tmp_path, "three", seeds=3)
        added = fake.requests[len(two):]

    # Two seeds: every request went out (none answered by the other seed's), each its own.
    assert len({json.dumps(b, sort_keys=True) for b in two}) == len(two)
    assert {b["seed"] for b in two} == {0, 1}
    per_run = len(two) // 2
    assert sum(b["seed"] == 0 for b in two) == per_run
    for seed in (0, 1):
        assert not any(t["llm"]["cached"] for t in turns(tmp_path / "two" / "tiny" /
                                                         f"seed-{seed}"))
    # A third seed: seeds 0 and 1 come from the cache, seed 2 is asked for in full.
    assert len(added) == per_run and {b["seed"] for b in added} == {2}
    third = turns(tmp_path / "three" / "tiny" / "seed-2")
    assert third and not any(t["llm"]["cached"] for t in third)
    assert all(t["llm"]["cached"] for t in turns(tmp_path / "three" / "tiny" / "seed-0"))


def test_no_cache_and_a_plain_run_call_the_endpoint_and_run_cache_answers(
    tmp_path: Path,
) -> None:
    with serve(Rejecting(load(TINY))) as fake:
        sweep(fake, tmp_path, "first", seeds=1)
        paid = chat_calls(fake)
        sweep(fake, tmp_path, "uncached", "--no-cache", seeds=1)
        assert chat_calls(fake) == 2 * paid
        # `detente run` leaves the cache alone unless asked: seed 0 is the sweep's seed-0 run.
        args = ["run", TINY, "--agent", f"all={MODEL}", "--base-url", fake.base_url,
                "--rounds", "2"]
        plain = invoke(*args, "--out", tmp_path / "plain", cwd=ROOT)
        assert plain.returncode == 0, plain.stderr
        assert chat_calls(fake) == 3 * paid
        cached = invoke(*args, "--cache", "--out", tmp_path / "cached", cwd=ROOT)
        assert cached.returncode == 0, cached.stderr
        assert chat_calls(fake) == 3 * paid
    assert f"Cost: $0 ({paid} requests, {paid} from the cache;" in cached.stdout


def test_an_expired_entry_is_never_served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                          ) -> None:
    with serve(Rejecting(load(TINY))) as fake:
        sweep(fake, tmp_path, "first", seeds=1)
        paid = chat_calls(fake)
        monkeypatch.setenv("DETENTE_CACHE_DAYS", "0.00001")  # under a second
        time.sleep(1.0)
        stats = invoke("cache", "stats")
        assert f"entries: {paid} ({paid} expired, never served)" in stats.stdout
        sweep(fake, tmp_path, "second", seeds=1)
        assert chat_calls(fake) == 2 * paid


def test_an_error_is_never_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DETENTE_MAX_RETRIES", "0")
    answers = Rejecting(load(TINY))
    down = {"on": True}

    def respond(body: dict[str, Any]) -> Any:
        return HTTPError(500, "down for a moment") if down["on"] else answers(body)

    with serve(respond) as fake:
        failed = invoke("sweep", TINY, "--seeds", "1", "--agent", f"all={MODEL}",
                        "--base-url", fake.base_url, "--rounds", "1", "--out", tmp_path,
                        "--name", "s", cwd=ROOT)
        assert failed.returncode == 1
        refused = fake.requests
        assert refused
        down["on"] = False
        rerun = sweep(fake, tmp_path, "s", "--rounds", "1", seeds=1)
        after = fake.requests[len(refused):]
    assert "1 already complete" not in rerun.stdout
    # What failed was asked again, not answered from the cache.
    sent_again = {json.dumps(b, sort_keys=True) for b in after}
    assert {json.dumps(b, sort_keys=True) for b in refused} <= sent_again
    assert result_of(tmp_path / "s" / "tiny" / "seed-0")["status"] in ("deal", "no_deal")


def test_cache_stats_and_clear(tmp_path: Path) -> None:
    folder = Path(os.environ["DETENTE_CACHE_DIR"])
    empty = invoke("cache", "stats")
    assert empty.returncode == 0, empty.stderr
    assert f"Response cache: {folder / 'responses.sqlite'}" in flat(empty.stdout)
    assert "empty" in empty.stdout

    with serve(Rejecting(load(TINY))) as fake:
        sweep(fake, tmp_path, "first", seeds=1)
        paid = chat_calls(fake)
        sweep(fake, tmp_path, "second", seeds=1)
        tokens = result_of(tmp_path / "first" / "tiny" / "seed-0")["cost"]["total"]
        held = tokens["prompt_tokens"] + tokens["completion_tokens"]

        stats = invoke("cache", "stats")
        assert stats.returncode == 0, stats.stderr
        shown = flat(stats.stdout)
        assert f"entries: {paid} (0 expired, never served)" in shown
        assert f"hits: {paid} requests answered from it" in shown
        assert f"tokens held: {held:,}" in shown
        assert "Entries are served for 30 days" in shown

        recent = invoke("cache", "clear", "--older-than", "1")
        assert recent.returncode == 0, recent.stderr
        assert "Removed 0 entries older than 1 days" in flat(recent.stdout)
        cleared = invoke("cache", "clear")
        assert cleared.returncode == 0, cleared.stderr
        assert (f"Removed {paid} entries from {folder / 'responses.sqlite'}."
                in flat(cleared.stdout))
        assert "empty" in invoke("cache", "stats").stdout

        sweep(fake, tmp_path, "third", seeds=1)  # nothing left to answer from
        assert chat_calls(fake) == 2 * paid


@pytest.mark.parametrize("args, env, says", [
    (["clear", "--older-than", "1", "--expired"], {}, "not both"),
    (["stats"], {"DETENTE_CACHE_DAYS": "soon"}, "DETENTE_CACHE_DAYS: expected a number of days"),
    (["stats"], {"DETENTE_CACHE_DAYS": "0"}, "DETENTE_CACHE_DAYS: expected a number of days"),
])
def test_cache_command_errors_are_one_clear_line(
    args: list[str], env: dict[str, str], says: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    done = invoke("cache", *args)
    assert done.returncode == 2
    assert "Traceback" not in done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], lines


def test_an_unusable_cache_folder_is_a_clear_error(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder", encoding="utf-8")
    monkeypatch.setenv("DETENTE_CACHE_DIR", str(blocker / "cache"))
    with serve(Rejecting(load(TINY))) as fake:
        for command in ("run", "sweep"):
            done = invoke(command, TINY, "--cache", "--agent", f"all={MODEL}", "--base-url",
                          fake.base_url, "--rounds", "1", "--out", tmp_path / command,
                          cwd=ROOT)
            assert done.returncode != 0
            assert "Traceback" not in done.stdout + done.stderr
            lines = [line for line in done.stderr.splitlines() if line.strip()]
            assert len(lines) == 1 and "--no-cache" in lines[0], done.stderr
            assert str(blocker) in lines[0]
            assert not (tmp_path / command).exists()
        assert not fake.requests


def test_the_endpoint_check_is_remembered_only_with_the_cache_and_for_an_hour(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run with the cache skips the check before round one for an endpoint that passed it
    within the hour; without the cache, or an hour later, or with another key, it asks again;
    and a dead endpoint is still one clear error once the cache cannot answer."""
    from detente import cache as cache_module

    def checks(fake: FakeOpenAI, start: int) -> int:
        return sum(r.path == "/v1/models" for r in fake.log[start:])

    def run(fake: FakeOpenAI, *extra: str) -> CliResult:
        return invoke("run", TINY, "--agent", f"all={MODEL}", "--base-url", fake.base_url,
                      "--rounds", "1", "--out", tmp_path, *extra, cwd=ROOT)

    with serve(Rejecting(load(TINY))) as fake:
        assert run(fake, "--cache").returncode == 0
        assert checks(fake, 0) == 1
        start = len(fake.log)
        assert run(fake, "--cache").returncode == 0
        assert checks(fake, start) == 0 and fake.log[start:] == []  # all from the cache
        start = len(fake.log)
        assert run(fake, "--no-cache").returncode == 0
        assert checks(fake, start) == 1
        start = len(fake.log)
        monkeypatch.setenv("OPENAI_API_KEY", "another-key")
        assert run(fake, "--cache").returncode == 0
        assert checks(fake, start) == 1  # a new key is checked again
        start = len(fake.log)
        monkeypatch.setattr(cache_module, "ENDPOINT_CHECK_SECONDS", 0.0)
        assert run(fake, "--cache").returncode == 0
        assert checks(fake, start) == 1  # the hour is over
        dead = fake.base_url
    # The server is gone; the check is remembered, but a request the cache cannot answer (a
    # seed it never saw) fails with one message and no traceback.
    monkeypatch.setattr(cache_module, "ENDPOINT_CHECK_SECONDS", 3600.0)
    failed = invoke("run", TINY, "--agent", f"all={MODEL}", "--base-url", dead, "--rounds",
                    "1", "--seed", "7", "--out", tmp_path, "--cache", "--max-retries", "0",
                    cwd=ROOT)
    assert failed.returncode != 0
    assert "Traceback" not in failed.stderr and failed.stderr.strip()
