"""`detente sweep`: the cross product, a manifest, skipping what is complete, failures recorded.

The sweeps run in this process (their runs in worker processes, as always), except the one
interrupted by a signal, which needs a process of its own.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from fake_openai import HTTPError
from helpers import CliResult, SchemaResponder, invoke, load, serve

ROOT = Path(__file__).resolve().parent.parent
BASELINE = ROOT / "scenarios" / "baseline.yaml"
TINY = ROOT / "tests" / "data" / "tiny" / "scenario.yaml"


def _sweep(*args: str) -> CliResult:
    """`detente sweep ARGS` in this process (its runs still go to worker processes)."""
    return invoke("sweep", *args, cwd=ROOT)


def _manifest(sweep_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((sweep_dir / "sweep.json").read_text())
    return data


def _results(sweep_dir: Path) -> dict[str, float]:
    """Finished run folder -> modification time of its result.json."""
    return {str(p.parent.relative_to(sweep_dir)): p.stat().st_mtime_ns
            for p in sweep_dir.glob("*/seed-*/result.json")
            if json.loads(p.read_text())["status"] in ("deal", "no_deal", "deadlock")}


def test_sweep_runs_the_cross_product_and_a_rerun_skips_it(tmp_path: Path) -> None:
    args = [str(BASELINE), str(TINY), "--seeds", "2", "--concurrency", "2",
            "--agent", "all=scripted:linear", "--out", str(tmp_path), "--name", "s"]
    first = _sweep(*args)
    assert first.returncode == 0, first.stderr
    sweep_dir = tmp_path / "s"
    manifest = _manifest(sweep_dir)
    assert {(e["scenario_id"], e["seed"]) for e in manifest["entries"]} == {
        ("baseline", 0), ("baseline", 1), ("tiny", 0), ("tiny", 1)}
    assert all(e["status"] == "complete" for e in manifest["entries"])
    assert all(e["outcome"] in ("deal", "no_deal", "deadlock") for e in manifest["entries"])
    before = _results(sweep_dir)
    assert len(before) == 4

    again = _sweep(*args)
    assert again.returncode == 0, again.stderr
    assert "4 already complete" in again.stdout
    assert _results(sweep_dir) == before  # nothing re-ran


def test_the_default_sweep_name_finds_the_same_folder_again(tmp_path: Path) -> None:
    args = [str(TINY), "--seeds", "1", "--agent", "all=scripted:linear", "--out", str(tmp_path)]
    assert _sweep(*args).returncode == 0
    assert "1 already complete" in _sweep(*args).stdout
    assert len(list(tmp_path.iterdir())) == 1
    other = _sweep(*args[:-4], "--agent", "all=scripted:boulware", "--out", str(tmp_path))
    assert other.returncode == 0
    assert len(list(tmp_path.iterdir())) == 2  # different agents, different sweep


def test_a_failed_run_is_recorded_and_does_not_stop_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DETENTE_MAX_RETRIES", "0")
    answers = SchemaResponder(load(BASELINE))

    def respond(body: dict[str, Any]) -> Any:
        system = body["messages"][0]["content"]
        return HTTPError(500, "the tiny model is down") if "Tiny" in system else answers(body)

    with serve(respond) as server:
        done = _sweep(str(BASELINE), str(TINY), "--seeds", "1", "--rounds", "1",
                      "--base-url", server.base_url, "--model", "fake",
                      "--out", str(tmp_path), "--name", "s")
    assert done.returncode == 1
    entries = {e["scenario_id"]: e for e in _manifest(tmp_path / "s")["entries"]}
    assert entries["baseline"]["status"] == "complete"
    assert entries["tiny"]["status"] == "failed"
    assert "500" in entries["tiny"]["reason"]
    assert "failed: tiny/seed-0" in done.stdout
    # The failed run's folder keeps what it wrote, with the error recorded.
    result = json.loads((tmp_path / "s" / "tiny" / "seed-0" / "result.json").read_text())
    assert result["status"] == "error"


def test_an_interrupted_sweep_completes_only_the_missing_runs(tmp_path: Path) -> None:
    # Ten runs: enough left after the interruption, few enough to finish quickly on rerun.
    variants = sorted((ROOT / "scenarios" / "variants").glob("*.yaml"))[:3]
    scenarios = [str(BASELINE), str(TINY), *map(str, variants)]
    args = ["--seeds", "2", "--concurrency", "1", "--agent", "all=scripted:conceder",
            "--out", str(tmp_path), "--name", "s"]
    proc = subprocess.Popen([sys.executable, "-m", "detente", "sweep", *scenarios, *args],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sweep_dir = tmp_path / "s"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if (sweep_dir / "sweep.json").exists() and sum(
            e["status"] == "complete" for e in _manifest(sweep_dir)["entries"]
        ) >= 2:
            break
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGINT)
    proc.communicate(timeout=120)
    assert proc.returncode != 0
    entries = _manifest(sweep_dir)["entries"]
    done_before = _results(sweep_dir)
    assert 2 <= len(done_before) < len(entries), "the interruption came too late to test"

    rerun = _sweep(*scenarios, *args)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{len(done_before)} already complete" in rerun.stdout
    after = _results(sweep_dir)
    assert len(after) == len(entries)
    assert all(after[k] == v for k, v in done_before.items())  # completed runs untouched
    assert all(e["status"] == "complete" for e in _manifest(sweep_dir)["entries"])
