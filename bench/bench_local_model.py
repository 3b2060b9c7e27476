"""Measure the embedded model: seconds per model call and for a full baseline run.

    .venv/bin/python bench/bench_local_model.py [--rounds N] [--scenario PATH]
    .venv/bin/python bench/bench_local_model.py --from-run RUN_DIR

Runs `detente run` on the embedded llama.cpp server (the [local] extra), then reads the
run's events: per-call latency (median, p90, max, by turn type), tokens, and wall time.
`--from-run` reads an existing run folder instead (its wall time: header to last event).
Latencies are per answer as the agent waited for it: the server answers one request at a time,
so parties answering at once queue behind each other.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory

from detente.events import Event, Proposal, Response, Statement, read_events
from detente.runner import EVENTS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scenario", default="scenarios/baseline.yaml")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--from-run", type=Path, default=None)
    args = parser.parse_args()
    if args.from_run is not None:
        events = read_events(args.from_run / EVENTS)
        wall = build_result_wall(events)
        report(events, wall, str(args.from_run))
        return
    with TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "detente", "run", args.scenario, "--out", out]
        if args.rounds:
            cmd += ["--rounds", str(args.rounds)]
        started = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - started
        log = next(Path(out).glob(f"*/*/{EVENTS}"))
        events = read_events(log)
    report(events, wall, args.scenario)


def build_result_wall(events: list[Event]) -> float:
    from datetime import datetime

    def parse(stamp: str) -> datetime:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00"))

    return (parse(events[-1].time) - parse(events[0].time)).total_seconds()


def report(events: list[Event], wall: float, source: str) -> None:
    calls: dict[str, list[float]] = {}
    tokens = 0
    rounds = 0
    for e in events:
        if isinstance(e, Statement | Proposal | Response) and e.latency:
            kind = e.kind if isinstance(e, Statement) else e.type
            calls.setdefault(kind, []).append(e.latency)
            tokens += e.usage.total
            rounds = max(rounds, e.round)
    every = sorted(x for xs in calls.values() for x in xs)
    print(f"{source}: {rounds} rounds, {len(every)} model calls, "
          f"{tokens:,} tokens, wall time {wall:.0f} s")
    print(f"{'turn':<14}{'calls':>6}{'median s':>10}{'p90 s':>8}{'max s':>8}")
    for kind, xs in sorted(calls.items()):
        xs.sort()
        p90 = xs[min(len(xs) - 1, int(0.9 * len(xs)))]
        print(f"{kind:<14}{len(xs):>6}{statistics.median(xs):>10.1f}{p90:>8.1f}{xs[-1]:>8.1f}")
    if every:
        print(f"{'all':<14}{len(every):>6}{statistics.median(every):>10.1f}")


if __name__ == "__main__":
    main()
