"""`detente.runs.RunFolder`: the one reader of run folders, and `load_runs`.

Runs here are scripted runs of the tiny scenario; copies of their folders are damaged (a log
without a header, a line that is not an event, a stale or unreadable result.json) or moved away
from their scenario, and every such folder must give one clear `InputError`, never a traceback.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from detente.agents import make_agent
from detente.errors import InputError
from detente.events import LOG_NAME, Statement
from detente.loading import load_bundle
from detente.runner import RunPlan, start_run
from detente.runs import RESULT_NAME, RunFolder, load_runs
from detente.sweeps import finished_status
from helpers import TINY, scripted, tiny_variant


def _run(bundle_path: Path, run_dir: Path, seed: int = 0) -> Path:
    bundle = load_bundle(bundle_path)
    agents = {p: scripted("boulware") for p in bundle.scenario.voters}
    assert bundle.scenario.mediator is not None
    agents[bundle.scenario.mediator] = scripted("nash")
    start_run(RunPlan(bundle=bundle, agents=agents, seed=seed), make_agent, run_dir=run_dir)
    return run_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`<root>/tiny/seed-0` and `seed-1`: two finished runs of the tiny scenario."""
    root = tmp_path_factory.mktemp("runs")
    for seed in (0, 1):
        _run(TINY, root / "tiny" / f"seed-{seed}", seed)
    return root


def _copy(run_dir: Path, to: Path) -> Path:
    shutil.copytree(run_dir, to)
    return to


def _message(exc: pytest.ExceptionInfo[InputError]) -> str:
    text = str(exc.value)
    assert len(text.splitlines()) == 1, text
    return text


# --------------------------------------------------------------------------- a run folder


def test_a_run_folder_reads_its_parts(runs: Path) -> None:
    run = RunFolder(runs / "tiny" / "seed-0")
    assert run.header.scenario_id == "tiny" and run.header.seed == 0
    assert run.label == f"tiny seed 0 ({run.header.run_id})"
    assert run.status == run.result.status and run.finished
    assert run.result == run.stored_result  # result.json, not rebuilt
    assert run.scenario.id == "tiny" and run.bundle.content_hash == run.header.scenario_hash
    assert run.started
    rounds = run.by_round()
    assert 0 in rounds and max(rounds) == run.result.rounds_played
    for number, events in rounds.items():  # each round's events, in log order
        assert events == [e for e in run.events if getattr(e, "round", None) == number]
    assert run.transcript.is_file() and run.read() is run


def test_rebuilt_result_is_scored_again_from_the_events(runs: Path, tmp_path: Path) -> None:
    stored = RunFolder(runs / "tiny" / "seed-0").stored_result
    rebuilt = RunFolder(runs / "tiny" / "seed-0").rebuild()
    assert (rebuilt.status, rebuilt.rounds_played, rebuilt.scores) == \
        (stored.status, stored.rounds_played, stored.scores)

    torn = _copy(runs / "tiny" / "seed-0", tmp_path / "torn")
    (torn / RESULT_NAME).write_text("{", encoding="utf-8")
    with pytest.raises(InputError) as exc:
        _ = RunFolder(torn).stored_result
    assert _message(exc).startswith(f"{torn / RESULT_NAME}: ")
    assert RunFolder(torn).result.scores == stored.scores  # rebuilt: it needs the scenario

    stale = _copy(runs / "tiny" / "seed-0", tmp_path / "stale")
    other = stored.model_copy(update={"run_id": "another-run", "status": "error"})
    (stale / RESULT_NAME).write_text(other.model_dump_json(), encoding="utf-8")
    folder = RunFolder(stale)
    assert folder.stored_result.run_id == "another-run"
    assert folder.result.run_id == stored.run_id and folder.result.status == stored.status

    missing = _copy(runs / "tiny" / "seed-0", tmp_path / "missing")
    (missing / RESULT_NAME).unlink()
    with pytest.raises(InputError, match="detente replay"):
        _ = RunFolder(missing).stored_result
    assert RunFolder(missing).status == stored.status  # from the log's outcome


def test_unfinished_runs_say_so(runs: Path, tmp_path: Path) -> None:
    running = _copy(runs / "tiny" / "seed-0", tmp_path / "running")
    lines = (running / LOG_NAME).read_text(encoding="utf-8").splitlines()
    (running / LOG_NAME).write_text("\n".join(lines[:-1]) + "\n", encoding="utf-8")  # no outcome
    (running / RESULT_NAME).unlink()
    folder = RunFolder(running)
    assert (folder.status, folder.finished) == ("running", False)
    assert finished_status(running) is None
    assert finished_status(runs / "tiny" / "seed-0") == RunFolder(runs / "tiny" / "seed-0").status
    assert finished_status(tmp_path / "never-started") is None


