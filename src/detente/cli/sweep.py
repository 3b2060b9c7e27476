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
from rich.text import Text

from detente.cli._app import agent_help, app, console
from detente.cli._endpoints import terminate_as_interrupt
from detente.errors import DetenteError, InputError, Problem

if TYPE_CHECKING:
    from detente.costs import Cost
    from detente.estimate import SweepEstimate
    from detente.sweeps import SweepEntry, SweepManifest


@app.command()
def sweep(
    scenario_paths: list[Path] = typer.Argument(
        ..., metavar="SCENARIO...",
        help="Scenario or variant files (or folders), or one design file (factors and levels; "
             "see the README)."),
    seeds: int | None = typer.Option(None, "--seeds", min=1,
                                     help="Seeds 0..N-1 for every scenario (default 3, or the "
                                          "design file's)."),
    concurrency: int = typer.Option(2, "--concurrency", min=1, help="Runs at once."),
    rounds: str | None = typer.Option(
        None, "--rounds", metavar="N[,N...]",
        help="Round limit, 1 to 100; several (4,8): a factor of the sweep."),
    model: str | None = typer.Option(
        None, "--model", metavar="MODEL[,MODEL...]",
        help="Model for every LLM agent; several: a factor."),
    agent: list[str] = typer.Option([], "--agent", metavar="PARTY=SPEC[,SPEC...]",
                                    help=agent_help() + " Several specs for one seat "
                                    "(russia=gpt-4o-mini,scripted:boulware): a factor "
                                    "(agent:russia)."),
    base_url: str | None = typer.Option(None, "--base-url"),
    assist: list[str] = typer.Option(
        [], "--assist", metavar="[PARTY=]MODE",
        help="none, table or tool, for every LLM party or one (as for detente run); several "
             "for every LLM party (none,table): a factor."),
    temperature: str | None = typer.Option(
        None, "--temperature", metavar="T[,T...]",
        help="Temperature of every LLM agent; several (0,0.7): a factor."),
    protocol: str | None = typer.Option(
        None, "--protocol", metavar="NAME[,NAME...]",
        help="Play every scenario under these protocols (a factor; detente plugins lists "
             "them)."),
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
    budget: float | None = typer.Option(
        None, "--budget", metavar="USD", min=0.0,
        help="Stop every run before a model call that could take the sweep's cost past USD "
             "dollars (status budget, exit 3); rerun with a larger one to go on (default: the "
             "sweep's last budget). Local executor only."),
    cache: bool = typer.Option(
        True, "--cache/--no-cache",
        help="Answer requests already answered from the response cache: a rerun, or the same "
             "sweep elsewhere, repeats no call already paid for (see detente cache stats)."),
    prices: Path | None = typer.Option(
        None, "--prices", metavar="FILE",
        help="A price file over the shipped table (USD per million tokens; see the README)."),
    dry_run: bool = typer.Option(
        False, "--dry-run",
        help="Estimate the model calls, tokens and cost of the sweep, and stop: no model is "
             "called, nothing is written."),
) -> None:
    """Run every scenario x seed into one sweep folder; rerunning skips what is complete.

    With a design (a design file, or settings with several comma-separated levels) the sweep
    runs every combination of the levels x seed, and records each run's levels."""
    from detente import api
    from detente.comparison import SCRIPTED_SEEDS_NOTE, all_scripted

    if executor not in ("local", "processes", "ray"):
        raise InputError("--executor", [Problem("", f"expected local, processes or ray; got "
                                                f"'{executor}'")])
    if address is not None and executor != "ray":
        raise InputError("--address", [Problem("", "--address is for --executor ray")])
    if dry_run:
        _estimate(api.estimate(scenario_paths, seeds, agents=agent, rounds=rounds, model=model,
                               base_url=base_url, assist=assist, temperature=temperature,
                               protocol=protocol, config=config, prices=prices), budget)
        return
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
        seeds_n = len(manifest.seeds)
        shape = (f"{len(manifest.agents)} cells of " + " x ".join(
            f"{len(levels)} {name}" for name, levels in manifest.factors.items())
            if manifest.factors else f"{scenarios} scenarios")
        console.print(f"Sweep {manifest_dir(manifest)}: {len(manifest.entries)} runs "
                      f"({shape} x {seeds_n} seeds); {counts['complete']} "
                      "already complete", markup=False, highlight=False)
        if manifest.factors:
            from detente.designs import scripted_note

            note = scripted_note(manifest)
            if note:
                console.print(f"note: {note}", style="yellow", markup=False, highlight=False)
        elif seeds_n > 1 and all(all_scripted(team.values())
                                 for team in manifest.agents.values()):
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
                model=model, base_url=base_url, assist=assist, temperature=temperature,
                protocol=protocol, timeout=timeout,
                max_connections=max_connections, config=config, out=out, name=name,
                log_prompts=log_prompts, executor=executor,  # type: ignore[arg-type]
                address=address, on_start=on_start, on_done=on_done, notice=notice,
                budget=budget, cache=cache, prices=prices)
        finally:
            progress.stop()
    _summary(done.manifest, done.path)
    counts = done.manifest.counts()
    if counts["budget"]:
        from detente.costs import money

        limit = done.manifest.budget_usd or 0.0
        raise BudgetReached(f"budget: the sweep stopped before a call that could take its cost "
                            f"past {money(limit, 2)}; {counts['budget']} runs stopped or not "
                            f"started: rerun the same command with a larger --budget to go on")
    if counts["failed"]:
        raise typer.Exit(1)


