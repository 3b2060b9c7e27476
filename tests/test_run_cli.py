"""`detente run` as a user meets it: its exit status, its stderr and its run folder.

A module fixture runs every case and the tests check what each left: bad input (exit 2, one
`error:` line, no traceback, no run folder) and an API failure mid-run (exit 1, the folder keeps
everything written before, with an `error` event and an `error` outcome). Two cases run as real
processes (`python -m detente`, started at once), the rest in this process meanwhile: a
process of their own would add only interpreter start-up.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from detente.loading import load_bundle
from fake_openai import FakeOpenAI, HTTPError
from helpers import TINY, SchemaResponder, events_of, invoke, parse_request, run_dirs, serve

TIMEOUT = 120


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any OpenAI or detente setting, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "DETENTE_"))}
    env.update({"COLUMNS": "200", "NO_COLOR": "1", "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class FailAfterOpenings(SchemaResponder):
    """Answers the opening statements, then every later call with HTTP 500."""

    def __call__(self, body: dict[str, Any]) -> Any:
        if parse_request(body, self.names).kind != "opening":
            return HTTPError(500, "the fake server broke down")
        return super().__call__(body)


@dataclass
class Case:
    args: list[str]
    env: dict[str, str] = field(default_factory=clean_env)
    stderr_has: tuple[str, ...] = ()
    process: bool = False
    """Run as `python -m detente` in a process of its own."""


@dataclass
class Finished:
    out: Path
    returncode: int
    stdout: str
    stderr: str


def launch(cases: dict[str, Case], root: Path) -> dict[str, Finished]:
    """Run every case: the processes at once, the others in this process meanwhile."""

    def here(name: str) -> Finished:
        case = cases[name]
        out = root / name
        work = root / f"{name}-cwd"
        work.mkdir(parents=True)
        with pytest.MonkeyPatch.context() as patch:
            for key in [k for k in os.environ if k not in case.env]:
                patch.delenv(key)
            for key, value in case.env.items():
                patch.setenv(key, value)
            done = invoke("run", *case.args, "--out", str(out), cwd=work)
        return Finished(out, done.returncode, done.stdout, done.stderr)

    def one(name: str) -> Finished:
        case = cases[name]
        out = root / name
        work = root / f"{name}-cwd"
        work.mkdir(parents=True)
        try:
            done = subprocess.run(
                [sys.executable, "-m", "detente", "run", *case.args, "--out", str(out)],
                cwd=work,
                env=case.env,
                capture_output=True,
                text=True,
                timeout=TIMEOUT,
            )
        except subprocess.TimeoutExpired as exc:
            return Finished(out, -1, str(exc.stdout), str(exc.stderr))
        return Finished(out, done.returncode, done.stdout, done.stderr)

    processes = [name for name, case in cases.items() if case.process]
    with ThreadPoolExecutor(max_workers=len(processes) or 1) as pool:
        started = {name: pool.submit(one, name) for name in processes}
        finished = {name: here(name) for name in cases if name not in started}
        finished |= {name: future.result() for name, future in started.items()}
    return {name: finished[name] for name in cases}


BAD_INPUT: dict[str, tuple[str, ...]] = {
    "unknown_scenario": ("no-such-scenario.yaml", "no such file"),
    "unknown_party": ("zz", "unknown party"),
    "unknown_strategy": ("scripted:telepathy", "unknown strategy"),
    "malformed_agent": ("PARTY=SPEC",),
    "unreachable": ("cannot reach",),
    "missing_key": ("OPENAI_API_KEY",),
    "unauthorized": ("401",),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Finished]]:
    root = tmp_path_factory.mktemp("cli")
    tiny = str(TINY)
    with (
        FakeOpenAI(api_key="sk-the-right-key") as locked,
        serve(FailAfterOpenings(load_bundle(TINY))) as failing,
    ):
        cases = {  # the slowest (openai's own retries with back-off) first
            "api_error": Case([tiny, "--base-url", failing.base_url, "--model", "fake-model"],
                              process=True),
            "unreachable": Case(
                [tiny, "--base-url", f"http://127.0.0.1:{free_port()}/v1", "--model", "x"]
            ),
            "unknown_scenario": Case(
                [str(root / "no-such-scenario.yaml"), "--agent", "all=scripted:linear"],
                process=True,
            ),
            "unknown_party": Case(
                [tiny, "--agent", "zz=scripted:linear", "--agent", "all=scripted:linear"]
            ),
            "unknown_strategy": Case([tiny, "--agent", "all=scripted:telepathy"]),
            "malformed_agent": Case([tiny, "--agent", "scripted:linear"]),
            "missing_key": Case([tiny, "--model", "gpt-x"]),
            "unauthorized": Case(
                [tiny, "--base-url", locked.base_url, "--model", "fake-model"],
                env=clean_env(OPENAI_API_KEY="sk-a-wrong-key"),
            ),
        }
        results = launch(cases, root)
        results["api_error_requests"] = failing.requests  # type: ignore[assignment]
        results["unauthorized_log"] = locked.log  # type: ignore[assignment]
    yield results


def only_error(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    text = stderr.strip()
    assert text.startswith("error: "), stderr
    assert text.count("error:") == 1, stderr
    return text


@pytest.mark.parametrize("name", list(BAD_INPUT))
def test_bad_input_fails_before_anything_starts(runs: dict[str, Finished], name: str) -> None:
    done = runs[name]
    assert done.returncode == 2, (done.stdout, done.stderr)
    message = only_error(done.stderr)
    for needle in BAD_INPUT[name]:
        assert needle in message, message
    assert not done.out.exists() or not any(done.out.iterdir()), list(done.out.rglob("*"))


def test_unauthorized_is_found_by_the_preflight(runs: dict[str, Any]) -> None:
    log = runs["unauthorized_log"]
    assert log and all(r.method == "GET" and r.path.rstrip("/") == "/v1/models" for r in log)


def test_api_error_mid_run_ends_the_run_with_an_error(runs: dict[str, Any]) -> None:
    done: Finished = runs["api_error"]
    assert done.returncode == 1, (done.stdout, done.stderr)
    message = only_error(done.stderr)
    assert "500" in message
    (run_dir,) = run_dirs(done.out)
    assert f"detente run --resume {run_dir}" in " ".join(message.split())
    events = events_of(run_dir)
    types = [e["type"] for e in events]
    assert types[0] == "header"
    ids = [e["id"] for e in events]
    assert len(ids) == len(set(ids))
    # Everything written before the failure is still there.
    openings = {e["speaker"] for e in events if e["type"] == "statement"}
    assert openings == {"a", "b", "c", "m"}
    errors = [e for e in events if e["type"] == "error"]
    assert len(errors) == 1 and "500" in errors[0]["message"]
    assert events[-1]["type"] == "outcome" and events[-1]["status"] == "error"
    assert types.index("error") < len(types) - 1
    result = json.loads((run_dir / "result.json").read_text(encoding="utf-8"))
    assert result["status"] == "error"
    assert (run_dir / "transcript.md").is_file()
    # The openings were answered; the proposal was tried (with openai's retries) and failed.
    assert len(runs["api_error_requests"]) > 4
