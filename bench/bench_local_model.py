"""Measure the embedded model: seconds per model call and for a full baseline run.

    .venv/bin/python bench/bench_local_model.py [--rounds N] [--scenario PATH]
    .venv/bin/python bench/bench_local_model.py --from-run RUN_DIR
    .venv/bin/python bench/bench_local_model.py --replay RUN_DIR [--limit N]

Runs `detente run` on the embedded llama.cpp server (the [local] extra), then reads the
run's events: per-call latency (median, p90, max, by turn type), tokens, and wall time.
`--from-run` reads an existing run folder instead (its wall time: header to last event).
Latencies are per answer as the agent waited for it: the server answers one request at a time,
so parties answering at once queue behind each other.

`--replay RUN_DIR` measures the server settings on identical work (issue 12, part 4): it sends a
recorded run's requests (its prompts.jsonl; default the curated embedded example), one at a
time in their recorded order, to a fresh server for each of three settings, in one run of this
script on one machine:

- `reread`: no prompt cache: every call reads its whole prompt, as a server without a cache (or
  one whose cache never hits) does;
- `before`: the settings this project shipped before issue 12 (1 GB prompt cache, llama-cpp's
  default `--logits_all true`, `n_batch 512`);
- `now`: `detente.local_server.LocalServer`'s defaults.

The three servers run side by side and each request goes to all three in turn, so a change in
the machine's load falls on every setting alike. It prints the median and p90 seconds per call
of each and the ratios of their medians; the
replayed requests carry their recorded seed, temperature and max_tokens, so each setting
generates under the same constraints.
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
    parser.add_argument("--replay", type=Path, default=None, metavar="RUN_DIR",
                        help="compare server settings on a recorded run's requests")
    parser.add_argument("--limit", type=int, default=None,
                        help="with --replay: only the first N requests")
    args = parser.parse_args()
    if args.replay is not None:
        compare_settings(args.replay, args.limit)
        return
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


SETTINGS: dict[str, dict[str, object]] = {
    "reread": {"prompt_cache": False},
    "before": {"prompt_cache_bytes": 1 << 30, "n_batch": 512,
               "extra_args": ["--logits_all", "true"]},
    "now": {},
}


def compare_settings(run: Path, limit: int | None) -> None:
    """Replay `run`'s requests against each of `SETTINGS`; print seconds per call and ratios.

    The three servers run side by side and each request goes to all three in turn (the order
    rotating from one request to the next), so a change in the machine's load during the
    measurement falls on every setting alike."""
    import contextlib
    import json
    import os
    import urllib.request

    from detente.local_server import LocalServer, default_model_path

    sys.path.insert(0, str(Path(__file__).parent))
    from bench_memory import recorded_requests

    requests = recorded_requests(run)[:limit]
    print(f"{run}: {len(requests)} recorded requests, each sent to every setting in turn; "
          f"{os.cpu_count()} cores, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
          flush=True)
    names = list(SETTINGS)
    latencies: dict[str, list[float]] = {name: [] for name in names}
    with contextlib.ExitStack() as stack:
        servers = {name: stack.enter_context(
            LocalServer(default_model_path(), **settings))  # type: ignore[arg-type]
            for name, settings in SETTINGS.items()}
        for number, request in enumerate(requests):
            order = names[number % len(names):] + names[:number % len(names)]
            for name in order:
                server = servers[name]
                body = dict(request, model=server.model_alias)
                sent = urllib.request.Request(
                    f"{server.base_url}/chat/completions", data=json.dumps(body).encode(),
                    headers={"Content-Type": "application/json"})
                began = time.perf_counter()
                with urllib.request.urlopen(sent, timeout=900) as response:
                    json.load(response)
                latencies[name].append(time.perf_counter() - began)
            print(f"  request {number + 1}/{len(requests)}: " + ", ".join(
                f"{name} {latencies[name][-1]:.1f} s" for name in names), flush=True)
    medians: dict[str, float] = {}
    for name in names:
        xs = sorted(latencies[name])
        medians[name] = statistics.median(xs)
        p90 = xs[min(len(xs) - 1, int(0.9 * len(xs)))]
        print(f"  {name:<8} median {medians[name]:6.2f} s/call   p90 {p90:6.2f}   "
              f"total {sum(xs):7.1f} s")
    for base in ("reread", "before"):
        print(f"now / {base}: {medians['now'] / medians[base]:.2f} of the median time per call "
              f"(target: at most 0.5 of today's)")
    print(f"load average at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