class BudgetReached(DetenteError):
    exit_code = 3


def _summary(manifest: SweepManifest, sweep_dir: Path) -> None:
    from detente.costs import format_usd, money, total

    keys = ("runs", "deal", "no_deal", "deadlock", "failed", "budget")
    table = Table(title=f"Sweep {manifest.name}")
    by: dict[str, dict[str, int]] = {}
    costs: dict[str, list[Cost]] = {}
    for e in manifest.entries:
        row = by.setdefault(_row_of(e), dict.fromkeys(keys, 0))
        row["runs"] += 1
        key = e.outcome if e.status == "complete" and e.outcome else (
            e.status if e.status in ("failed", "budget") else None)
        if key:
            row[key] += 1
        if e.cost is not None:
            costs.setdefault(_row_of(e), []).append(e.cost)
    rows = [[sid, *(str(row[k]) for k in keys), *_cost_cells(total(costs.get(sid, [])))]
            for sid, row in by.items()]
    everything = manifest.cost()
    if len(by) > 1:
        rows.append(["all", *(str(sum(r[k] for r in by.values())) for k in keys),
                     *_cost_cells(everything)])
    headers = ("scenario", "runs", "deal", "no deal", "deadlock", "failed", "budget",
               "requests", "tokens", "cost")
    # No failure, no budget: those columns go, so the figures fit 80 columns uncut.
    hidden = {5} if all(r[5] == "0" for r in rows) else set()
    if manifest.budget_usd is None and all(r[6] == "0" for r in rows):
        hidden.add(6)
    shown = [k for k in range(len(headers)) if k not in hidden]
    for k in shown:
        col = headers[k]
        if col == "scenario":
            table.add_column(col, overflow="fold", min_width=min(
                40, max((len(_row_of(e)) for e in manifest.entries), default=8)))
        elif col == "cost":  # never cut to "$0.0…": other headers give way first
            table.add_column(col, justify="right", no_wrap=True,
                             min_width=max(len(r[k]) for r in rows))
        else:
            table.add_column(col, justify="right")
    for n, r in enumerate(rows):
        table.add_row(Text(r[0]), *(r[k] for k in shown[1:]),
                      style="bold" if len(by) > 1 and n == len(rows) - 1 else None)
    console.print(table)
    cached = everything.cached_requests
    line = (f"Cost: {format_usd(everything)} over {everything.requests:,} model requests"
            + (f" ({cached:,} answered from the response cache, free)" if cached else "")
            + f", {everything.total_tokens:,} tokens")
    if manifest.budget_usd is not None:
        line += f"; budget {money(manifest.budget_usd, 2)}"
    console.print(line, markup=False, highlight=False)
    console.print(f"Manifest: {sweep_dir / 'sweep.json'}\nCompare: detente compare {sweep_dir}",
                  markup=False, highlight=False)
    if manifest.factors:
        varied = [f for f in manifest.factors if f != "scenario"]
        console.print(f"By factor: detente compare {sweep_dir} --by "
                      f"{varied[0] if varied else 'scenario'}; seats: detente leaderboard "
                      f"{sweep_dir}", markup=False, highlight=False)


