"""Measure the embedded model: seconds per model call and for a full baseline run.

    .venv/bin/python bench/bench_local_model.py [--rounds N] [--scenario PATH]
    .venv/bin/python bench/bench_local_model.py --from-run RUN_DIR
    .venv/bin/python bench/bench_local_model.py --replay RUN_DIR [--limit N]

Runs `detente run` on the embedded llama.cpp server (the [local] extra), then reads the
run's events: per-call latency (median, p90, max, by turn type), tokens, and wall time.
`--from-run` reads an existing run folder instead (its wall time: header to last event).
Latencies are per answer as the agent waited for it: the server answers one request at a time,
so parties answering at once queue behind each other.

`--replay RUN_DIR` measures issue 12's part 4 in one run of this script on one machine: it
replays recorded requests (each setup's in their recorded order, as its server answered them)
against three setups side by side:

- `today`: the requests of the curated embedded run recorded before issue 12 (default
  `bench/data/embedded-before-issue12.prompts.jsonl`, or `--before`) on the server settings of
  then (1 GB prompt cache with plain LRU, `--logits_all true`, `n_batch 512`, one generation
  thread on two cores, llama-cpp-python's own grammar sampling);
- `settings`: the same requests on `detente.local_server.LocalServer`'s defaults as on an idle
  machine (generation on every core);
- `now`: RUN_DIR's requests (a run of today's code: its prompts and answer schemas) on those
  defaults.

Request k of every setup is sent in turn (the order rotating from one k to the next), so a
change in the machine's load falls on every setup alike. It prints the median and p90 seconds
per call, the prompt tokens each server had to read (after its cache's prefix) and the tokens
generated, and the ratios of the medians. Replayed requests carry their recorded seed,
temperature and max_tokens.
"""

from __future__ import annotations

import argparse
import os
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
    parser.add_argument("--before", type=Path, default=BEFORE_PROMPTS,
                        help="with --replay: the requests of 'today' (a run folder or a "
                             "prompts.jsonl; default: recorded before issue 12)")
    args = parser.parse_args()
    if args.replay is not None:
        compare_settings(args.replay, args.limit, args.before)
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


BEFORE_SETTINGS: dict[str, object] = {"prompt_cache_bytes": 1 << 30, "n_batch": 512,
                                      "n_threads": max((os.cpu_count() or 1) // 2, 1),
                                      "extra_args": ["--logits_all", "true"],
                                      "grammar_last": False}
"""The server settings this project shipped before issue 12."""
BEFORE_PROMPTS = Path(__file__).parent / "data" / "embedded-before-issue12.prompts.jsonl"
"""The requests of the curated embedded run as recorded before issue 12 (the baseline scenario,
default settings): the prompts and answer schemas of 'today' when the issue was filed."""


def load_requests(source: Path) -> list[dict[str, object]]:
    """A run folder's recorded requests, or a prompts.jsonl file's, in the order the server
    answered them."""
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_memory import recorded_requests

    if source.is_file():
        with TemporaryDirectory() as folder:
            (Path(folder) / "prompts.jsonl").write_bytes(source.read_bytes())
            return recorded_requests(Path(folder))
    return recorded_requests(source)


def compare_settings(run: Path, limit: int | None, before: Path = BEFORE_PROMPTS) -> None:
    """Replay recorded requests against three setups in one run; print seconds per call.

    - `today`: the requests recorded before issue 12 (`before`) on the server settings of then
      (`BEFORE_SETTINGS`): what a call cost when the issue was filed;
    - `settings`: the same requests on `LocalServer`'s defaults: what the server settings alone
      change;
    - `now`: `run`'s requests (today's prompts and answer schemas) on `LocalServer`'s defaults.

    Each setup has its own server; the three run side by side and request k of every setup is
    sent in turn (the order rotating from one k to the next), so a change in the machine's load
    falls on every setup alike. Each setup replays its requests in their recorded order, so its
    server's prompt cache sees what it saw in the run. From each server's log it also counts the
    prompt tokens the model had to read (those after the prefix its cache held)."""
    import contextlib
    import re

    from detente.local_server import LocalServer, default_model_path, generation_threads

    sys.path.insert(0, str(Path(__file__).parent))
    from bench_memory import send_recorded

    # LocalServer's defaults as on an idle machine (the target): its generation threads
    # follow the load average at start, which this script's own servers raise.
    idle: dict[str, object] = {"n_threads": generation_threads(os.cpu_count() or 1, load=0.0)}
    streams = {"today": (BEFORE_SETTINGS, load_requests(before)),
               "settings": (idle, load_requests(before)),
               "now": (idle, load_requests(run))}
    count = min(len(requests) for _, requests in streams.values())
    if limit is not None:
        count = min(count, limit)
    print(f"today/settings: {len(streams['today'][1])} requests of {before}\n"
          f"now: {len(streams['now'][1])} requests of {run}\n"
          f"replaying the first {count} of each; {os.cpu_count()} cores, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    names = list(streams)
    latencies: dict[str, list[float]] = {name: [] for name in names}
    generated: dict[str, list[int]] = {name: [] for name in names}
    with contextlib.ExitStack() as stack:
        folder = Path(stack.enter_context(TemporaryDirectory()))
        servers = {name: stack.enter_context(LocalServer(
            default_model_path(), log_path=folder / f"{name}.log",
            **settings))
            for name, (settings, _) in streams.items()}
        print("generation threads: " + ", ".join(
            f"{name} {server.n_threads}" for name, server in servers.items()), flush=True)
        for number in range(count):
            order = names[number % len(names):] + names[:number % len(names)]
            for name in order:
                answer, seconds = send_recorded(servers[name], streams[name][1][number])
                latencies[name].append(seconds)
                generated[name].append(int(answer["usage"]["completion_tokens"]))
            print(f"  request {number + 1}/{count}: " + ", ".join(
                f"{name} {latencies[name][-1]:.1f} s" for name in names), flush=True)
        read = {name: [int(n) for n in re.findall(
            r"remaining (\d+) prompt tokens to eval", (folder / f"{name}.log").read_text())]
            for name in names}
    medians: dict[str, float] = {}
    for name in names:
        xs = sorted(latencies[name])
        medians[name] = statistics.median(xs)
        p90 = xs[min(len(xs) - 1, int(0.9 * len(xs)))]
        tokens_read = statistics.median(read[name]) if read[name] else float("nan")
        print(f"  {name:<9} median {medians[name]:6.2f} s/call   p90 {p90:6.2f}   "
              f"total {sum(xs):7.1f} s   median prompt tokens read {tokens_read:6.0f}   "
              f"generated {statistics.median(generated[name]):5.0f}")
    print(f"settings / today: {medians['settings'] / medians['today']:.2f} of the median time "
          "per call (server settings alone)")
    print(f"now / today: {medians['now'] / medians['today']:.2f} of the median time per call "
          "(target: at most 0.5)")
    print(f"load average at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
