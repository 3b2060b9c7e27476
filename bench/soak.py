"""Soak test: long, faulty, killed and resumed runs against a fake endpoint, checked at the end.

    .venv/bin/python bench/soak.py                      # about ten minutes on two cores
    .venv/bin/python bench/soak.py --runs 200 --kills 40 --concurrency 16

1. A sweep of `--runs` runs of the tiny scenario at `--concurrency`, against an endpoint that
   faults `--fault-rate` of its calls (429, 5xx, resets, stalls past the timeout, malformed
   bodies, empty choices, schema-breaking answers), then the same sweep again: how many runs
   complete in the first pass, and after the rerun.
2. `--kills` runs killed with SIGKILL at a random moment and resumed: how many end with the
   result an uninterrupted run gets (the fake endpoint answers from the request alone).
3. Runs against an endpoint that answers every seventh call with a 401 echoing the API key (a
   sentinel); then every file written is searched for it, and every line of every log must
   parse.

The fake server and the fault injector are the test suite's (tests/fake_openai.py,
tests/reliability/faults.py). Prints one table; exits 1 if any check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "reliability")]

from fake_openai import HTTPError  # noqa: E402
from faults import Faulty  # noqa: E402
from helpers import TINY, Req, SchemaResponder, load, serve  # noqa: E402

# A key-shaped secret made fresh for each soak (no key-like literal is kept in the repository):
# it must never appear in any output or file the soak produces.
SENTINEL = f"sk-soak-{secrets.token_hex(10)}"


class Deterministic(SchemaResponder):
    """Nobody accepts before round 3; answers depend on the request alone."""

    def __init__(self, pause: float = 0.0) -> None:
        super().__init__(load(TINY))
        self.pause = pause

    def delay(self, req: Req) -> float:
        return self.pause

    def vote(self, req: Req) -> str:
        return "accept" if req.round >= 3 else "reject"

    def pick(self, req: Req, path: tuple[str, ...], values: Any) -> Any:
        if path[:1] == ("package",):
            return values[req.round % len(values)]
        return super().pick(req, path, values)


class Echoing:
    """Now and then a 401 that echoes the key, as some endpoints do."""

    def __init__(self, inner: Any, every: int = 97) -> None:
        self.inner, self.every, self.calls = inner, every, 0

    def __call__(self, body: dict[str, Any]) -> Any:
        self.calls += 1
        if self.calls % self.every == 0:
            return HTTPError(401, f"Incorrect API key provided: {SENTINEL}")
        return self.inner(body)


def env() -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "DETENTE_"))}
    out.update({"OPENAI_API_KEY": SENTINEL, "COLUMNS": "200", "PYTHONUNBUFFERED": "1"})
    return out


def detente(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "detente", *args], cwd=ROOT, env=env(),
                          capture_output=True, text=True, **kwargs)


def sweep_phase(out: Path, runs: int, concurrency: int, rate: float) -> dict[str, Any]:
    faulty = Faulty(Deterministic(), rate=rate, stall=4.0, salt="soak")
    args = ["sweep", str(TINY), "--seeds", str(runs), "--concurrency", str(concurrency),
            "--agent", "all=fake-model", "--rounds", "3", "--timeout", "1.5",
            "--out", str(out), "--name", "soak"]
    started = time.monotonic()
    with serve(faulty, calls=10**7) as fake:
        detente(*args, "--base-url", fake.base_url, timeout=3600)
        manifest = json.loads((out / "soak" / "sweep.json").read_text())
        first = sum(e["status"] == "complete" for e in manifest["entries"])
        detente(*args, "--base-url", fake.base_url, timeout=3600)
    manifest = json.loads((out / "soak" / "sweep.json").read_text())
    second = sum(e["status"] == "complete" for e in manifest["entries"])
    return {"runs": runs, "first pass": first, "after rerun": second,
            "faults injected": sum(faulty.injected.values()),
            "seconds": round(time.monotonic() - started, 1)}


def kill_phase(out: Path, kills: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    with serve(Deterministic(), calls=10**7) as fake:
        reference = detente("run", str(TINY), "--model", "fake-model", "--base-url",
                            fake.base_url, "--rounds", "4", "--out", str(out / "reference"),
                            timeout=600)
        (ref_dir,) = (out / "reference").glob("tiny/*/")
        expected = json.loads((ref_dir / "result.json").read_text())
    good = 0
    with serve(Deterministic(pause=0.05), calls=10**7) as fake:
        for trial in range(kills):
            folder = out / "killed" / str(trial)
            proc = subprocess.Popen(
                [sys.executable, "-m", "detente", "run", str(TINY), "--model", "fake-model",
                 "--base-url", fake.base_url, "--rounds", "4", "--out", str(folder)],
                cwd=ROOT, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(rng.uniform(1.0, 4.0))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            found = list(folder.glob("tiny/*/"))
            if not found:
                good += 1  # killed before the folder existed: nothing to resume, nothing lost
                continue
            done = detente("run", "--resume", str(found[0]), "--base-url", fake.base_url,
                           timeout=600)
            result = json.loads((found[0] / "result.json").read_text())
            if done.returncode == 0 and all(result[k] == expected[k] for k in
                                            ("status", "rounds_played", "package", "votes")):
                good += 1
    return {"kills": kills, "resumed to the reference result": good,
            "reference": f"{reference.returncode} {expected['status']}"}


def secret_phase(out: Path, runs: int) -> dict[str, Any]:
    """Runs against an endpoint that now and then answers 401 with the API key in the text."""
    failed = 0
    with serve(Echoing(Deterministic(), every=7), calls=10**7) as fake:
        for seed in range(runs):
            done = detente("run", str(TINY), "--model", "fake-model", "--base-url",
                           fake.base_url, "--seed", str(seed), "--max-retries", "0",
                           "--out", str(out / "secret"), timeout=600)
            failed += done.returncode != 0
            if SENTINEL in done.stdout + done.stderr:
                return {"runs": runs, "key printed": True}
    return {"runs": runs, "ended on a 401": failed, "key printed": False}


def audit(out: Path) -> dict[str, Any]:
    files = [p for p in out.rglob("*") if p.is_file()]
    leaks = [str(p) for p in files if SENTINEL.encode() in p.read_bytes()]
    lines = bad = 0
    for log in [*out.rglob("events.jsonl"), *out.rglob("prompts.jsonl")]:
        for line in log.read_text(encoding="utf-8").split("\n"):
            if line:
                lines += 1
                try:
                    json.loads(line)
                except ValueError:
                    bad += 1
    return {"files": len(files), "files holding the key": len(leaks), "log lines": lines,
            "lines that do not parse": bad}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--fault-rate", type=float, default=0.2)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="detente-soak-") as tmp:
        out = Path(tmp)
        sweep = sweep_phase(out, args.runs, args.concurrency, args.fault_rate)
        kills = kill_phase(out, args.kills, args.seed)
        secrets = secret_phase(out, 5)
        checked = audit(out)
    print(f"soak on {os.cpu_count()} cores")
    for name, figures in (("faulty sweep", sweep), ("kill and resume", kills),
                          ("401s echoing the key", secrets), ("audit", checked)):
        print(f"{name}: " + "; ".join(f"{k} {v}" for k, v in figures.items()))
    ok = (sweep["after rerun"] == sweep["runs"] and kills["resumed to the reference result"]
          == kills["kills"] and checked["files holding the key"] == 0
          and not secrets["key printed"]
          and checked["lines that do not parse"] == 0)
    print("all checks passed" if ok else "SOME CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
