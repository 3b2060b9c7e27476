"""Sweep executors: hundreds of model calls from one process, and Ray.

`local` runs every negotiation of a sweep on one event loop in this process; against a slow
endpoint it keeps hundreds of calls in flight with bounded memory. `ray` runs each negotiation
as a task on a Ray cluster (here a local instance the test starts), with the same manifest,
skip-on-rerun and resume.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from helpers import ROOT, TINY, Req, SchemaResponder, invoke, load, serve


class Slow(SchemaResponder):
    """Every call waits; the server counts how many are in flight at once.

    With `hold`, the first opening statements wait (up to `patience` seconds, less than the
    client's 60 s timeout) until that many calls are in flight together, so the peak measures
    what the client keeps open, not how fast a loaded machine starts sixty runs within one
    pause. The hold is released once; openings of runs that start later are not held.
    """

    def __init__(self, pause: float, hold: int = 0, patience: float = 45.0) -> None:
        super().__init__(load(TINY))
        self.pause = pause
        self.hold = hold
        self.patience = patience
        self.peak = 0
        self.released = False
        self._gate = threading.Condition()

    def delay(self, req: Req) -> float:
        with self._gate:
            self.peak = max(self.peak, self.in_flight())
            if self.hold and req.kind == "opening" and not self.released:
                self._gate.notify_all()
                self._gate.wait_for(
                    lambda: self.released or self.in_flight() >= self.hold, self.patience)
                self.peak = max(self.peak, self.in_flight())
                self.released = True  # once: openings of runs that start later are not held
                self._gate.notify_all()
        return self.pause

    def vote(self, req: Req) -> str:
        return "accept"


def _sweep(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "DETENTE_"))}
    env["COLUMNS"] = "200"
    return subprocess.run([sys.executable, "-m", "detente", "sweep", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600, env=env, **kwargs)


@pytest.mark.timeout(600)
def test_one_process_keeps_two_hundred_calls_in_flight(tmp_path: Path) -> None:
    responder = Slow(pause=0.5, hold=200)
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    with serve(responder, calls=100_000) as fake:
        done = _sweep(str(TINY), "--seeds", "60", "--concurrency", "60", "--agent",
                      "all=fake-model", "--base-url", fake.base_url, "--rounds", "1",
                      "--max-connections", "256", "--out", str(tmp_path), "--name", "many")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    # Sixty runs open at once, four parties each: 240 openings at the endpoint together.
    assert responder.peak >= 200, responder.peak
    manifest = json.loads((tmp_path / "many" / "sweep.json").read_text())
    assert all(e["status"] == "complete" for e in manifest["entries"])
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    assert max(peak_kb, before) < 1_500_000, peak_kb  # KiB: well under 1.5 GB


def test_the_connection_limit_holds(tmp_path: Path) -> None:
    # In this process: the limit is the sweep's, not a process's; ten runs want 40 calls at once.
    responder = Slow(pause=0.2)
    with serve(responder, calls=100_000) as fake:
        done = invoke("sweep", str(TINY), "--seeds", "10", "--concurrency", "10", "--agent",
                      "all=fake-model", "--base-url", fake.base_url, "--rounds", "1",
                      "--max-connections", "3", "--out", str(tmp_path), "--name", "few",
                      cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert responder.peak == 3, responder.peak  # the limit, reached and never passed


@pytest.mark.timeout(900)
def test_a_ray_sweep_completes_and_a_rerun_skips_every_finished_run(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    args = [str(TINY), "--seeds", "3", "--concurrency", "2", "--agent", "all=scripted:linear",
            "--executor", "ray", "--out", str(tmp_path), "--name", "r"]
    env_extra = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_DISABLE_DOCKER_CPU_WARNING": "1"}
    os.environ.update(env_extra)
    try:
        first = _sweep(*args)
        assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
        manifest = json.loads((tmp_path / "r" / "sweep.json").read_text())
        assert [e["status"] for e in manifest["entries"]] == ["complete"] * 3
        results = {p: p.stat().st_mtime_ns for p in (tmp_path / "r").glob("tiny/*/result.json")}
        assert len(results) == 3
        again = _sweep(*args)
        assert again.returncode == 0, again.stderr[-2000:]
        assert "3 already complete" in again.stdout
        assert {p: p.stat().st_mtime_ns for p in results} == results  # nothing ran again
    finally:
        for key in env_extra:
            os.environ.pop(key, None)
