"""`detente report PATH... [--out FILE]`: one self-contained HTML page of runs (by default
report.html in the run or sweep folder)."""

from __future__ import annotations

from pathlib import Path

import typer

from detente.cli._app import app, console
from detente.cli.plot import (
    Against,
    By,
    MovedScenario,
    RunPaths,
    check_group_by,
    home_of,
    read_all,
)
from detente.errors import InputError, Problem
from detente.runs import load_runs

REPORT_NAME = "report.html"
"""What `report` writes by default, inside the run or sweep folder."""


@app.command()
def report(
    paths: RunPaths,
    out: Path | None = typer.Option(None, "--out", metavar="FILE",
                                    help="The HTML file to write (default: report.html in the "
                                         "run or sweep folder)."),
    run_charts: bool = typer.Option(True, "--run-charts/--no-run-charts",
                                    help="With several runs, chart each run's utilities too."),
    against: Against = None,
    by: By = "scenario",
    scenario: MovedScenario = None,
    title: str | None = typer.Option(None, "--title", help="The page's title."),
) -> None:
    """Write one HTML page (no network needed) with comparison, charts and transcripts."""
    group_by = check_group_by(by)
    if out is not None and out.is_dir():
        raise InputError(out, [Problem("--out", "expected a file name, got a folder")])
    runs = load_runs(paths, finished=False, scenario=scenario)
    if out is None:
        out = home_of([r.path for r in runs]) / REPORT_NAME
    read_all(runs)
    # matplotlib loads only when charts are drawn, not with every command
    from detente.html_report import write_report
    from detente.plots import comparison_of
    comparison = comparison_of(runs, against, group_by) if len(runs) > 1 else None
    try:
        written = write_report(runs, out, comparison=comparison, run_charts=run_charts,
                               title=title)
    except OSError as exc:
        raise InputError(out, [Problem("--out", f"cannot write: {exc.strerror or exc}")]) \
            from None
    console.print(str(written), markup=False, highlight=False, soft_wrap=True)
