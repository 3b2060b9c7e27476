"""Sweep throughput against concurrency, one process, a fixed-latency fake endpoint.

    .venv/bin/python bench/bench_sweep.py                    # concurrency 1 to 256
    .venv/bin/python bench/bench_sweep.py --latency 1.0 --levels 1 16 64

Each level runs a sweep of the tiny scenario (four LLM parties and an LLM mediator, one round:
about eight model calls a run) with the `local` executor at that concurrency, against the test
suite's fake OpenAI server answering every call after `--latency` seconds. Prints runs and model
calls per second, the peak of calls in flight at the endpoint, the ratio to concurrency 1
measured in the same session, the sweep process's CPU time per model call, and its peak resident
memory (the largest so far: levels run in increasing order).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from helpers import TINY, Req, SchemaResponder, load, serve  # noqa: E402


class FixedLatency(SchemaResponder):
    def __init__(self, latency: float) -> None:
        super().__init__(load(TINY))
        self.latency = latency
        self.peak = 0
        self._gate = threading.Lock()

    def delay(self, req: Req) -> float:
        with self._gate:
            self.peak = max(self.peak, self.in_flight())
        return self.latency

    def vote(self, req: Req) -> str:
        return "accept"


def level(concurrency: int, latency: float, out: Path) -> dict[str, float]:
    runs = max(concurrency, 8)
    responder = FixedLatency(latency)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "DETENTE_"))}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with serve(responder, calls=10**7) as fake:
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "detente", "sweep", str(TINY), "--seeds", str(runs),
             "--concurrency", str(concurrency), "--agent", "all=fake-model", "--base-url",
             fake.base_url, "--rounds", "1", "--max-connections", "512", "--no-log-prompts",
             "--out", str(out), "--name", f"c{concurrency}"],
            cwd=ROOT, capture_output=True, text=True, env=env, timeout=3600)
        seconds = time.monotonic() - started
        calls = len(fake.requests)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    if done.returncode != 0:
        raise SystemExit(f"sweep at concurrency {concurrency} failed:\n{done.stderr[-2000:]}")
    return {"runs": runs, "seconds": seconds, "runs_per_s": runs / seconds,
            "calls_per_s": calls / seconds, "peak_in_flight": responder.peak,
            "cpu_ms_per_call": 1000 * cpu / max(calls, 1),
            # ru_maxrss of children is the largest child so far: levels only grow here.
            "peak_mb": after.ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency", type=float, default=0.5, help="seconds per call")
    parser.add_argument("--levels", type=int, nargs="+",
                        default=[1, 2, 4, 8, 16, 32, 64, 128, 256])
    args = parser.parse_args()
    print(f"fixed latency {args.latency:g} s a call; {os.cpu_count()} cores; "
          "process start (about 2 s) included in every level")
    print(f"{'concurrency':>11} {'runs':>5} {'seconds':>8} {'runs/s':>7} {'calls/s':>8} "
          f"{'in flight':>9} {'x conc. 1':>9} {'CPU ms/call':>11} {'peak MB':>8}")
    base: float | None = None
    with tempfile.TemporaryDirectory(prefix="detente-bench-sweep-") as tmp:
        for concurrency in args.levels:
            row = level(concurrency, args.latency, Path(tmp))
            base = base or row["runs_per_s"]
            print(f"{concurrency:>11} {row['runs']:>5.0f} {row['seconds']:>8.1f} "
                  f"{row['runs_per_s']:>7.2f} {row['calls_per_s']:>8.1f} "
                  f"{row['peak_in_flight']:>9.0f} {row['runs_per_s'] / base:>9.1f} "
                  f"{row['cpu_ms_per_call']:>11.0f} {row['peak_mb']:>8.0f}", flush=True)


if __name__ == "__main__":
    main()
