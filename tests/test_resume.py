"""Kill or interrupt `detente run` mid-round, resume it, and get the run an uninterrupted one gets.

Each case starts `detente run` in a subprocess with LLM agents against its own fake server, which
answers validly, deterministically (from the request content only) and slowly enough for round 2's
responses to be in flight when the signal arrives: SIGKILL (a crash), SIGINT (Ctrl-C) or SIGTERM.
Then `detente run --resume RUN_DIR` finishes it. The cases run at once (most of their time is
Python starting up) and are compared with one uninterrupted in-process run of the same config.

A fourth case (`kill_unsaved`) crashes the run in the window between a node logging its turn
(nodes append to events.jsonl as they finish) and the checkpointer saving the task, held open
on purpose: the resumed run must take that turn from the log, not ask the model again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from detente.agents import make_agent
from detente.config import flag_layer, resolve_agents
from detente.loading import ScenarioBundle, load_bundle
from detente.runner import RunPlan, start_run
from helpers import TINY, Req, SchemaResponder, events_of, parse_request, run_dirs, serve

ROUNDS = 3
TIMEOUT = 120.0
ARGS = ["--model", "fake-model", "--rounds", str(ROUNDS)]
SIGNALS = {"kill": signal.SIGKILL, "int": signal.SIGINT, "term": signal.SIGTERM}
SETTLE = 0.2
"""Seconds between seeing r2/response/a in the log and the signal: the checkpointer saves a
task's result just after the node logs it; `kill_unsaved` covers a crash before that save, the
other cases leave it time to land."""

SLOW_CHECKPOINT = """
import time
from langgraph.checkpoint.sqlite import SqliteSaver
from detente.events import EventLog

_write = EventLog.write
_put_writes = SqliteSaver.put_writes
logged = {"a2": False, "held": False}

def write(self, *events):
    written = _write(self, *events)
    if any(e.id == "r2/response/a" for e in written):
        logged["a2"] = True
    return written

def put_writes(self, config, writes, task_id, task_path=""):
    # A round-2 response task finishing after a's answer is in the log: hold its save.
    if logged["a2"] and not logged["held"] and any(c == "branch:to:tally" for c, _ in writes):
        logged["held"] = True
        time.sleep(10)
    return _put_writes(self, config, writes, task_id, task_path)

EventLog.write = write
SqliteSaver.put_writes = put_writes
from detente.cli import main
main()
"""
"""`detente run` whose checkpointer takes long to save a round-2 response task once a's answer
is in the log (the window in which events.jsonl holds a turn the checkpoint does not)."""
VOLATILE_RESULT = ("run_id", "wall_time_seconds")
RESUME_IDS = ("resumed/", "interrupted/")


class Deliberate(SchemaResponder):
    """Nobody accepts; the mediator tables a new package each round and caucuses with a.

    Round 2's responses take their time (a answers first, c last) so a signal can land while
    b's and c's are in flight.
    """

    def __init__(self, bundle: ScenarioBundle, slow: bool) -> None:
        super().__init__(bundle)
        self.slow = slow

    def delay(self, req: Req) -> float:
        if not self.slow:
            return 0.0
        if req.kind == "respond" and req.round == 2:
            return {"a": 0.05, "b": 0.8, "c": 1.2}[req.party]
        return 0.05

    def vote(self, req: Req) -> str:
        return "reject"

    def caucus_with(self, req: Req) -> str:
        return "a"

    def pick(self, req: Req, path: tuple[str, ...], values: Any) -> Any:
        if path[:1] == ("package",):
            return values[req.round % len(values)]
        return super().pick(req, path, values)


class ChangesItsMind(Deliberate):
    """Like Deliberate, but a accepts round 2's package the first time it is asked only."""

    def __init__(self, bundle: ScenarioBundle, slow: bool) -> None:
        super().__init__(bundle, slow)
        self.asked_a2 = 0

    def vote(self, req: Req) -> str:
        if turn_of(req) == ("a", "respond", 2):
            with self._lock:
                self.asked_a2 += 1
                return "accept" if self.asked_a2 == 1 else "reject"
        return super().vote(req)


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "DETENTE_"))}
    env.update({"COLUMNS": "200", "NO_COLOR": "1", "PYTHONUNBUFFERED": "1"})
    return env


def turn_of(req: Req) -> tuple[str, str, int]:
    return (req.party, req.kind, req.round)


