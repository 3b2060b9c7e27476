"""Faulty endpoints and secrets, against the fake OpenAI server on 127.0.0.1.

A malformed body or an empty `choices` list is an invalid answer (asked again, then
`invalid_response`), never the end of a run; a stalled call gives up after the configured
timeout; an API key or a URL password never reaches a file or the terminal; and a sweep against
an endpoint that faults one call in five completes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from detente.llm import EndpointConfig, InvalidResponseError, LLMClient, LLMTransportError
from fake_openai import FakeOpenAI, HTTPError, Raw, Stall
from faults import NO_CHOICES, Faulty
from helpers import (
    ROOT,
    TINY,
    Cli,
    SchemaResponder,
    display_names,
    events_of,
    invoke,
    load,
    parse_request,
    serve,
)

pytestmark = pytest.mark.reliability

SENTINEL = "sk-SENTINEL-4f1c9e0a7b"
MESSAGES = [{"role": "user", "content": "answer"}]


class Answer(BaseModel):
    x: int


def client(fake: FakeOpenAI, **config: Any) -> LLMClient:
    return LLMClient(EndpointConfig(model="fake-model", base_url=fake.base_url,
                                    max_retries_http=0, api_key="sk-test", **config))


# --------------------------------------------------------------------------- bodies


def test_a_malformed_body_is_an_invalid_answer_asked_again() -> None:
    with FakeOpenAI([Raw("not json at all"), Raw('{"id": 1, "choices": '), '{"x": 1}']) as fake:
        result = client(fake).complete(MESSAGES, Answer)
        bodies = fake.requests
    assert result.parsed.x == 1
    assert len(result.validation_errors) == 2
    assert all("(malformed)" in e for e in result.validation_errors)
    assert bodies[0] == bodies[1] == bodies[2]  # asked again as is, with no correction


def test_empty_choices_end_as_invalid_response_not_as_an_error() -> None:
    with FakeOpenAI([Raw(NO_CHOICES)] * 3) as fake, pytest.raises(InvalidResponseError) as err:
        client(fake).complete(MESSAGES, Answer)
    assert "no choices" in str(err.value)
    assert err.value.attempts == 3


def test_a_party_that_only_gets_bad_bodies_is_invalid_and_the_run_goes_on(
    tmp_path: Path, cli: Cli
) -> None:
    bundle = load(TINY)
    inner = SchemaResponder(bundle)

    def responder(body: dict[str, Any]) -> Any:
        if "You are Party B" in body["messages"][0]["content"]:
            return Raw(NO_CHOICES) if len(body["messages"]) % 2 else Raw("{")
        return inner(body)

    with serve(responder) as fake:
        result = cli("run", TINY, "--model", "fake-model", "--base-url", fake.base_url,
                     "--rounds", "1", "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    (run_dir,) = tmp_path.glob("tiny/*/")
    response = next(e for e in events_of(run_dir) if e["id"] == "r1/response/b")
    assert response["invalid"] and response["vote"] == "reject"
    assert json.loads((run_dir / "result.json").read_text())["status"] != "error"


# --------------------------------------------------------------------------- timeouts


def test_a_stalled_call_gives_up_after_the_timeout() -> None:
    with FakeOpenAI([Stall(5.0, '{"x": 1}')]) as fake:
        started = time.monotonic()
        with pytest.raises(LLMTransportError, match=r"did not answer within 0\.5 s"):
            client(fake, timeout=0.5).complete(MESSAGES, Answer)
        assert time.monotonic() - started < 3


@pytest.mark.parametrize("how", ["flag", "environment", "config"])
def test_the_timeout_is_a_setting(how: str, tmp_path: Path, cli: Cli,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    args: list[str | Path] = []
    if how == "flag":
        args = ["--timeout", "0.5"]
    elif how == "environment":
        monkeypatch.setenv("DETENTE_TIMEOUT", "0.5")
    else:
        config = tmp_path / "detente.toml"
        config.write_text("[defaults]\ntimeout = 0.5\n")
        args = ["--config", config]
    with serve(Stall(3.0, "{}")) as fake:
        started = time.monotonic()
        result = cli("run", TINY, "--model", "fake-model", "--base-url", fake.base_url,
                     "--max-retries", "0", "--rounds", "1", "--out", tmp_path / "runs", *args)
    assert result.returncode == 1, result.stderr
    assert "did not answer within 0.5 s" in result.stderr
    assert time.monotonic() - started < 20
    (run_dir,) = (tmp_path / "runs").glob("tiny/*/")
    assert events_of(run_dir)[0]["agents"]["a"]["timeout"] == 0.5


def test_a_bad_timeout_is_one_clear_error(tmp_path: Path, cli: Cli,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DETENTE_TIMEOUT", "soon")
    result = cli("run", TINY, "--model", "m", "--base-url", "http://127.0.0.1:9/v1",
                 "--out", tmp_path)
    assert result.returncode == 2 and "DETENTE_TIMEOUT" in result.stderr
    assert "Traceback" not in result.stderr


# --------------------------------------------------------------------------- secrets


def _every_file(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


def _assert_nowhere(secret: str, folder: Path, *texts: str) -> None:
    for path in _every_file(folder):
        assert secret.encode() not in path.read_bytes(), path
    for text in texts:
        assert secret not in text


def test_an_api_key_echoed_by_the_endpoint_is_never_written(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SENTINEL)
    echo = HTTPError(401, f"Incorrect API key provided: {SENTINEL}. Authorization: Bearer "
                          f"{SENTINEL}")
    bundle = load(TINY)
    inner = SchemaResponder(bundle)
    calls = {"n": 0}

    def responder(body: dict[str, Any]) -> Any:
        calls["n"] += 1
        return echo if calls["n"] > 3 else inner(body)  # fail mid-run, after a few answers

    with serve(responder) as fake:
        result = cli("run", TINY, "--model", "fake-model", "--base-url", fake.base_url,
                     "--max-retries", "0", "--out", tmp_path)
    assert result.returncode == 1, result.stderr
    assert "HTTP 401" in result.stderr and "[redacted]" in result.stderr
    (run_dir,) = tmp_path.glob("tiny/*/")
    assert {"events.jsonl", "result.json", "transcript.md", "checkpoints.sqlite",
            "prompts.jsonl"} <= {p.name for p in _every_file(run_dir)}
    _assert_nowhere(SENTINEL, run_dir, result.stdout, result.stderr)


def test_a_password_in_the_endpoint_url_is_never_stored(tmp_path: Path, cli: Cli) -> None:
    bundle = load(TINY)
    with serve(SchemaResponder(bundle)) as fake:
        url = fake.base_url.replace("http://", f"http://user:{SENTINEL}@")
        result = cli("run", TINY, "--model", "fake-model", "--base-url", url, "--rounds", "1",
                     "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    (run_dir,) = tmp_path.glob("tiny/*/")
    header = events_of(run_dir)[0]
    assert header["agents"]["a"]["base_url"] == fake.base_url
    _assert_nowhere(SENTINEL, run_dir, result.stdout, result.stderr)


# --------------------------------------------------------------------------- a faulty sweep


def _all_lines_parse(folder: Path) -> int:
    count = 0
    for log in [*folder.rglob("events.jsonl"), *folder.rglob("prompts.jsonl")]:
        for line in log.read_text(encoding="utf-8").split("\n"):
            if line:
                json.loads(line)
                count += 1
    return count


@pytest.mark.timeout(900)
def test_a_sweep_against_an_endpoint_faulting_one_call_in_five_completes(
    tmp_path: Path,
) -> None:
    bundle = load(TINY)
    faulty = Faulty(SchemaResponder(bundle), rate=0.2, stall=4.0, salt="sweep")
    args = ["sweep", str(TINY), "--seeds", "50", "--concurrency", "16", "--agent",
            "all=fake-model", "--rounds", "2", "--timeout", "1.5", "--out", str(tmp_path),
            "--name", "faulty"]
    with serve(faulty, calls=100_000) as fake:  # the sweep runs in this process, on one loop
        first = invoke(*args, "--base-url", fake.base_url, cwd=ROOT)
        manifest = json.loads((tmp_path / "faulty" / "sweep.json").read_text())
        done = [e for e in manifest["entries"] if e["status"] == "complete"]
        failed = [e for e in manifest["entries"] if e["status"] == "failed"]
        assert len(done) >= 48, (first.stdout[-2000:], first.stderr[-2000:], failed)
        for entry in failed:
            assert "malformed" not in entry["reason"] and "choices" not in entry["reason"]
        assert "Traceback" not in first.stderr and "Traceback" not in first.stdout
        second = invoke(*args, "--base-url", fake.base_url, cwd=ROOT)
        assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-2000:]
    manifest = json.loads((tmp_path / "faulty" / "sweep.json").read_text())
    assert all(e["status"] == "complete" for e in manifest["entries"])
    assert set(faulty.injected) >= {"429", "500", "reset", "stall", "malformed", "no_choices",
                                    "schema"}
    assert _all_lines_parse(tmp_path / "faulty") > 500


# --------------------------------------------------------------------------- a failure mid-round


def test_a_failed_call_leaves_the_error_outcome_last_and_keeps_the_siblings_answers(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Party A's answer in round 1 fails (HTTP 400, not retried) while Party B's answer is being
    # written: B's answer arrived, so it is kept, and the error and its outcome come after it.
    from detente.events import EventLog

    bundle = load(TINY)
    inner = SchemaResponder(bundle)
    names = display_names(bundle)

    def responder(body: dict[str, Any]) -> Any:
        req = parse_request(body, names)
        if req.kind == "respond" and req.party == "a":
            time.sleep(0.3)
            return HTTPError(400, "no such thing")
        return inner(body)

    original = EventLog.write

    def slow_write(self: EventLog, *events: Any) -> Any:
        if any(getattr(e, "id", "") == "r1/response/b" for e in events):
            time.sleep(1.0)  # B's answer is on its way to the disk when A's call fails
        return original(self, *events)

    monkeypatch.setattr(EventLog, "write", slow_write)
    with serve(responder) as fake:
        result = cli("run", TINY, "--model", "fake-model", "--base-url", fake.base_url,
                     "--max-retries", "0", "--rounds", "1", "--out", tmp_path)
    assert result.returncode == 1, result.stderr
    time.sleep(1.5)  # anything still writing has written by now
    (run_dir,) = tmp_path.glob("tiny/*/")
    events = events_of(run_dir)
    ids = [e["id"] for e in events]
    assert events[-1]["type"] == "outcome" and events[-1]["status"] == "error", ids[-3:]
    assert "r1/response/b" in ids and ids.index("r1/response/b") < ids.index("error/1"), ids
    assert json.loads((run_dir / "result.json").read_text())["status"] == "error"
