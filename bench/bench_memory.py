"""Measure the memory of a run: detente and its process tree (the embedded model server).

    .venv/bin/python bench/bench_memory.py                       # the default run, as the README
    .venv/bin/python bench/bench_memory.py --rounds 2            # a shorter measurement
    .venv/bin/python bench/bench_memory.py --server n_ctx=2048   # other LocalServer settings
    .venv/bin/python bench/bench_memory.py -- --agent all=scripted:boulware   # more run options
    .venv/bin/python bench/bench_memory.py --replay RUN_DIR --server n_batch=512   # same requests

Runs `detente run SCENARIO` (into a temporary folder unless `--out` is given) as a subprocess and
reads /proc every `--interval` seconds: the resident memory (RSS) of detente's own process and of
all its descendants (the llama.cpp server and anything it starts). It prints the peak of each
and the peak of their sum (taken in the same sample), each process's own high-water mark
(VmHWM, which also catches a peak between two samples; their sum bounds the total from above),
the run's wall time, the model calls' median latency (from the run's events, as
`bench/bench_local_model.py --from-run` reads them), and the peak total against the target
(1.5 GB by default). Exit status 1 if the sampled peak total exceeds the target, 2 if the run
failed.

`--replay RUN_DIR` sends a finished run's recorded requests (its `prompts.jsonl`), one at a time
in their recorded order, to a LocalServer started by this script: the same prompts whatever the
settings, so two settings can be compared call for call (the run's own trajectory depends on
the model's answers, which settings such as n_batch can change). The "detente" row is then
this script.

`--server KEY=VALUE` (repeatable) changes a keyword default of `detente.local_server.LocalServer`
for this run only, e.g. `--server prompt_cache_bytes=0` or
`--server 'extra_args=["--n_batch", "256"]'` (values are Python literals; anything else is taken
as a string), to compare server settings on the same machine without editing the code.
Sizes are in MB (10^6 bytes); RSS counts pages shared between processes in each of them, so the
sum is an upper bound on what the tree occupies.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import csv
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

TARGET_BYTES = 1_500_000_000  # 1.5 GB: the bound issue 15 sets for the default run
MB = 1_000_000
_PAGE = os.sysconf("SC_PAGE_SIZE")
_TICKS = os.sysconf("SC_CLK_TCK")

# Runs the detente CLI as `python -m detente` would, after changing LocalServer's keyword
# defaults (the CLI constructs `LocalServer(gguf)`, so its defaults are the run's settings).
_WRAPPER = """\
import json, runpy, sys
overrides = json.loads(sys.argv[1])
if overrides:
    from detente.local_server import LocalServer
    LocalServer.__init__.__kwdefaults__.update(overrides)
sys.argv = ["detente", *sys.argv[2:]]
runpy.run_module("detente", run_name="__main__", alter_sys=True)
"""


# --- /proc ---------------------------------------------------------------------------------


def _parent_map() -> dict[int, int]:
    """Every live process's parent: pid -> ppid, from /proc/PID/stat."""
    parents: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue  # gone since the listing
        # the command name (field 2) is in parentheses and may hold spaces or parentheses
        fields = stat[stat.rfind(b")") + 2 :].split()
        parents[int(entry.name)] = int(fields[1])
    return parents


def descendants(root: int, parents: dict[int, int] | None = None) -> list[int]:
    """The pids of every process below `root` (children, their children, ...), not `root`."""
    parents = _parent_map() if parents is None else parents
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    found: list[int] = []
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return sorted(found)