def _row_of(entry: SweepEntry) -> str:
    """A summary row: the scenario, or a design's cell (the scenario and its levels)."""
    levels = [f"{k}={v}" for k, v in entry.factors.items() if k != "scenario"]
    return f"{entry.scenario_id} [{', '.join(levels)}]" if levels else entry.scenario_id


def _cost_cells(cost: Cost) -> tuple[str, str, str]:
    from detente.costs import format_usd

    if not cost.requests:
        return "0", "0", "$0"
    return f"{cost.requests:,}", f"{cost.total_tokens:,}", format_usd(cost)


def _estimate(estimate: SweepEstimate, budget: float | None = None) -> None:
    """The dry run: per scenario and in all, the estimate and its bounds, a few lines each."""
    from detente.costs import money

    def usd(value: float | None) -> str:
        return "unknown" if value is None else money(value)

    def say(text: str = "") -> None:
        console.print(text, markup=False, highlight=False)

    say("Estimate of the sweep (no model called, nothing written):")
    for s in estimate.scenarios:
        runs = "1 run" if s.runs == 1 else f"{s.runs} runs"
        say(f"{s.scenario_id} ({s.protocol}, {s.rounds} rounds): {runs}, "
            f"{s.calls:,} model calls ({s.calls_min:,} if every run ends in round 1, at most "
            f"{s.calls_max:,})")
        say(f"  tokens {s.prompt_tokens:,} prompt + {s.completion_tokens:,} completion; cost "
            f"{usd(s.usd)} (at most {usd(s.usd_max)})")
    if len(estimate.scenarios) > 1:
        say(f"All: {estimate.total('runs')} runs, {estimate.calls:,} model calls "
            f"({estimate.total('calls_min'):,} to {estimate.total('calls_max'):,}); tokens "
            f"{estimate.total('prompt_tokens'):,} prompt + "
            f"{estimate.total('completion_tokens'):,} completion; cost {usd(estimate.usd())} "
            f"(at most {usd(estimate.usd('usd_max'))})")
    say()
    say("Assumed: every round played (no deal ends a run early), one request per turn, "
        "answers filling half of each text field, about four characters a token. At most: "
        "a caucus every round it is allowed, every refusal and correction, every completion "
        "at max_tokens.")
    say(f"Prices: {estimate.price_source}.")
    if estimate.unpriced:
        say(f"No price for {', '.join(estimate.unpriced)}: its cost is unknown (add it with "
            "--prices FILE or [prices] in detente.toml).")
    expected, most = estimate.usd(), estimate.usd("usd_max")
    if budget is not None and expected is not None and most is not None:
        verdict = ("above even the estimate's upper bound" if most <= budget else
                   "above the estimate, below its upper bound" if expected <= budget
                   else "below the estimate: the sweep would likely stop part-way (status "
                   "budget)")
        say(f"Budget {money(budget, 2)}: {verdict}. Runs already in the sweep folder are not "
            "counted.")
