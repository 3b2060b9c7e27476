"""The Python front door: `import detente` runs, sweeps, reads and compares as the CLI does."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import detente
from detente.cli import app
from detente.errors import DetenteError

ROOT = Path(__file__).resolve().parents[1]
BASELINE = ROOT / "scenarios" / "baseline.yaml"

# Fields that name the run or time it: everything else in result.json is the negotiation.
RUN_SPECIFIC = {"run_id", "wall_time_seconds"}


def _result(path: Path) -> dict[str, object]:
    data = json.loads((path / "result.json").read_text(encoding="utf-8"))
    return {k: v for k, v in data.items() if k not in RUN_SPECIFIC}


def test_run_returns_the_result_the_cli_writes(tmp_path: Path) -> None:
    folder = detente.run(BASELINE, agents="all=scripted:boulware", out=tmp_path / "api")
    cli = CliRunner().invoke(app, ["run", str(BASELINE), "--agent", "all=scripted:boulware",
                                   "--out", str(tmp_path / "cli")])
    assert cli.exit_code == 0, cli.output
    (cli_dir,) = (tmp_path / "cli" / "baseline").iterdir()
    assert _result(folder.path) == _result(cli_dir)
    assert folder.result.status == "no_deal"  # the scripted baseline (see the README)
    assert folder.result.model_dump(exclude=RUN_SPECIFIC) == \
        detente.load_run(cli_dir).result.model_dump(exclude=RUN_SPECIFIC)


def test_run_takes_settings_by_flag_names_and_mappings(tmp_path: Path) -> None:
    folder = detente.run(BASELINE, agents={"all": "scripted:linear", "un_mediator": "scripted:snt"},
                         seed=4, rounds=2, out=tmp_path)
    header = folder.header
    assert header.seed == 4 and header.max_rounds == 2
    assert {p: a.label() for p, a in header.agents.items()} == {
        "us": "scripted:linear", "russia": "scripted:linear", "ukraine": "scripted:linear",
        "eu": "scripted:linear", "un_mediator": "scripted:snt"}
    assert folder.result.rounds_played == 2
    assert set(folder.by_round()) == {0, 1, 2}


def test_user_errors_raise_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DetenteError, match=r"boulwere.*did you mean scripted:boulware"):
        detente.run(BASELINE, agents="all=scripted:boulwere", out=tmp_path)
    with pytest.raises(DetenteError, match="no such file"):
        detente.run(tmp_path / "missing.yaml", agents="all=scripted:boulware", out=tmp_path)
    with pytest.raises(DetenteError, match=r"no events\.jsonl"):
        detente.load_run(tmp_path)
    assert not list(tmp_path.rglob("events.jsonl"))


def test_sweep_reports_progress_and_a_rerun_skips_finished_runs(tmp_path: Path) -> None:
    done: list[str] = []
    kwargs = dict(agents="all=scripted:conceder", rounds=3, out=tmp_path, name="s",
                  on_done=lambda entry: done.append(entry.status))
    sweep = detente.sweep([BASELINE, ROOT / "scenarios" / "protocols"], seeds=2,
                          **kwargs)  # type: ignore[arg-type]
    assert len(sweep.manifest.entries) == 10 and not sweep.failed
    assert done == ["complete"] * 10
    assert {r.header.protocol for r in sweep.runs()} == {
        "mediated", "rotating", "no_talk", "alternating_offers", "bilateral_first"}
    done.clear()
    again = detente.sweep([BASELINE, ROOT / "scenarios" / "protocols"], seeds=2,
                          **kwargs)  # type: ignore[arg-type]
    assert done == []  # nothing was run again
    assert [e.run_dir for e in again.manifest.entries] == \
        [e.run_dir for e in sweep.manifest.entries]


def test_load_runs_reads_sweeps_and_checks_the_scenario(tmp_path: Path) -> None:
    scenarios = tmp_path / "scenarios"
    shutil.copytree(ROOT / "scenarios", scenarios)
    shutil.copytree(ROOT / "agents", tmp_path / "agents")
    folder = detente.run(scenarios / "baseline.yaml", agents="all=scripted:boulware",
                         rounds=2, out=tmp_path / "runs")
    assert [r.path for r in detente.load_runs(tmp_path / "runs")] == [folder.path]
    text = (scenarios / "baseline.yaml").read_text(encoding="utf-8")
    (scenarios / "baseline.yaml").write_text(text.replace("max_rounds: 8", "max_rounds: 9"),
                                             encoding="utf-8")
    moved = detente.load_run(folder.path)
    assert moved.result.status == "no_deal"  # result.json needs no scenario
    with pytest.raises(DetenteError, match="content differs from the one the run used"):
        _ = moved.scenario
    assert detente.load_run(folder.path, scenario=BASELINE).scenario.id == "baseline"


def test_import_is_light_and_exports_what_it_documents() -> None:
    code = ("import sys, detente; assert 'langgraph' not in sys.modules; "
            "assert 'openai' not in sys.modules; print(sorted(detente.__all__))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert "run" in out and "sweep" in out and "compare" in out
    for name in detente.__all__:
        assert getattr(detente, name) is not None
    assert callable(detente.compare) and callable(detente.sweep)


def _python_examples() -> list[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## From Python", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_readme_has_short_python_examples() -> None:
    examples = _python_examples()
    assert len(examples) >= 3
    assert all(len(e.strip().splitlines()) < 15 for e in examples)


@pytest.mark.parametrize("index", range(3))
def test_readme_python_examples_run_as_written(tmp_path: Path, index: int) -> None:
    for folder in ("scenarios", "agents"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    shutil.copytree(ROOT / "transcripts" / "examples", tmp_path / "transcripts" / "examples")
    proc = subprocess.run([sys.executable, "-c", _python_examples()[index]], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip()


def test_resume_finds_a_moved_scenario_when_given_it(tmp_path: Path) -> None:
    for folder in ("scenarios", "agents"):
        shutil.copytree(ROOT / folder, tmp_path / "old" / folder)
    run = detente.run(tmp_path / "old" / "scenarios" / "baseline.yaml",
                      agents="all=scripted:boulware", rounds=1, out=tmp_path / "runs")
    (tmp_path / "old").rename(tmp_path / "new")
    with pytest.raises(DetenteError, match="is not here"):
        detente.resume(run.path)
    moved = tmp_path / "new" / "scenarios" / "baseline.yaml"
    assert detente.resume(run.path, scenario=moved).result.status == "no_deal"
    cli = CliRunner().invoke(app, ["run", str(moved), "--resume", str(run.path)])
    assert cli.exit_code == 0, cli.output
    assert "NO_DEAL" in cli.output
