"""Harness overhead: CPU per model call, round time against parallel play, prompt growth.

    .venv/bin/python bench/bench_engine.py
    .venv/bin/python bench/bench_engine.py --profile      # where the CPU goes (cProfile, top 25)

Three figures, on the baseline (four LLM parties and an LLM mediator) against the test suite's
fake OpenAI server, which runs in a separate process so that its CPU is not counted:

1. CPU per model call: the CPU time (all threads of this process) the harness spends per call
   (prompt building, validation, the event log, checkpoints, the HTTP client) against a
   zero-latency endpoint: the slope between a 2-round and a `--rounds`-round run, after a
   warm-up run, so the once-per-run cost (loading the scenario, scoring) is printed apart;
   median and range of `--repeat` pairs (default 5). Target: 5 ms.
2. Round time with a fixed-latency endpoint (`--latency` seconds a call): the median round
   (proposal to proposal) against the mediator's call plus the slowest party's, which is what
   parallel answers cost at best (sequential play would cost (1 + parties) calls). Target: 1.1x.
3. Prompt growth: the characters of each party's answer prompt in round 20 against round 2
   (the bounded context). Target: 1.5x.
"""

from __future__ import annotations

import argparse
import cProfile
import itertools
import json
import multiprocessing as mp
import os
import pstats
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

BASELINE = ROOT / "scenarios" / "baseline.yaml"


def _serve(latency: float, conn: Any) -> None:
    """The fake endpoint, in its own process: every party rejects, so runs play every round."""
    from helpers import Req, SchemaResponder, load, serve

    class Rejecting(SchemaResponder):
        def delay(self, req: Req) -> float:
            return latency

        def vote(self, req: Req) -> str:
            return "reject"

        def pick(self, req: Req, path: tuple[str, ...], values: Any) -> Any:
            if path == ("vote",):
                return "reject"
            if path == ("caucus_with",):
                return "none"
            # A different package each round, so no table is refused as a repeat.
            return values[req.round % len(values)] if req.round else values[0]

    with serve(Rejecting(load(BASELINE)), calls=10**7) as fake:
        conn.send(fake.base_url)
        conn.recv()  # until told to stop


class Endpoint:
    def __init__(self, latency: float) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(latency, child), daemon=True)

    def __enter__(self) -> str:
        self.proc.start()
        url: str = self.conn.recv()
        return url

    def __exit__(self, *exc: object) -> None:
        self.conn.send("stop")
        self.proc.join(10)


def _run(base_url: str, rounds: int, out: Path) -> Path:
    import detente

    folder = detente.run(BASELINE, agents="all=fake-model", base_url=base_url, rounds=rounds,
                         out=out, max_retries=0, timeout=60)
    return folder.path


def _calls(run_dir: Path) -> int:
    count = 0
    with (run_dir / "events.jsonl").open(encoding="utf-8") as f:
        for line in f:
            llm = json.loads(line).get("llm")
            if llm:
                count += len(llm.get("request_hashes") or [])
    return count


def _cpu_run(url: str, rounds: int, out: Path, profiler: cProfile.Profile | None
             ) -> tuple[float, int]:
    start = time.process_time()
    if profiler:
        profiler.enable()
    run_dir = _run(url, rounds, out)
    if profiler:
        profiler.disable()
    return time.process_time() - start, _calls(run_dir)


def cpu_per_call(rounds: int, out: Path, profile: bool, repeat: int = 5
                 ) -> tuple[list[float], list[float], int]:
    """The harness's CPU per model call, as the slope between a short and a long run (so what
    every run pays once, loading the scenario and scoring the result, is not spread over its
    calls), and that once-per-run cost: one pair of runs per repetition, after a warm-up run
    (a single pair varies by about 20% from one to the next)."""
    slopes: list[float] = []
    fixed: list[float] = []
    with Endpoint(0.0) as url:
        _run(url, 1, out / "warmup")
        for n in range(repeat):
            short_cpu, short_calls = _cpu_run(url, 2, out / f"short-{n}", None)
            profiler = cProfile.Profile() if profile and n == 0 else None
            long_cpu, long_calls = _cpu_run(url, rounds, out / f"long-{n}", profiler)
            slopes.append((long_cpu - short_cpu) / (long_calls - short_calls))
            fixed.append(short_cpu - slopes[-1] * short_calls)
            if profiler:
                pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
                pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    return slopes, fixed, long_calls


def _time(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


def round_ratio(latency: float, rounds: int, out: Path) -> tuple[float, float]:
    with Endpoint(latency) as url:
        run_dir = _run(url, rounds, out / "latency")
    starts = []
    with (run_dir / "events.jsonl").open(encoding="utf-8") as f:
        for line in f:
            event = json.loads(line)
            if event.get("type") == "proposal":
                starts.append(_time(event["time"]))
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    median = statistics.median(gaps)
    return median, median / (2 * latency)


def prompt_growth(out: Path) -> dict[str, float]:
    with Endpoint(0.0) as url:
        run_dir = _run(url, 20, out / "growth")
    sizes: dict[tuple[str, int], int] = {}
    with (run_dir / "prompts.jsonl").open(encoding="utf-8") as f:
        for line in f:
            record = json.loads(line)
            event = record.get("event", "")
            parts = event.split("/")
            if len(parts) != 3 or parts[1] != "response" or record.get("exchange") != 1:
                continue
            round_ = int(parts[0].lstrip("r"))
            text = sum(len(m.get("content") or "") for m in record["request"]["messages"])
            sizes[(parts[2], round_)] = text
    parties = sorted({p for p, _ in sizes})
    return {p: sizes[(p, 20)] / sizes[(p, 2)] for p in parties
            if (p, 20) in sizes and (p, 2) in sizes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--latency", type=float, default=0.5)
    parser.add_argument("--repeat", type=int, default=5,
                        help="pairs of runs for the CPU per call (median and range)")
    parser.add_argument("--profile", action="store_true", help="profile the first long run")
    args = parser.parse_args()
    os.environ.pop("OPENAI_BASE_URL", None)
    os.environ.setdefault("OPENAI_API_KEY", "sk-bench")
    with tempfile.TemporaryDirectory(prefix="detente-bench-engine-") as tmp:
        out = Path(tmp)
        slopes, fixed, calls = cpu_per_call(args.rounds, out, args.profile, args.repeat)
        per_call = statistics.median(slopes)
        print(f"CPU per model call: median {per_call * 1000:.1f} ms of {len(slopes)} "
              f"repetitions (range {min(slopes) * 1000:.1f}-{max(slopes) * 1000:.1f} ms; slope "
              f"between 2 and {args.rounds} rounds, {calls} calls, zero-latency endpoint); "
              f"target 5 ms: {per_call * 1000 / 5:.2f}x the target; once per run (load, "
              f"score): {statistics.median(fixed) * 1000:.0f} ms")
        median, ratio = round_ratio(args.latency, 4, out)
        print(f"round time: median {median:.2f} s with {args.latency:g} s calls; "
              f"{ratio:.2f}x (mediator call + slowest party); sequential play would be "
              f"{(1 + 4) / 2:.1f}x; target 1.1x")
        growth = prompt_growth(out)
        worst = max(growth.values())
        print("prompt of round 20 against round 2: " + ", ".join(
            f"{p} {g:.2f}x" for p, g in growth.items()) + f"; worst {worst:.2f}x; target 1.5x")


if __name__ == "__main__":
    main()