def rss_bytes(pid: int) -> int:
    """Resident memory of one process (0 once it is gone), from /proc/PID/statm."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as handle:
            return int(handle.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


def hwm_bytes(pid: int) -> int:
    """Peak resident memory of one process so far (VmHWM; 0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as handle:
            for line in handle:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, IndexError, ValueError):
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) one process has used so far (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
        fields = stat[stat.rfind(b")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime (fields 14, 15)
    except (OSError, IndexError, ValueError):
        return 0.0


def tree_rss(root: int) -> dict[int, int]:
    """RSS in bytes of `root` and of each of its live descendants: pid -> bytes."""
    return {pid: rss_bytes(pid) for pid in [root, *descendants(root)]}


# --- sampling -------------------------------------------------------------------------------


@dataclass
class Sample:
    seconds: float
    main: int  # detente's own process
    children: int  # every descendant: the server and anything it started
    processes: int

    @property
    def total(self) -> int:
        return self.main + self.children


@dataclass
class Trace:
    root: int
    samples: list[Sample] = field(default_factory=list)
    hwm: dict[int, int] = field(default_factory=dict)  # pid -> its latest VmHWM
    cpu: dict[int, float] = field(default_factory=dict)  # pid -> its CPU seconds so far
    names: dict[int, str] = field(default_factory=dict)

    def sample(self, seconds: float) -> Sample:
        sizes = tree_rss(self.root)
        for pid in sizes:
            self.hwm[pid] = max(self.hwm.get(pid, 0), hwm_bytes(pid))
            self.cpu[pid] = max(self.cpu.get(pid, 0.0), cpu_seconds(pid))
            self.names[pid] = _describe(pid)  # again: a fresh child shows its parent's at first
        main = sizes.pop(self.root, 0)
        taken = Sample(seconds, main, sum(sizes.values()), len(sizes) + 1)
        self.samples.append(taken)
        return taken

    def peak(self, attribute: str) -> int:
        return max((getattr(s, attribute) for s in self.samples), default=0)


def _describe(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "?"
    words = [w.decode(errors="replace") for w in raw.split(b"\0") if w]
    if any("llama_cpp.server" in w for w in words):
        return "llama_cpp.server"
    return Path(words[0]).name if words else "?"


def watch(process: subprocess.Popen[bytes], interval: float) -> Trace:
    """Sample `process` and its descendants every `interval` seconds until it exits."""
    trace = Trace(process.pid)
    started = time.perf_counter()
    while process.poll() is None:
        trace.sample(time.perf_counter() - started)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=interval)
    return trace


def watch_in_background(trace: Trace, interval: float, stop: threading.Event) -> threading.Thread:
    """Sample `trace` every `interval` seconds in a thread until `stop` is set."""
    started = time.perf_counter()

    def loop() -> None:
        while not stop.is_set():
            trace.sample(time.perf_counter() - started)
            stop.wait(interval)

    thread = threading.Thread(target=loop, name="memory-sampler", daemon=True)
    thread.start()
    return thread


def recorded_requests(run: Path) -> list[dict[str, object]]:
    """A run's model requests in the order they were logged (from its prompts.jsonl)."""
    path = run / "prompts.jsonl"
    if not path.is_file():
        raise SystemExit(f"{path}: no such file (only runs with LLM agents record requests)")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows.sort(key=lambda row: (str(row.get("time", "")), int(row.get("exchange", 0))))
    return [row["request"] for row in rows if isinstance(row.get("request"), dict)]


def send_recorded(server: Any, request: dict[str, object]) -> tuple[dict[str, Any], float]:
    """Send one recorded chat request to a started LocalServer (as its own model): the answer,
    and the seconds it took."""
    body = dict(request, model=server.model_alias)
    sent = urllib.request.Request(
        f"{server.base_url}/chat/completions", data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"})
    began = time.perf_counter()
    with urllib.request.urlopen(sent, timeout=900) as response:
        answer: dict[str, Any] = json.load(response)
    return answer, time.perf_counter() - began


def replay(run: Path, overrides: dict[str, object], interval: float,
           ) -> tuple[Trace, float, list[float], int]:
    """Send a run's recorded requests to a fresh LocalServer, sampling this process's tree."""
    from detente.local_server import LocalServer, default_model_path

    requests = recorded_requests(run)
    settings = dict(overrides)
    model = Path(str(settings.pop("model_path", default_model_path())))
    trace = Trace(os.getpid())
    stop = threading.Event()
    latencies: list[float] = []
    tokens = 0
    started = time.perf_counter()
    sampler = watch_in_background(trace, interval, stop)
    try:
        with LocalServer(model, **settings) as server:
            for number, request in enumerate(requests, 1):
                answer, seconds = send_recorded(server, request)
                latencies.append(seconds)
                usage = answer.get("usage") or {}
                tokens += int(usage.get("total_tokens", 0))
                print(f"  request {number}/{len(requests)}: {latencies[-1]:.1f} s, "
                      f"{usage.get('prompt_tokens', '?')} prompt tokens", flush=True)
    finally:
        stop.set()
        sampler.join()
    return trace, time.perf_counter() - started, latencies, tokens


# --- the run --------------------------------------------------------------------------------


def parse_overrides(pairs: list[str]) -> dict[str, object]:
    """`KEY=VALUE` pairs for LocalServer's keyword defaults; values are Python literals."""
    overrides: dict[str, object] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--server expects KEY=VALUE, got {pair!r}")
        try:
            value: object = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        overrides[key.strip()] = value
    return overrides


def run_command(args: argparse.Namespace, out: str, overrides: dict[str, object]) -> list[str]:
    cmd = [sys.executable, "-c", _WRAPPER, json.dumps(overrides), "run", args.scenario,
           "--out", out]
    if args.rounds:
        cmd += ["--rounds", str(args.rounds)]
    if args.seed is not None:
        cmd += ["--seed", str(args.seed)]
    return [*cmd, *args.detente_args]


def model_calls(out: Path) -> tuple[list[float], int, str | None]:
    """Latencies of the run's model calls, its token count and its folder (from events.jsonl)."""
    logs = sorted(out.glob("**/events.jsonl"))
    if not logs:
        return [], 0, None
    from detente.events import Proposal, Response, Statement, read_events

    latencies: list[float] = []
    tokens = 0
    for event in read_events(logs[-1]):
        if isinstance(event, Statement | Proposal | Response) and event.latency:
            latencies.append(event.latency)
            tokens += event.usage.total
    return latencies, tokens, str(logs[-1].parent)


def report(trace: Trace, wall: float, latencies: list[float], tokens: int,
           target: int, status: int) -> dict[str, object]:
    peak_main, peak_children = trace.peak("main"), trace.peak("children")
    peak_total = trace.peak("total")
    at_peak = max(trace.samples, key=lambda s: s.total, default=None)
    hwm_main = trace.hwm.get(trace.root, 0)
    hwm_children = sum(v for pid, v in trace.hwm.items() if pid != trace.root)
    cpu_children = sum(v for pid, v in trace.cpu.items() if pid != trace.root)
    summary: dict[str, object] = {
        "samples": len(trace.samples),
        "peak_detente_mb": round(peak_main / MB, 1),
        "peak_server_tree_mb": round(peak_children / MB, 1),
        "peak_total_mb": round(peak_total / MB, 1),
        "peak_total_at_s": round(at_peak.seconds, 1) if at_peak else None,
        "hwm_detente_mb": round(hwm_main / MB, 1),
        "hwm_server_tree_mb": round(hwm_children / MB, 1),
        "hwm_sum_mb": round((hwm_main + hwm_children) / MB, 1),
        "wall_s": round(wall, 1),
        "server_cpu_s": round(cpu_children, 1),
        "model_calls": len(latencies),
        "tokens": tokens,
        "median_call_s": round(statistics.median(latencies), 2) if latencies else None,
        "model_s_per_call": round(wall / len(latencies), 2) if latencies else None,
        "target_mb": round(target / MB, 1),
        "peak_over_target": round(peak_total / target, 3),
        "run_status": status,
    }
    print(f"samples: {len(trace.samples)} over {wall:.0f} s (run exit status {status})")
    print(f"{'process':<22}{'peak RSS MB':>12}{'VmHWM MB':>10}{'CPU s':>8}")
    print(f"{'detente':<22}{peak_main / MB:>12.0f}{hwm_main / MB:>10.0f}"
          f"{trace.cpu.get(trace.root, 0.0):>8.0f}")
    print(f"{'server tree':<22}{peak_children / MB:>12.0f}{hwm_children / MB:>10.0f}"
          f"{cpu_children:>8.0f}")
    for pid, value in sorted(trace.hwm.items()):
        if pid != trace.root:
            print(f"  {trace.names.get(pid, '?')[:18] + f' {pid}':<20}{'':>12}{value / MB:>10.0f}"
                  f"{trace.cpu.get(pid, 0.0):>8.0f}")
    print(f"{'total (same sample)':<22}{peak_total / MB:>12.0f}"
          f"{(hwm_main + hwm_children) / MB:>10.0f}  (VmHWM column: sum of per-process peaks)")
    if latencies:
        print(f"model calls: {len(latencies)}, {tokens:,} tokens; median latency "
              f"{statistics.median(latencies):.1f} s per call; wall time / calls "
              f"{wall / len(latencies):.1f} s")
    else:
        print("model calls: none recorded")
    verdict = "within" if peak_total <= target else "OVER"
    print(f"peak total {peak_total / MB:.0f} MB = {peak_total / target:.2f} x the "
          f"{target / MB:.0f} MB target: {verdict}")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scenario", default="scenarios/baseline.yaml")
    parser.add_argument("--rounds", type=int, default=None, help="override the scenario's rounds")
    parser.add_argument("--seed", type=int, default=None, help="run seed (detente's default: 0)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between samples")
    parser.add_argument("--target-mb", type=float, default=TARGET_BYTES / MB,
                        help="the bound to compare the peak total with (default 1500)")
    parser.add_argument("--server", action="append", default=[], metavar="KEY=VALUE",
                        help="a LocalServer keyword default for this run (repeatable)")
    parser.add_argument("--out", type=Path, default=None,
                        help="keep the run in this folder (default: a temporary one)")
    parser.add_argument("--csv", type=Path, default=None,
                        help="write every sample: seconds, detente, server tree, total (bytes)")
    parser.add_argument("--json", type=Path, default=None, help="write the summary as JSON")
    parser.add_argument("--replay", type=Path, default=None, metavar="RUN_DIR",
                        help="send this run's recorded requests to a fresh server instead")
    parser.add_argument("detente_args", nargs="*",
                        help="after --: more `detente run` options")
    args = parser.parse_args(argv)
    overrides = parse_overrides(args.server)
    target = int(args.target_mb * MB)

    if overrides:
        print(f"LocalServer overrides: {overrides}")
    status = 0
    if args.replay is not None:
        trace, wall, latencies, tokens = replay(args.replay, overrides, args.interval)
        summary = report(trace, wall, latencies, tokens, target, status)
        return finish(args, summary, trace, overrides, status, target)
    with TemporaryDirectory(prefix="detente-bench-memory-") as temporary:
        out = args.out or Path(temporary)
        cmd = run_command(args, str(out), overrides)
        started = time.perf_counter()
        process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        try:
            trace = watch(process, args.interval)
        except KeyboardInterrupt:
            process.terminate()
            process.wait()
            raise
        wall = time.perf_counter() - started
        latencies, tokens, folder = model_calls(out)
        if args.out is not None and folder is not None:
            print(f"run folder: {folder}")
        status = process.returncode
        summary = report(trace, wall, latencies, tokens, target, status)
    return finish(args, summary, trace, overrides, status, target)


def finish(args: argparse.Namespace, summary: dict[str, object], trace: Trace,
           overrides: dict[str, object], status: int, target: int) -> int:
    """Write the samples and the summary where asked; the exit status."""
    summary["overrides"] = {k: repr(v) for k, v in overrides.items()}
    if args.csv is not None:
        with args.csv.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["seconds", "detente", "server_tree", "total", "processes"])
            for s in trace.samples:
                writer.writerow([f"{s.seconds:.2f}", s.main, s.children, s.total, s.processes])
    if args.json is not None:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    if status != 0:
        return 2
    return 0 if trace.peak("total") <= target else 1


if __name__ == "__main__":
    sys.exit(main())