def turn_of_event(e: dict[str, Any]) -> tuple[str, str, int] | None:
    kind = {"proposal": "propose", "response": "respond"}.get(e["type"])
    if e["type"] == "statement":
        kind = (
            "opening"
            if e["kind"] == "opening"
            else ("caucus" if e["kind"] == "caucus_reply" else None)
        )
    return (e["speaker"], kind, e["round"]) if kind else None


@dataclass
class Reference:
    result: dict[str, Any]
    ids: list[str]
    requests: int


@dataclass
class Flow:
    """One interrupted and resumed run."""

    name: str
    run_dir: Path
    signalled_at: float
    code: int
    stderr: str
    events_before: list[dict[str, Any]]
    requests_before: list[Req]
    resume_code: int
    resume_stderr: str
    requests_after: list[Req]


@pytest.fixture(scope="module")
def bundle() -> ScenarioBundle:
    return load_bundle(TINY)


@pytest.fixture(scope="module")
def reference(bundle: ScenarioBundle, tmp_path_factory: pytest.TempPathFactory) -> Reference:
    """The same config run without interruption, in-process, against a fast fake server."""
    responder = Deliberate(bundle, slow=False)
    with serve(responder) as fake:
        settings = resolve_agents(
            bundle.scenario,
            [flag_layer(model="fake-model", agents=[], base_url=fake.base_url)],
        )
        plan = RunPlan(
            bundle=bundle,
            agents=settings,
            max_rounds=ROUNDS,
            out_root=tmp_path_factory.mktemp("reference"),
        )
        record = start_run(plan, make_agent)
        requests = len(fake.requests)
    result = json.loads((record.run_dir / "result.json").read_text(encoding="utf-8"))
    return Reference(result, [e["id"] for e in events_of(record.run_dir)], requests)


