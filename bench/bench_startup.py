"""Start-up time of every `detente` command: wall time from exec to exit, several repetitions.

    .venv/bin/python bench/bench_startup.py              # 7 repetitions of each command
    .venv/bin/python bench/bench_startup.py --repeat 15

Each command runs as a fresh subprocess (the installed `detente` script, as a user types it);
repetitions are interleaved round-robin so a burst of load elsewhere on the machine hits every
command alike. Prints, per command, the median wall time with its spread (min-max), the median
CPU time of the process (user + system: on a busy machine wall time waits for a core, CPU time
does not), the ratio of the median wall time to `python -c pass` and to `python -c "import
detente"` measured in the same run, and the target where the issue sets one.

`python -c 'import langgraph, openai'` is what `run` must import before it can call a model (the
LangGraph engine and the OpenAI client): the floor of the `run` row. `run` is measured to its
first model call: `detente run scenarios/baseline.yaml` against the
test suite's fake OpenAI server (tests/fake_openai.py), from exec to the first chat completion
request the server receives (the run then plays its one round; its CPU column is the whole
run's). Two scripted runs of the baseline made once at the start give `show`, `replay`,
`compare` and `diff` something to read.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

BASELINE = ROOT / "scenarios" / "baseline.yaml"
TIMEOUT = 300


def detente_argv() -> list[str]:
    """The installed `detente` script beside this interpreter, else `python -m detente`."""
    script = Path(sys.executable).with_name("detente")
    return [str(script)] if script.exists() else [sys.executable, "-m", "detente"]


@dataclass
class Measure:
    label: str
    target: float | None
    run_once: Callable[[], tuple[float, float]]
    """One repetition: (wall seconds, CPU seconds)."""
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(argv: list[str], env: dict[str, str]) -> Callable[[], tuple[float, float]]:
    def once() -> tuple[float, float]:
        cpu = children_cpu()
        start = time.perf_counter()
        done = subprocess.run(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True, timeout=TIMEOUT)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} exited {done.returncode}:\n{done.stderr[-2000:]}")
        return wall, children_cpu() - cpu

    return once


def first_model_call(out: Path, env: dict[str, str]) -> Callable[[], tuple[float, float]]:
    """`detente run` against the fake server: seconds from exec to the first chat completion."""
    from helpers import SchemaResponder, load, serve

    bundle = load(BASELINE)

    class Timestamped(SchemaResponder):
        def __init__(self) -> None:
            super().__init__(bundle)
            self.first: float | None = None
            self.seen = threading.Event()

        def __call__(self, body: dict[str, object]) -> object:
            if self.first is None:
                self.first = time.perf_counter()
                self.seen.set()
            return super().__call__(body)

    counter = iter(range(10**6))

    def once() -> tuple[float, float]:
        responder = Timestamped()
        with serve(responder) as fake:
            cpu = children_cpu()
            start = time.perf_counter()
            proc = subprocess.Popen(
                [*detente_argv(), "run", str(BASELINE), "--agent", "all=fake-model",
                 "--base-url", fake.base_url, "--rounds", "1", "--out",
                 str(out / f"run{next(counter)}")],
                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                text=True)
            if not responder.seen.wait(TIMEOUT):
                proc.kill()
                raise SystemExit("detente run made no model call")
            assert responder.first is not None
            wall = responder.first - start
            _, err = proc.communicate(timeout=TIMEOUT)  # one round against an instant server
            if proc.returncode != 0:
                raise SystemExit(f"detente run exited {proc.returncode}:\n{err[-2000:]}")
            # CPU of the whole one-round run: an upper bound of the start-up's.
            return wall, children_cpu() - cpu

    return once


def prepare(tmp: Path, env: dict[str, str]) -> tuple[Path, Path]:
    """Two finished scripted runs of the baseline (for show, replay, compare and diff)."""
    runs = []
    for k, strategy in enumerate(("boulware", "conceder")):
        out = tmp / f"runs{k}"
        subprocess.run([*detente_argv(), "run", str(BASELINE), "--agent",
                        f"all=scripted:{strategy}", "--out", str(out)],
                       cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL,
                       timeout=TIMEOUT)
        (found,) = out.glob("baseline/*/")
        runs.append(found)
    return runs[0], runs[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=7, help="repetitions of each command")
    parser.add_argument("--only", nargs="+", metavar="WORD",
                        help="measure only the commands whose label has one of these words "
                             "(the two baselines are always measured)")
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "DETENTE_"))}
    env["COLUMNS"] = "120"
    py = sys.executable
    cli = detente_argv()
    tmp = Path(tempfile.mkdtemp(prefix="detente-bench-startup-"))
    try:
        run_a, run_b = prepare(tmp, env)
        replayed = tmp / "replayed"
        shutil.copytree(run_a, replayed)
        measures = [
            Measure("python -c pass", None, timed([py, "-c", "pass"], env)),
            Measure("python -c 'import detente'", None, timed([py, "-c", "import detente"], env)),
            Measure("detente --help", 0.4, timed([*cli, "--help"], env)),
            Measure("detente show RUN", 0.4, timed([*cli, "show", str(run_a)], env)),
            Measure("detente validate baseline", 1.0,
                    timed([*cli, "validate", str(BASELINE)], env)),
            Measure("detente analyze baseline", 1.0,
                    timed([*cli, "analyze", str(BASELINE)], env)),
            Measure("python -c 'import langgraph, openai'", None,
                    timed([py, "-c", "import langgraph.graph, openai"], env)),
            Measure("detente run: first model call", 1.5, first_model_call(tmp, env)),
            Measure("detente run --help", None, timed([*cli, "run", "--help"], env)),
            Measure("detente compare --help", None, timed([*cli, "compare", "--help"], env)),
            Measure("detente schema", None, timed([*cli, "schema"], env)),
            Measure("detente plugins", None, timed([*cli, "plugins"], env)),
            Measure("detente sources agents scenarios", None,
                    timed([*cli, "sources", "agents", "scenarios"], env)),
            Measure("detente analyze --sensitivity", None,
                    timed([*cli, "analyze", str(BASELINE), "--sensitivity"], env)),
            Measure("detente replay RUN", None, timed([*cli, "replay", str(replayed)], env)),
            Measure("detente compare RUN RUN", None,
                    timed([*cli, "compare", str(run_a), str(run_b), "--by",
                                  "scenario+agents"], env)),
            Measure("detente diff RUN RUN", None, timed([*cli, "diff", str(run_a), str(run_b)],
                                                        env)),
        ]
        if args.only:
            measures = measures[:2] + [m for m in measures[2:]
                                       if any(w in m.label.split() for w in args.only)]
        for _ in range(args.repeat):
            for m in measures:
                wall, cpu = m.run_once()
                m.wall.append(wall)
                m.cpu.append(cpu)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    load = os.getloadavg()
    print(f"{os.cpu_count()} cores; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
          f"{args.repeat} repetitions; seconds")
    python = statistics.median(measures[0].wall)
    bare = statistics.median(measures[1].wall)
    print(f"{'command':36} {'median':>7} {'min':>6} {'max':>6} {'cpu':>6} {'x python':>8} "
          f"{'x import':>8} {'target':>7}")
    for m in measures:
        median = statistics.median(m.wall)
        verdict = ""
        if m.target is not None:
            verdict = f"{m.target:>5.1f} {'ok' if median <= m.target else 'MISSED'}"
        print(f"{m.label:36} {median:>7.3f} {min(m.wall):>6.3f} {max(m.wall):>6.3f} "
              f"{statistics.median(m.cpu):>6.3f} {median / python:>8.1f} {median / bare:>8.1f} "
              f"{verdict}")


if __name__ == "__main__":
    main()
