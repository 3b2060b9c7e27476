"""`detente replay RUN_DIR` and `detente show RUN_DIR`: runs re-read from their event logs."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markdown import Markdown

from detente.cli._app import app, console
from detente.cli.run import EVENTS, summarize
from detente.errors import InputError, Problem
from detente.events import read_events
from detente.loading import ScenarioBundle, load_bundle
from detente.report import build_result, header_of, render_markdown


def _bundle_for(run_dir: Path, scenario: Path | None) -> ScenarioBundle:
    if not run_dir.is_dir():
        raise InputError(run_dir, [Problem("", "not a folder; expected a run folder")])
    events = read_events(run_dir / EVENTS)
    try:
        header = header_of(events)
    except ValueError:
        raise InputError(run_dir / EVENTS, [Problem("", "the log has no header")]) from None
    path = scenario or Path(header.scenario_path)
    if not path.exists():
        raise InputError(path, [Problem("", "the run's scenario file is not here; pass "
                                        "--scenario PATH")])
    bundle = load_bundle(path)
    if bundle.content_hash != header.scenario_hash:
        raise InputError(path, [Problem("", "this scenario's content differs from the one the "
                                        f"run used (hash {header.scenario_hash[:12]}); pass the "
                                        "original with --scenario PATH")])
    return bundle


@app.command()
def replay(
    run_dir: Path = typer.Argument(..., metavar="RUN_DIR"),
    scenario: Path | None = typer.Option(None, "--scenario",
                                         help="The run's scenario, if it has moved."),
) -> None:
    """Rebuild transcript.md and re-score result.json from events.jsonl (no model calls)."""
    from detente.files import RunLock
    from detente.runner import RunRecord, finish

    bundle = _bundle_for(run_dir, scenario)
    with RunLock(run_dir):  # never rewrite a run another process is writing
        result = finish(run_dir, bundle)
    summarize(bundle.scenario, RunRecord(run_dir, result))


@app.command()
def show(
    run_dir: Path = typer.Argument(..., metavar="RUN_DIR"),
    scenario: Path | None = typer.Option(None, "--scenario",
                                         help="The run's scenario, if it has moved."),
) -> None:
    """Print a run in the terminal: every round, the votes, the outcome and the scores."""
    bundle = _bundle_for(run_dir, scenario)
    events = read_events(run_dir / EVENTS)
    result = build_result(bundle.scenario, events)
    console.print(Markdown(render_markdown(bundle.scenario, events, result)))
    from detente.runner import RunRecord

    summarize(bundle.scenario, RunRecord(run_dir, result))
