"""`detente plot PATH... [--out DIR]`: charts of runs as PNG files (by default in plots/ inside
the run or sweep folder)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, get_args

import typer

from detente.cli._app import app, console
from detente.comparison import GroupBy
from detente.errors import InputError, Problem
from detente.runs import RunFolder, load_runs

PLOTS_FOLDER = "plots"
"""Where `plot` writes by default, inside the run or sweep folder."""

# Options `plot` and `report` share.
RunPaths = Annotated[list[str], typer.Argument(
    metavar="PATH...", help="Run folders, sweep folders (every run below) or glob patterns.")]
Against = Annotated[str | None, typer.Option(
    "--against", metavar="VARIANT",
    help="The reference variant (default: baseline, if present, else the first).")]
By = Annotated[str, typer.Option(
    "--by", help="Group runs by scenario, agents or scenario+agents, or by a factor of a "
                 "sweep design (agent:PARTY, model, temperature, assist, protocol, max_rounds, "
                 "seed).")]
MovedScenario = Annotated[Path | None, typer.Option(
    "--scenario", help="The runs' scenario, if it has moved.")]


def home_of(run_dirs: Sequence[Path]) -> Path:
    """Where `plot` and `report` write by default: the run folder of one run, else the folder
    holding every run (a sweep folder). Runs with no common folder below the working folder
    (or the filesystem's root) are refused: the charts would land where the command runs."""
    if len(run_dirs) == 1:
        return run_dirs[0]
    try:
        common = Path(os.path.commonpath([str(d) for d in run_dirs]))
    except ValueError:  # relative and absolute paths mixed
        common = Path(os.path.commonpath([str(d.resolve()) for d in run_dirs]))
    resolved = common.resolve()
    if resolved == Path.cwd().resolve() or resolved in Path.cwd().resolve().parents \
            or resolved == Path(resolved.anchor):
        raise InputError("--out", [Problem("", "these runs share no folder of their own to "
                                           "write into; say where with --out")])
    return common


def read_all(runs: Sequence[RunFolder]) -> None:
    """Read every run's parts now: a run that cannot be read stops the command before it
    writes anything."""
    for run in runs:
        run.read()


def check_group_by(by: str) -> str:
    """`scenario`, `agents`, `scenario+agents`, or a factor (checked against the runs by
    `detente.comparison.compare_runs`)."""
    from detente.comparison import FACTORS

    choices: tuple[str, ...] = get_args(GroupBy)
    if by not in choices and by not in FACTORS and not by.startswith("agent:"):
        raise InputError("--by", [Problem("", f"expected one of {', '.join(choices)}, or a "
                                          f"factor: {', '.join(FACTORS)}, agent:PARTY; got "
                                          f"'{by}'")])
    return by


@app.command()
def plot(
    paths: RunPaths,
    out: Path | None = typer.Option(None, "--out", metavar="DIR",
                                    help="Folder the PNG files go to (created if need be; "
                                         "default: plots/ in the run or sweep folder)."),
    per_run: bool = typer.Option(False, "--per-run",
                                 help="With several runs, also chart each run's utilities."),
    against: Against = None,
    by: By = "scenario",
    scenario: MovedScenario = None,
) -> None:
    """Chart runs: one run's utilities by round; for several, agreed options and rates."""
    group_by = check_group_by(by)
    if out is not None and out.exists() and not out.is_dir():
        raise InputError(out, [Problem("--out", "expected a folder, got a file")])
    runs = load_runs(paths, finished=False, scenario=scenario)
    if out is None:
        out = home_of([r.path for r in runs]) / PLOTS_FOLDER
    read_all(runs)
    # matplotlib loads only when charts are drawn, not with every command
    from detente.plots import comparison_of, write_charts
    comparison = comparison_of(runs, against, group_by) if len(runs) > 1 else None
    try:
        written = write_charts(runs, out, per_run=per_run, comparison=comparison)
    except OSError as exc:
        raise InputError(out, [Problem("--out", f"cannot write: {exc.strerror or exc}")]) \
            from None
    if len(runs) > 1 and comparison is None:
        console.print("no run has finished: nothing to compare", markup=False, highlight=False)
    for path in written:
        console.print(str(path), markup=False, highlight=False, soft_wrap=True)