def interrupt_and_resume(name: str, bundle: ScenarioBundle, root: Path) -> Flow:
    unsaved = name == "kill_unsaved"
    responder = (ChangesItsMind if unsaved else Deliberate)(bundle, slow=True)
    out = root / name
    env = clean_env()
    command = ["-c", SLOW_CHECKPOINT] if unsaved else ["-m", "detente"]
    with serve(responder) as fake:
        with (
            (root / f"{name}.out").open("w") as stdout,
            (root / f"{name}.err").open("w+") as stderr,
        ):
            proc = subprocess.Popen(
                [
                    sys.executable,
                    *command,
                    "run",
                    str(TINY),
                    "--base-url",
                    fake.base_url,
                    *ARGS,
                    "--out",
                    str(out),
                ],
                env=env,
                cwd=root,
                stdout=stdout,
                stderr=stderr,
                text=True,
            )
            deadline = time.monotonic() + TIMEOUT
            run_dir = None
            while time.monotonic() < deadline and proc.poll() is None:
                dirs = run_dirs(out)
                if dirs and '"r2/response/a"' in (dirs[0] / "events.jsonl").read_text():
                    run_dir = dirs[0]
                    break
                time.sleep(0.01)
            if not unsaved:
                time.sleep(SETTLE)
            signalled_at = time.monotonic()
            proc.send_signal(SIGNALS.get(name, signal.SIGKILL))
            try:
                code = proc.wait(timeout=TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
            stderr.seek(0)
            err = stderr.read()
        assert run_dir is not None, f"{name}: round 2 never started; stderr:\n{err}"
        events_before = events_of(run_dir)
        requests_before = [parse_request(b, responder.names) for b in fake.requests]
        resumed = subprocess.run(
            [sys.executable, "-m", "detente", "run", "--resume", str(run_dir)],
            env=env,
            cwd=root,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
        after = fake.requests[len(requests_before) :]
        requests_after = [parse_request(b, responder.names) for b in after]
    return Flow(
        name,
        run_dir,
        signalled_at,
        code,
        err,
        events_before,
        requests_before,
        resumed.returncode,
        resumed.stderr,
        requests_after,
    )


@pytest.fixture(scope="module")
def flows(
    bundle: ScenarioBundle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Flow]]:
    root = tmp_path_factory.mktemp("resume")
    names = [*SIGNALS, "kill_unsaved"]
    with ThreadPoolExecutor(max_workers=len(names)) as pool:
        futures = {name: pool.submit(interrupt_and_resume, name, bundle, root) for name in names}
        yield {name: future.result() for name, future in futures.items()}


# --------------------------------------------------------------------------- tests


def test_reference_run(reference: Reference) -> None:
    assert reference.result["status"] == "no_deal"
    assert reference.result["rounds_played"] == ROUNDS
    assert len(reference.ids) == len(set(reference.ids))


@pytest.mark.parametrize("name", list(SIGNALS))
def test_interrupted_mid_round_two(flows: dict[str, Flow], name: str) -> None:
    flow = flows[name]
    ids = [e["id"] for e in flow.events_before]
    assert flow.events_before[0]["max_rounds"] == ROUNDS  # --rounds
    assert "r2/response/a" in ids
    assert "r2/tally" not in ids
    assert not [e for e in flow.events_before if e["type"] == "outcome"]
    if name == "kill":
        assert flow.code == -signal.SIGKILL
    else:
        assert flow.code == 130, flow.stderr
        assert "Traceback" not in flow.stderr, flow.stderr
        assert "interrupted" in flow.stderr
        assert f"detente run --resume {flow.run_dir}" in " ".join(flow.stderr.split())
        assert [e["type"] for e in flow.events_before].count("error") == 1
        result = json.loads((flow.run_dir / "result.json").read_text(encoding="utf-8"))
        assert result["status"] != "error"


@pytest.mark.parametrize("name", list(SIGNALS))
def test_resume_gives_the_uninterrupted_run(
    flows: dict[str, Flow], reference: Reference, name: str
) -> None:
    flow = flows[name]
    assert flow.resume_code == 0, flow.resume_stderr
    assert "Traceback" not in flow.resume_stderr
    events = events_of(flow.run_dir)
    ids = [e["id"] for e in events]
    assert len(ids) == len(set(ids)), [i for i, n in Counter(ids).items() if n > 1]
    # Nothing written before the interruption was lost or rewritten.
    assert events[: len(flow.events_before)] == flow.events_before
    assert events[-1]["type"] == "outcome"
    core = Counter(i for i in ids if not i.startswith(RESUME_IDS))
    assert core == Counter(reference.ids)
    assert "resumed/1" in ids
    result = json.loads((flow.run_dir / "result.json").read_text(encoding="utf-8"))
    strip = lambda r: {k: v for k, v in r.items() if k not in VOLATILE_RESULT}  # noqa: E731
    assert strip(result) == strip(reference.result)


@pytest.mark.parametrize("name", list(SIGNALS))
def test_resume_repeats_no_completed_model_call(
    flows: dict[str, Flow], reference: Reference, name: str
) -> None:
    flow = flows[name]
    committed = {t for e in flow.events_before if (t := turn_of_event(e)) is not None}
    asked_before = [turn_of(r) for r in flow.requests_before]
    asked_after = [turn_of(r) for r in flow.requests_after]
    # Calls in flight when the run stopped: asked, but with no event in the log.
    in_flight = [t for t in asked_before if t not in committed]
    assert set(in_flight) <= {("b", "respond", 2), ("c", "respond", 2)}, in_flight
    assert not committed & set(asked_after), committed & set(asked_after)
    extra = len(asked_before) + len(asked_after) - reference.requests
    assert 0 <= extra <= len(in_flight), (extra, in_flight)


def test_crash_before_the_checkpoint_keeps_log_and_state_consistent(flows: dict[str, Flow]) -> None:
    flow = flows["kill_unsaved"]
    assert flow.code == -signal.SIGKILL
    assert flow.resume_code == 0, flow.resume_stderr
    events = events_of(flow.run_dir)
    (response,) = [e for e in events if e["id"] == "r2/response/a"]
    (tally,) = [e for e in events if e["id"] == "r2/tally"]
    committed = {t for e in flow.events_before if (t := turn_of_event(e)) is not None}
    asked_after = {turn_of(r) for r in flow.requests_after}
    assert ("a", "respond", 2) in committed
    # The vote the log shows for a is the vote that was counted ...
    assert tally["votes"]["a"] == response["vote"]
    # ... and a's answer, already in the log, was not asked for again.
    assert ("a", "respond", 2) not in asked_after


def test_interrupted_write_is_not_logged_twice(tmp_path: Path, monkeypatch: Any) -> None:
    """Ctrl-C during the fsync of an event, then the same event is written again."""
    from detente import events as events_module
    from detente.events import ErrorEvent, EventLog

    fsync = events_module.os.fsync
    calls = {"n": 0}

    def interrupted_fsync(fd: int) -> None:
        calls["n"] += 1
        fsync(fd)
        if calls["n"] == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(events_module.os, "fsync", interrupted_fsync)
    event = ErrorEvent(id="error/1", message="boom")
    with EventLog(tmp_path / "events.jsonl") as log:
        with pytest.raises(KeyboardInterrupt):
            log.write(event)
        assert log.write(event) == []  # already logged: nothing written again
    lines = (tmp_path / "events.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1
