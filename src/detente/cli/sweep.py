"""`detente sweep SCENARIO...`: every scenario (variant) x seed, with bounded concurrency."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from detente.cli._app import app, console
from detente.cli._endpoints import embedded_server, preflight, terminate_as_interrupt
from detente.config import env_layer, file_layer, flag_layer, resolve_agents
from detente.errors import InputError, Problem
from detente.events import AgentSettings
from detente.files import RunLock
from detente.loading import load_bundle


@app.command()
def sweep(
    scenario_paths: list[Path] = typer.Argument(..., metavar="SCENARIO...",
                                                help="Scenario or variant files (or folders)."),
    seeds: int = typer.Option(3, "--seeds", min=1, help="Seeds 0..N-1 for every scenario."),
    concurrency: int = typer.Option(2, "--concurrency", min=1, help="Runs at once."),
    rounds: int | None = typer.Option(None, "--rounds", min=1, max=100),
    model: str | None = typer.Option(None, "--model", help="Model for every LLM agent."),
    agent: list[str] = typer.Option([], "--agent", metavar="PARTY=SPEC",
                                    help="Who plays a party (as for detente run)."),
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
    from detente.sweep import plan_sweep, run_sweep, sweep_name

    files: list[Path] = []
    for path in scenario_paths:
        if path.is_dir():
            found = sorted(path.glob("*.yaml"))
            if not found:
                raise InputError(path, [Problem("", "no .yaml scenario files in this folder")])
            files += found
        else:
            files.append(path)
    bundles = [load_bundle(f) for f in files]
    ids = [b.scenario.id for b in bundles]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise InputError("detente sweep", [Problem("SCENARIO", "scenario ids must be unique in a "
                                                   f"sweep; repeated: {', '.join(dupes)}")])
    if executor not in ("local", "processes", "ray"):
        raise InputError("--executor", [Problem("", f"expected local, processes or ray; got "
                                                f"'{executor}'")])
    if address is not None and executor != "ray":
        raise InputError("--address", [Problem("", "--address is for --executor ray")])
    layers = [flag_layer(model=model, agents=agent, base_url=base_url, assist=assist,
                         timeout=timeout, max_connections=max_connections),
              env_layer(), file_layer(config)]
    # No seed here: every run of the sweep sends its own seed to the model.
    agents: dict[str, dict[str, AgentSettings]] = {
        b.scenario.id: resolve_agents(b.scenario, layers) for b in bundles
    }
    seed_list = list(range(seeds))
    sweep_dir = out / (name or sweep_name(bundles, seed_list, agents, rounds))

    with terminate_as_interrupt(), RunLock(sweep_dir, "sweep"):
        every = {f"{sid}/{p}": s for sid, team in agents.items() for p, s in team.items()}
        with embedded_server(every, None) as served:
            preflight(served)
            for key, settings in served.items():
                sid, party = key.split("/", 1)
                agents[sid][party] = settings
            manifest = plan_sweep(sweep_dir, bundles, seed_list, agents, rounds, log_prompts)
            counts = manifest.counts()
            console.print(f"Sweep {sweep_dir}: {len(manifest.entries)} runs "
                          f"({len(bundles)} scenarios x {seeds} seeds); {counts['complete']} "
                          "already complete", markup=False, highlight=False)
            failed = 0
            with Progress(
                TextColumn("[bold]runs"), BarColumn(), MofNCompleteColumn(),
                TextColumn("failed: {task.fields[failed]}"), TimeElapsedColumn(),
                TextColumn("left:"), TimeRemainingColumn(), console=console,
            ) as progress:
                task = progress.add_task("runs", total=len(manifest.entries),
                                         completed=counts["complete"], failed=0)

                def on_done(entry: object) -> None:
                    nonlocal failed
                    if getattr(entry, "status", "") == "failed":
                        failed += 1
                        progress.console.print(
                            f"failed: {getattr(entry, 'run_dir', '')}: "
                            f"{getattr(entry, 'reason', '')}", markup=False, highlight=False)
                    progress.update(task, advance=1, failed=failed)

                manifest = run_sweep(sweep_dir, manifest, concurrency, on_done,
                                     executor,  # type: ignore[arg-type]
                                     address)
    _summary(manifest, sweep_dir)
    if manifest.counts()["failed"]:
        raise typer.Exit(1)


def _summary(manifest: object, sweep_dir: Path) -> None:
    from detente.sweep import SweepManifest

    assert isinstance(manifest, SweepManifest)
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
