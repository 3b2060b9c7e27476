"""`detente run` on the embedded model for real: one round, and no server left after a signal."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("llama_cpp", reason="the [local] extra (llama-cpp-python) is not installed")

pytestmark = pytest.mark.live

ROOT = Path(__file__).resolve().parent.parent
READY = re.compile(r"Local model server ready at http://127\.0\.0\.1:(\d+)/v1")


def _detente(*args: str) -> list[str]:
    return [sys.executable, "-m", "detente", *args]


def _server_processes(port: int) -> list[int]:
    """Pids of live processes whose command line serves `port`."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().split(") ")[-1][0]
        except OSError:
            continue
        if state != "Z" and b"--port" in argv and str(port).encode() in argv:
            pids.append(int(entry.name))
    return pids


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.timeout(900)
def test_one_round_on_the_embedded_model(tmp_path: Path) -> None:
    done = subprocess.run(
        _detente("run", "tests/data/tiny/scenario.yaml", "--rounds", "1", "--out",
                 str(tmp_path)),
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, done.stderr
    port = int(READY.search(done.stdout).group(1))  # type: ignore[union-attr]
    (run_dir,) = tmp_path.glob("tiny/*/")
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] in ("deal", "no_deal", "deadlock")
    assert result["rounds_played"] == 1
    assert result["total_tokens"] > 0
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    assert {e["id"] for e in events} >= {"header", "r1/proposal", "r1/tally", "outcome"}
    assert all(a["kind"] == "llm" and a["local_model"] for a in events[0]["agents"].values())
    # The embedded model is told the exact value of the table (assist `table`) by default.
    assert {a["assist"] for a in events[0]["agents"].values()} == {"table"}
    prompts = [json.loads(line) for line in (run_dir / "prompts.jsonl").read_text().split("\n")
               if line]
    responses = [p for p in prompts if p["event"].startswith("r1/response/")]
    assert responses and all("Its value to you:" in p["request"]["messages"][-1]["content"]
                              for p in responses)
    assert (run_dir / "transcript.md").read_text().count("## Round 1") == 1
    assert _port_free(port) and not _server_processes(port)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_mid_run_leaves_no_server_behind(tmp_path: Path, sig: signal.Signals) -> None:
    proc = subprocess.Popen(
        _detente("run", "scenarios/baseline.yaml", "--out", str(tmp_path)),
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    port = None
    deadline = time.monotonic() + 300
    while port is None and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if match := READY.search(line):
            port = int(match.group(1))
    assert port is not None, "the embedded server never became ready"
    assert _server_processes(port)
    time.sleep(3)  # mid-run: the openings are being generated
    os.kill(proc.pid, sig)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "detente run --resume" in stderr
    deadline = time.monotonic() + 15
    while _server_processes(port) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _server_processes(port)
    assert _port_free(port)
