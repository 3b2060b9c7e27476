"""The run folder under crashes, concurrent writers, and full or read-only disks.

Runs start as real processes (`python -m detente`) against the fake OpenAI server, slowed down
where a test needs a run in flight, and are killed, raced or starved of disk space.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from detente.events import read_events
from helpers import ROOT, TINY, Cli, Req, SchemaResponder, events_of, load, serve

pytestmark = pytest.mark.reliability

BASELINE = ROOT / "scenarios" / "baseline.yaml"


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "DETENTE_"))}
    env.update({"COLUMNS": "200", "NO_COLOR": "1", "PYTHONUNBUFFERED": "1"})
    return env


def detente(*args: str | Path, **kwargs: Any) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "detente", *map(str, args)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=clean_env(), **kwargs)


def finish(proc: subprocess.Popen[str], timeout: float = 300) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def wait_for(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


class Slow(SchemaResponder):
    """Nobody accepts; every call takes `pause` seconds."""

    def __init__(self, pause: float) -> None:
        super().__init__(load(TINY))
        self.pause = pause

    def delay(self, req: Req) -> float:
        return self.pause

    def vote(self, req: Req) -> str:
        return "reject"

    def pick(self, req: Req, path: tuple[str, ...], values: Any) -> Any:
        if path[:1] == ("package",):
            return values[req.round % len(values)]
        return super().pick(req, path, values)


def logged(run_dir: Path, event_id: str) -> bool:
    log = run_dir / "events.jsonl"
    return log.exists() and f'"id":"{event_id}"' in log.read_text(encoding="utf-8")


def only_run(out: Path) -> Path:
    runs = [p.parent for p in out.glob("*/*/events.jsonl")]
    assert len(runs) == 1, runs
    return runs[0]


def every_line_parses(run_dir: Path) -> None:
    for name in ("events.jsonl", "prompts.jsonl"):
        path = run_dir / name
        if path.exists():
            text = path.read_text(encoding="utf-8")
            assert text.endswith("\n")
            for line in text[:-1].split("\n"):
                json.loads(line)


# --------------------------------------------------------------------------- crashes


def test_resume_cuts_a_torn_last_line_and_finishes(tmp_path: Path) -> None:
    with serve(Slow(0.15)) as fake:
        proc = detente("run", TINY, "--model", "fake-model", "--base-url", fake.base_url,
                       "--rounds", "3", "--out", tmp_path)
        wait_for(lambda: bool(list(tmp_path.glob("tiny/*/events.jsonl")))
                 and logged(only_run(tmp_path), "r1/tally"))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        run_dir = only_run(tmp_path)
        with (run_dir / "events.jsonl").open("a", encoding="utf-8") as log:
            log.write('{"id":"r2/response/a","time":"2026-')  # a crash mid-write
        code, _, err = finish(detente("run", "--resume", run_dir))
    assert code == 0, err
    every_line_parses(run_dir)
    events = events_of(run_dir)
    assert events[-1]["type"] == "outcome"
    resumed = next(e for e in events if e["type"] == "resumed")
    assert "torn last line" in resumed["note"]
    assert len({e["id"] for e in events}) == len(events)
    code, _out, err = finish(detente("show", run_dir))
    assert code == 0, err


def test_a_run_killed_before_its_first_checkpoint_resumes(tmp_path: Path, cli: Cli) -> None:
    from langgraph.checkpoint.sqlite import SqliteSaver

    first = cli("run", TINY, "--agent", "all=scripted:linear", "--out", tmp_path / "a")
    assert first.returncode == 0, first.stderr
    done = only_run(tmp_path / "a")
    run_dir = tmp_path / "b" / "tiny" / "killed"
    run_dir.mkdir(parents=True)
    header = (done / "events.jsonl").read_text(encoding="utf-8").split("\n")[0]
    (run_dir / "events.jsonl").write_text(header + "\n", encoding="utf-8")
    with SqliteSaver.from_conn_string(str(run_dir / "checkpoints.sqlite")) as saver:
        saver.setup()  # the database exists; no checkpoint in it yet
    resumed = cli("run", "--resume", run_dir)
    assert resumed.returncode == 0, resumed.stderr
    assert "Traceback" not in resumed.stderr
    expected = json.loads((done / "result.json").read_text())
    got = json.loads((run_dir / "result.json").read_text())
    for key in ("status", "rounds_played", "package", "votes", "red_lines_broken"):
        assert got[key] == expected[key], key


# --------------------------------------------------------------------------- concurrent writers


def test_a_second_writer_of_a_run_folder_is_refused(tmp_path: Path) -> None:
    slow = Slow(1.0)
    with serve(slow) as fake:
        first = detente("run", TINY, "--model", "fake-model", "--base-url", fake.base_url,
                        "--rounds", "3", "--out", tmp_path)
        wait_for(lambda: bool(list(tmp_path.glob("tiny/*/events.jsonl"))))
        run_dir = only_run(tmp_path)
        second = detente("run", "--resume", run_dir, "--base-url", fake.base_url)
        code, _, err = finish(second)
        assert code == 2, err
        assert "in use by pid" in err and str(first.pid) in err
        assert "Traceback" not in err
        first.send_signal(signal.SIGKILL)
        first.wait()
        # Killed, the first writer holds nothing: two resumes race, one wins, one is refused.
        # Slower calls keep the winner's run longer than the gap between the two start-ups,
        # however loaded the machine (at 1 s a call the winner could finish first).
        slow.pause = 3.0
        racing = [detente("run", "--resume", run_dir, "--base-url", fake.base_url)
                  for _ in range(2)]
        results = [finish(p) for p in racing]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], results
    every_line_parses(run_dir)
    events = events_of(run_dir)
    assert len({e["id"] for e in events}) == len(events)  # no turn logged twice
    assert events[-1]["type"] == "outcome"


def test_a_second_sweep_of_one_folder_is_refused(tmp_path: Path) -> None:
    with serve(Slow(1.0)) as fake:
        args = ["sweep", TINY, "--seeds", "2", "--concurrency", "1", "--agent",
                "all=fake-model", "--base-url", fake.base_url, "--rounds", "1",
                "--out", tmp_path, "--name", "s"]
        first = detente(*args)
        wait_for(lambda: (tmp_path / "s" / "sweep.json").exists())
        code, _, err = finish(detente(*args))
        assert code == 2, err
        assert "this sweep folder is in use by pid" in err
        code, out, err = finish(first)
    assert code == 0, out + err


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def test_a_killed_sweep_worker_fails_its_runs_and_the_sweep_goes_on(tmp_path: Path) -> None:
    with serve(Slow(0.2)) as fake:
        args = ["sweep", TINY, "--seeds", "6", "--concurrency", "2", "--agent",
                "all=fake-model", "--base-url", fake.base_url, "--rounds", "2",
                "--executor", "processes", "--out", tmp_path, "--name", "s"]
        sweep = detente(*args)
        wait_for(lambda: len(list((tmp_path / "s").glob("tiny/seed-*/events.jsonl"))) >= 2)
        workers = [p for p in _children(sweep.pid)
                   if b"multiprocessing" in Path(f"/proc/{p}/cmdline").read_bytes()
                   and b"resource_tracker" not in Path(f"/proc/{p}/cmdline").read_bytes()]
        assert workers, "no worker process found"
        os.kill(workers[0], signal.SIGKILL)
        code, out, err = finish(sweep)
        assert code == 1, out + err
        assert "Traceback" not in err and "BrokenProcessPool" not in err + out
        manifest = json.loads((tmp_path / "s" / "sweep.json").read_text())
        failed = [e for e in manifest["entries"] if e["status"] == "failed"]
        assert failed and all("worker process died" in e["reason"] for e in failed)
        assert all(e["status"] in ("complete", "failed") for e in manifest["entries"])
        assert sum(e["status"] == "complete" for e in manifest["entries"]) >= 6 - 2
        code, out, err = finish(detente(*args))
    assert code == 0, out + err
    manifest = json.loads((tmp_path / "s" / "sweep.json").read_text())
    assert all(e["status"] == "complete" for e in manifest["entries"])


# --------------------------------------------------------------------------- disks


def _limited_to(size: int) -> Callable[[], None]:
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails, EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))

    return apply


def test_a_full_disk_gives_one_message_and_loses_nothing(tmp_path: Path, cli: Cli) -> None:
    done = cli("run", TINY, "--agent", "all=scripted:linear", "--out", tmp_path / "ok")
    assert done.returncode == 0, done.stderr
    run_dir = only_run(tmp_path / "ok")
    before = (run_dir / "result.json").read_bytes()
    for args in (["run", TINY, "--agent", "all=scripted:linear", "--out", tmp_path / "full"],
                 ["run", "--resume", run_dir], ["replay", run_dir],
                 ["sweep", TINY, "--seeds", "1", "--agent", "all=scripted:linear",
                  "--out", tmp_path / "sweeps"]):
        code, out, err = finish(detente(*args, preexec_fn=_limited_to(600)))
        assert code == 2, (args, out, err)
        assert "Traceback" not in err, err
        assert "File too large" in err, err
        assert len(err.strip().splitlines()) <= 2, err
    assert (run_dir / "result.json").read_bytes() == before  # never a torn or empty result
    for result in tmp_path.rglob("result.json"):
        assert result.stat().st_size > 0
        json.loads(result.read_text())


def test_a_read_only_place_gives_one_message(tmp_path: Path, cli: Cli) -> None:
    target = Path("/sys/detente-cannot-write-here")
    for args in (["run", TINY, "--agent", "all=scripted:linear", "--out", target],
                 ["sweep", TINY, "--seeds", "1", "--agent", "all=scripted:linear",
                  "--out", target]):
        result = cli(*args)
        assert result.returncode == 2, result.stderr
        assert "cannot write" in result.stderr and "Traceback" not in result.stderr


# --------------------------------------------------------------------------- growth


@pytest.mark.timeout(600)
def test_a_hundred_round_run_stays_within_five_times_its_event_log(
    tmp_path: Path, cli: Cli
) -> None:
    result = cli("run", BASELINE, "--agent", "all=scripted:boulware", "--rounds", "100",
                 "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    run_dir = only_run(tmp_path)
    assert len([e for e in read_events(run_dir / "events.jsonl") if e.type == "tally"]) == 100
    log = (run_dir / "events.jsonl").stat().st_size
    folder = sum(p.stat().st_size for p in run_dir.iterdir() if p.is_file())
    assert folder <= 5 * log, (folder, log)


# --------------------------------------------------------------------------- transcripts


class Markup(SchemaResponder):
    def text(self, req: Req, path: tuple[str, ...]) -> str:
        return '<script>alert("x")</script><img src=x onerror=alert(1)> & more'


def test_the_transcript_shows_markup_as_text(tmp_path: Path, cli: Cli) -> None:
    with serve(Markup(load(TINY))) as fake:
        result = cli("run", TINY, "--model", "fake-model", "--base-url", fake.base_url,
                     "--rounds", "1", "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    transcript = (only_run(tmp_path) / "transcript.md").read_text()
    assert "<script>" not in transcript and "<img" not in transcript
    assert "&lt;script&gt;alert(\"x\")&lt;/script&gt;" in transcript
    assert "&amp; more" in transcript


# --------------------------------------------------------------------------- cassettes


def test_recording_never_deletes_another_tests_cassette(tmp_path: Path) -> None:
    """The README's re-record command skips the replay-only test before its cassette fixture
    runs: in rewrite mode that fixture deletes its cassette, which is another test's."""
    copy = tmp_path / "project"
    shutil.copytree(ROOT / "tests", copy / "tests",
                    ignore=shutil.ignore_patterns("reliability", "__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    (copy / "scenarios").symlink_to(ROOT / "scenarios")
    (copy / "agents").symlink_to(ROOT / "agents")
    cassette = (copy / "tests" / "cassettes" / "test_cassettes" /
                "test_recorded_tiny_negotiation_replays_identically.yaml")
    before = cassette.read_bytes()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "tests/test_cassettes.py::test_changed_prompt_is_caught_as_a_cassette_mismatch",
         "--record-mode=rewrite"],
        cwd=copy, capture_output=True, text=True, timeout=300, env=clean_env())
    assert "1 skipped" in done.stdout, done.stdout + done.stderr
    assert cassette.exists() and cassette.read_bytes() == before
