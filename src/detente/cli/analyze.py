"""`detente analyze SCENARIO`: the outcome-space report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table
from rich.text import Text

from detente.cli._app import app, console

if TYPE_CHECKING:  # numpy comes with these: imported when the command runs, not for --help
    from detente.analysis import Analysis, PackageReport
    from detente.scenario import Scenario
    from detente.sensitivity import Sensitivity


@app.command("analyze")
def analyze_command(
    scenario_path: Path = typer.Argument(..., metavar="SCENARIO", help="A scenario file."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    frontier: bool = typer.Option(
        True, "--frontier/--no-frontier", help="Compute the Pareto frontier (the slow part)."
    ),
    with_sensitivity: bool = typer.Option(
        False, "--sensitivity",
        help="Also show how the ZOPA moves with each party's walk-away utility and weights.",
    ),
    at_round: int = typer.Option(
        1, "--round", min=1, metavar="N",
        help="Analyze with the walk-away utilities in force in round N (the scenario's "
             "walk_away events change them during the talks).",
    ),
) -> None:
    """Enumerate every package: ZOPA, Pareto frontier, Nash and Kalai-Smorodinsky packages."""
    from detente.analysis import analyze
    from detente.loading import load_scenario
    from detente.sensitivity import sensitivity

    scenario = load_scenario(scenario_path).at_round(at_round)
    report = analyze(scenario, frontier=frontier)
    moves = sensitivity(scenario) if with_sensitivity else None
    if as_json:
        if moves is None:
            console.print_json(report.model_dump_json())
        else:
            data = report.model_dump(mode="json") | {"sensitivity": moves.model_dump(mode="json")}
            console.print_json(json.dumps(data))
        return
    render(scenario, report)
    render_talks(scenario, at_round)
    if moves is not None:
        render_sensitivity(moves)


def render(scenario: Scenario, report: Analysis) -> None:
    summary = Table(title=f"Outcome space of '{scenario.id}'", show_header=False)
    summary.add_column(style="bold")
    summary.add_column(justify="right")
    summary.add_row("packages", f"{report.packages:,}")
    summary.add_row("admissible (no red line of a party the rule needs broken)",
                    f"{report.admissible:,}")
    summary.add_row("ZOPA (the rule passes it with rational votes)",
                    f"{report.zopa:,} ({report.zopa_share:.3%})")
    if report.required and set(report.required) != set(report.voters):
        summary.add_row("accepted by every required party", f"{report.counts.required:,}")
    summary.add_row("accepted unanimously", f"{report.counts.unanimous:,}")
    if report.pareto_frontier is not None:
        summary.add_row("Pareto frontier (admissible)", f"{report.pareto_frontier:,}")
    console.print(summary)
    console.print(Text(report.rule, style="dim"), markup=False)
    if report.nash is None:
        console.print("[bold red]The ZOPA is empty:[/] with every party voting by its own values "
                      "and red lines, the rule passes no package.")
        return
    _package_table(scenario, "Nash bargaining package", report.nash, report)
    if report.kalai_smorodinsky is not None:
        _package_table(scenario, "Kalai-Smorodinsky package", report.kalai_smorodinsky, report)


def _package_table(scenario: Scenario, title: str, pkg: PackageReport, report: Analysis) -> None:
    table = Table(title=f"{title} (Nash product {pkg.nash_product:,.1f})")
    table.add_column("issue")
    table.add_column("settled on")
    for issue in scenario.issues:
        option = next(o for o in issue.options if o.id == pkg.package.options[issue.id])
        table.add_row(issue.label, f"{option.label} [dim]({option.id})[/]")
    for term in scenario.terms:
        table.add_row(term.label, f"{pkg.package.terms[term.id]:g} {term.unit}")
    console.print(table)
    parties = Table(title="Utilities there")
    for col in ("party", "utility", "reservation", "surplus", "best in ZOPA"):
        parties.add_column(col, justify="right" if col != "party" else "left")
    for party, utility in pkg.utilities.items():
        reservation = report.reservation_utilities[party]
        marker = "" if party in report.required else " [dim](not required)[/]"
        parties.add_row(party + marker, f"{utility:.1f}", f"{reservation:.1f}",
                        f"{utility - reservation:+.1f}", f"{report.best_for.get(party, 0):.1f}")
    console.print(parties)


def render_talks(scenario: Scenario, at_round: int) -> None:
    """What the analysis leaves out: the private incentives (the scorer ignores them) and the
    events during the talks, with the walk-away changes and the round they count from."""
    from detente.scenario import INCENTIVES

    for party, incentive in scenario.incentives.items():
        console.print(f"[dim]Incentive: {party} is privately told to "
                      f"{INCENTIVES[incentive.kind]}"
                      + (f" ({incentive.target})" if incentive.target else "")
                      + "; the analysis and the scorer ignore it.[/]")
    changes = [e for e in scenario.events if e.change is not None]
    for event in scenario.events:
        audience = "every party" if event.visible_to == "all" else " and ".join(event.visible_to)
        line = f"Event in round {event.round} ({event.kind}, seen by {audience}): {event.id}"
        if event.change is not None:
            line += (f"; {event.change.party}'s walk-away becomes "
                     f"{event.change.reservation_utility:g}")
        console.print(Text(line, style="dim"))
    if changes:
        console.print(Text(f"This analysis uses the walk-aways in force in round {at_round}; "
                           "--round N shows another round's.", style="dim"))


# --------------------------------------------------------------------------- sensitivity


def render_sensitivity(moves: Sensitivity) -> None:
    """Two tables: the ZOPA against each walk-away value, and against each weight."""
    from detente.sensitivity import OFFSETS

    console.print(
        "\n[bold]Sensitivity[/]: the ZOPA as one assumed number moves, every other number fixed. "
        "Walk-away values, weights and utilities are the modeller's assumptions."
    )
    table = Table(title="Walk-away (reservation) utility of one party")
    for col in ("party", "walk-away", "ZOPA", "ZOPA non-empty while walk-away",
                "largest ZOPA"):
        table.add_column(col, justify="left" if col == "party" else "right")
    for offset in OFFSETS:
        table.add_column(f"at {offset:+g}", justify="right")
    for r in moves.reservation:
        if r.always:
            nonempty = "at any value"
        elif r.nonempty_up_to is None:
            nonempty = "at no value"
        else:
            nonempty = f"<= {r.nonempty_up_to:.2f}"
        largest = (f"{r.largest:,} (<= {r.largest_below:.2f})" if r.largest_below is not None
                   else f"{r.largest:,}")
        around = {round(p.value - r.current, 9): p.zopa for p in r.around}
        table.add_row(r.party, f"{r.current:g}", f"{r.zopa:,}", nonempty, largest,
                      *[f"{around[o]:,}" if o in around else "" for o in OFFSETS])
    console.print(table)
    console.print("[dim]'at +2': the ZOPA if that party's walk-away value were 2 points higher. "
                  "Largest ZOPA: the most packages it can hold, reached at or below the value "
                  "shown.[/]")

    grid = [p.value for p in moves.weights[0].sizes if round(p.value * 10, 9) % 1 == 0] \
        if moves.weights else []
    weights = Table(title="One weight of one party (its other weights rescaled to sum to 1)")
    for col in ("party", "weight of", "now", "ZOPA non-empty for weights"):
        weights.add_column(col, justify="right" if col == "now" else "left")
    for w in grid:
        weights.add_column(f"{w:g}", justify="right")
    previous = ""
    for row in moves.weights:
        sizes = {p.value: p.zopa for p in row.sizes}
        weights.add_row(row.party if row.party != previous else "", row.dimension,
                        f"{row.current:g}", _intervals(row.nonempty),
                        *[f"{sizes[w]:,}" for w in grid])
        previous = row.party
    console.print(weights)


def _intervals(pieces: list[tuple[float, float]]) -> str:
    if not pieces:
        return "none"
    if pieces == [(0.0, 1.0)]:
        return "all (0-1)"
    return ", ".join(f"{lo:.3f}-{hi:.3f}" for lo, hi in pieces)
