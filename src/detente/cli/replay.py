"""`detente replay RUN_DIR` and `detente show RUN_DIR`: runs re-read from their event logs."""

from __future__ import annotations

from pathlib import Path

import typer

from detente.cli._app import app, console
from detente.cli.run import summarize


@app.command()
def replay(
    run_dir: Path = typer.Argument(..., metavar="RUN_DIR"),
    scenario: Path | None = typer.Option(None, "--scenario",
                                         help="The run's scenario, if it has moved."),
    prices: Path | None = typer.Option(
        None, "--prices", metavar="FILE",
        help="A price file over the shipped table: the run's cost is priced again with it."),
) -> None:
    """Rebuild transcript.md and re-score result.json from events.jsonl (no model calls)."""
    from detente.costs import prices_from
    from detente.files import RunLock
    from detente.runner import finish
    from detente.runs import RunFolder

    folder = RunFolder(run_dir, scenario)
    bundle = folder.bundle
    # never rewrite a run another process is writing
    with prices_from(prices), RunLock(run_dir):
        result = finish(run_dir, bundle)
    summarize(bundle.scenario, result, run_dir)


@app.command()
def show(
    run_dir: Path = typer.Argument(..., metavar="RUN_DIR"),
    scenario: Path | None = typer.Option(None, "--scenario",
                                         help="The run's scenario, if it has moved."),
) -> None:
    """Print a run in the terminal: every round, the votes, the outcome and the scores.

    The scores are the ones the run recorded (result.json); `detente replay` scores the run
    again with today's scorer. A run without a readable result.json is scored from its events.
    """
    from rich.markdown import Markdown  # brings pygments: only show needs it

    from detente.report import render_markdown
    from detente.runs import RunFolder

    folder = RunFolder(run_dir, scenario)
    result = folder.result
    console.print(Markdown(render_markdown(folder.scenario, folder.events, result)))
    summarize(folder.scenario, result, run_dir)