@pytest.mark.parametrize(("write", "message"), [
    (None, "not a folder; expected a run folder"),
    ("", "the log has no header"),
    (Statement(id="r0/a", kind="opening", round=0, speaker="a", text="hi").model_dump_json(),
     "the log has no header"),
    ("[1, 2]\n{}", "a line is not an event"),
    ('{"type": "header"\n{}', "line 1: not valid JSON"),
])
def test_bad_logs_give_one_clear_message(tmp_path: Path, write: str | None,
                                         message: str) -> None:
    folder = tmp_path / "run"
    if write is not None:
        folder.mkdir()
        (folder / LOG_NAME).write_text(write + "\n", encoding="utf-8")
    with pytest.raises(InputError) as exc:
        _ = RunFolder(folder).header
    assert message in _message(exc)


def test_a_folder_without_a_log_is_not_a_run(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"no events\.jsonl: is this a run folder\?"):
        RunFolder(tmp_path)
    (tmp_path / LOG_NAME).write_text("", encoding="utf-8")
    assert not RunFolder(tmp_path).started


# --------------------------------------------------------------------------- the scenario


def test_the_scenario_is_found_above_the_run_and_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    project = tmp_path / "project"
    (project / "scenarios").mkdir(parents=True)
    tiny_variant(project / "scenarios", "moved")
    monkeypatch.chdir(project)
    run_dir = _run(Path("scenarios/moved.yaml"), project / "transcripts" / "run")
    assert RunFolder(run_dir).header.scenario_path == "scenarios/moved.yaml"

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the recorded relative path no longer resolves from here
    assert RunFolder(run_dir).scenario.id == "moved"  # found in a folder above the run

    away = _copy(run_dir, tmp_path / "away")
    with pytest.raises(InputError) as exc:
        _ = RunFolder(away).bundle
    assert "not here" in _message(exc) and "--scenario PATH" in str(exc.value)
    assert RunFolder(away).result.status  # result.json needs no scenario
    given = project / "scenarios" / "moved.yaml"
    assert RunFolder(away, given).scenario.id == "moved"

    changed = tiny_variant(tmp_path, "moved", top={"description": "another premise"})
    with pytest.raises(InputError) as exc:
        _ = RunFolder(away, changed).scenario
    assert "content differs from the one the run used" in _message(exc)


# --------------------------------------------------------------------------- many runs


def test_load_runs_finds_runs_and_shares_their_scenarios(runs: Path, tmp_path: Path) -> None:
    folders = load_runs(runs)
    assert [f.path for f in folders] == [runs / "tiny" / "seed-0", runs / "tiny" / "seed-1"]
    assert folders[0].bundle is folders[1].bundle  # loaded once
    given = load_runs([runs / "tiny" / "seed-1"], f"{runs}/*/seed-0")  # in the order given
    assert [f.path.name for f in given] == ["seed-1", "seed-0"]

    mixed = tmp_path / "mixed"
    _copy(runs / "tiny" / "seed-0", mixed / "done")
    unfinished = _copy(runs / "tiny" / "seed-1", mixed / "unfinished")
    result = json.loads((unfinished / RESULT_NAME).read_text(encoding="utf-8"))
    (unfinished / RESULT_NAME).write_text(json.dumps({**result, "status": "running"}),
                                          encoding="utf-8")
    assert [f.path.name for f in load_runs(mixed)] == ["done"]
    assert [f.path.name for f in load_runs(mixed, finished=False)] == ["done", "unfinished"]
    with pytest.raises(InputError) as exc:
        load_runs(tmp_path / "nowhere")
    assert "no such file or folder" in _message(exc)


def test_logs_and_judgements_name_a_line_that_is_not_an_object(tmp_path: Path) -> None:
    """One reader of JSON-lines files: a list where an object belongs is one message naming
    its line, in an event log as in judgements.jsonl (it was an AttributeError in the first)."""
    from detente.events import read_events
    from detente.judgements import read_judgements

    for name, read, what in ((LOG_NAME, read_events, "an event"),
                             ("judgements.jsonl", read_judgements, "a judgement record")):
        path = tmp_path / name
        path.write_text("[1, 2]\n", encoding="utf-8")
        with pytest.raises(InputError) as exc:
            read(path)
        assert f"line 1: a line is not {what}" in _message(exc)
