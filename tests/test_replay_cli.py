"""`detente replay` and `detente show`: runs re-read from their event logs, with no model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from helpers import CliResult, invoke

ROOT = Path(__file__).resolve().parent.parent


def _detente(*args: str) -> CliResult:
    """In this process: these commands read and write files, no signal or second process."""
    return invoke(*args, cwd=ROOT)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    done = _detente("run", "scenarios/baseline.yaml", "--agent", "all=scripted:conceder",
                    "--out", str(out))
    assert done.returncode == 0, done.stderr
    (found,) = out.glob("baseline/*/")
    return found


def test_replay_rebuilds_transcript_and_result_from_events_alone(
    run_dir: Path, tmp_path: Path
) -> None:
    copy = tmp_path / run_dir.name
    shutil.copytree(run_dir, copy)
    original_result = json.loads((copy / "result.json").read_text())
    original_transcript = (copy / "transcript.md").read_text()
    (copy / "result.json").write_text("{}")
    (copy / "transcript.md").unlink()
    (copy / "checkpoints.sqlite").unlink()  # replay needs only the events

    done = _detente("replay", str(copy))
    assert done.returncode == 0, done.stderr
    assert json.loads((copy / "result.json").read_text()) == original_result
    assert (copy / "transcript.md").read_text() == original_transcript
    assert "Transcript:" in done.stdout


def test_replay_applies_the_current_scorer_to_an_old_run(run_dir: Path, tmp_path: Path) -> None:
    """An old result with stale scores is re-scored from the events."""
    copy = tmp_path / run_dir.name
    shutil.copytree(run_dir, copy)
    stale = json.loads((copy / "result.json").read_text())
    for party in stale["scores"]["parties"].values():
        party["utility"] = -1.0
    (copy / "result.json").write_text(json.dumps(stale))
    assert _detente("replay", str(copy)).returncode == 0
    fresh = json.loads((copy / "result.json").read_text())
    assert all(p["utility"] >= 0 for p in fresh["scores"]["parties"].values())


def test_show_prints_every_round_and_the_scores(run_dir: Path) -> None:
    done = _detente("show", str(run_dir))
    assert done.returncode == 0, done.stderr
    rounds = json.loads((run_dir / "result.json").read_text())["rounds_played"]
    for r in range(1, rounds + 1):
        assert f"Round {r}" in done.stdout
    assert "Scores" in done.stdout
    assert "russia" in done.stdout


def test_replay_of_a_folder_without_a_log_is_a_clear_error(tmp_path: Path) -> None:
    done = _detente("replay", str(tmp_path))
    assert done.returncode == 2
    assert "events.jsonl" in done.stderr
    assert "Traceback" not in done.stderr


def test_replay_refuses_a_changed_scenario(run_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "scenarios").mkdir()
    changed = tmp_path / "scenarios" / "baseline.yaml"
    text = (ROOT / "scenarios" / "baseline.yaml").read_text()
    changed.write_text(text.replace("max_rounds: 8", "max_rounds: 9"))
    (tmp_path / "agents").symlink_to(ROOT / "agents")
    done = _detente("replay", str(run_dir), "--scenario", str(changed))
    assert done.returncode == 2
    assert "differs" in done.stderr
    assert "Traceback" not in done.stderr
