"""`detente sweep SCENARIO...`: every scenario (variant) x seed, with bounded concurrency."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from detente.cli._app import agent_help, app, console
from detente.cli._endpoints import terminate_as_interrupt
from detente.errors import InputError, Problem

if TYPE_CHECKING:
    from detente.sweeps import SweepEntry, SweepManifest


@app.command()
def sweep(
    scenario_paths: list[Path] = typer.Argument(..., metavar="SCENARIO...",
                                                help="Scenario or variant files (or folders)."),
    seeds: int = typer.Option(3, "--seeds", min=1, help="Seeds 0..N-1 for every scenario."),
    concurrency: int = typer.Option(2, "--concurrency", min=1, help="Runs at once."),
    rounds: int | None = typer.Option(None, "--rounds", min=1, max=100),
    model: str | None = typer.Option(None, "--model", help="Model for every LLM agent."),
    agent: list[str] = typer.Option([], "--agent", metavar="PARTY=SPEC",
                                    help=agent_help()),
    base_url: str | None = typer.Option(None, "--base-url"),
    assist: list[str] = typer.Option(
        [], "--assist", metavar="[PARTY=]MODE",
        help="none, table or tool, for every LLM party or one (as for detente run)."),
    log_prompts: bool = typer.Option(
        True, "--log-prompts/--no-log-prompts",
        help="Keep every model request and raw response in each run's prompts.jsonl."),
    timeout: float | None = typer.Option(
        None, "--timeout", min=0.001, metavar="SECONDS",
        help="Seconds a model request may take (default 60; 600 on the embedded model)."),
    executor: str = typer.Option(
        "local", "--executor",
        help="local: every run on one event loop in this process (hundreds of model calls in "
             "flight); processes: a worker process per run (CPU-heavy scripted sweeps); ray: a "
             "Ray task per run on a cluster (--address)."),
    address: str | None = typer.Option(
        None, "--address", help="The Ray cluster for --executor ray (ray://HOST:10001, "
                                "HOST:6379 or auto; default: a new local instance)."),
    max_connections: int | None = typer.Option(
        None, "--max-connections", min=1,
        help="Connections to one endpoint at once, shared by every run (default 64)."),
    config: Path | None = typer.Option(None, "--config", help="A TOML config file."),
    out: Path = typer.Option(Path("transcripts/sweeps"), "--out",
                             help="Where sweep folders go."),
    name: str | None = typer.Option(None, "--name", help="The sweep folder's name (default: "
                                    "derived from what is swept, so a rerun finds it)."),
) -> None:
    """Run every scenario x seed into one sweep folder; rerunning skips what is complete."""
    from detente import api
    from detente.comparison import SCRIPTED_SEEDS_NOTE, all_scripted

    if executor not in ("local", "processes", "ray"):
        raise InputError("--executor", [Problem("", f"expected local, processes or ray; got "
                                                f"'{executor}'")])
    if address is not None and executor != "ray":
        raise InputError("--address", [Problem("", "--address is for --executor ray")])
    progress = Progress(
        TextColumn("[bold]runs"), BarColumn(), MofNCompleteColumn(),
        TextColumn("failed: {task.fields[failed]}"), TimeElapsedColumn(),
        TextColumn("left:"), TimeRemainingColumn(), console=console,
    )
    task: TaskID | None = None
    failed = 0

    def on_start(manifest: SweepManifest) -> None:
        nonlocal task
        counts = manifest.counts()
        scenarios = len({e.scenario_id for e in manifest.entries})
        console.print(f"Sweep {manifest_dir(manifest)}: {len(manifest.entries)} runs "
                      f"({scenarios} scenarios x {seeds} seeds); {counts['complete']} "
                      "already complete", markup=False, highlight=False)
        if seeds > 1 and all(all_scripted(team.values()) for team in manifest.agents.values()):
            console.print(f"note: every agent is scripted: {SCRIPTED_SEEDS_NOTE}.",
                          style="yellow", markup=False, highlight=False)
        progress.start()
        task = progress.add_task("runs", total=len(manifest.entries),
                                 completed=counts["complete"], failed=0)

    def on_done(entry: SweepEntry) -> None:
        nonlocal failed
        if entry.status == "failed":
            failed += 1
            progress.console.print(f"failed: {entry.run_dir}: {entry.reason}", markup=False,
                                   highlight=False)
        if task is not None:
            progress.update(task, advance=1, failed=failed)

    def manifest_dir(manifest: SweepManifest) -> Path:
        return out / manifest.name

    def notice(text: str) -> None:
        console.print(text, markup=False, highlight=False)

    with terminate_as_interrupt():
        try:
            done = api.sweep(
                scenario_paths, seeds, agents=agent, concurrency=concurrency, rounds=rounds,
                model=model, base_url=base_url, assist=assist, timeout=timeout,
                max_connections=max_connections, config=config, out=out, name=name,
                log_prompts=log_prompts, executor=executor,  # type: ignore[arg-type]
                address=address, on_start=on_start, on_done=on_done, notice=notice)
        finally:
            progress.stop()
    _summary(done.manifest, done.path)
    if done.manifest.counts()["failed"]:
        raise typer.Exit(1)


def _summary(manifest: SweepManifest, sweep_dir: Path) -> None:
    table = Table(title=f"Sweep {manifest.name}")
    for col in ("scenario", "runs", "deal", "no deal", "deadlock", "failed"):
        table.add_column(col, justify="left" if col == "scenario" else "right")
    by: dict[str, dict[str, int]] = {}
    for e in manifest.entries:
        row = by.setdefault(e.scenario_id, {"runs": 0, "deal": 0, "no_deal": 0, "deadlock": 0,
                                            "failed": 0})
        row["runs"] += 1
        key = e.outcome if e.status == "complete" and e.outcome else (
            "failed" if e.status == "failed" else None)
        if key:
            row[key] += 1
    for sid, row in by.items():
        table.add_row(sid, *(str(row[k]) for k in ("runs", "deal", "no_deal", "deadlock",
                                                    "failed")))
    console.print(table)
    console.print(f"Manifest: {sweep_dir / 'sweep.json'}\nCompare: detente compare {sweep_dir}",
                  markup=False, highlight=False)
