"""`detente analyze SCENARIO`: the outcome-space report."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from detente.analysis import Analysis, PackageReport, analyze
from detente.cli._app import app, console
from detente.loading import load_scenario
from detente.scenario import Scenario


@app.command("analyze")
def analyze_command(
    scenario_path: Path = typer.Argument(..., metavar="SCENARIO", help="A scenario file."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    frontier: bool = typer.Option(
        True, "--frontier/--no-frontier", help="Compute the Pareto frontier (the slow part)."
    ),
) -> None:
    """Enumerate every package: ZOPA, Pareto frontier, Nash and Kalai-Smorodinsky packages."""
    scenario = load_scenario(scenario_path)
    report = analyze(scenario, frontier=frontier)
    if as_json:
        console.print_json(report.model_dump_json())
        return
    render(scenario, report)


def render(scenario: Scenario, report: Analysis) -> None:
    summary = Table(title=f"Outcome space of '{scenario.id}'", show_header=False)
    summary.add_column(style="bold")
    summary.add_column(justify="right")
    summary.add_row("packages", f"{report.packages:,}")
    summary.add_row("admissible (no required red line broken)", f"{report.admissible:,}")
    summary.add_row("ZOPA (required parties all rationally accept)",
                    f"{report.zopa:,} ({report.zopa_share:.3%})")
    summary.add_row("passed by the full decision rule", f"{report.counts.decision_rule:,}")
    summary.add_row("accepted unanimously", f"{report.counts.unanimous:,}")
    if report.pareto_frontier is not None:
        summary.add_row("Pareto frontier (admissible)", f"{report.pareto_frontier:,}")
    console.print(summary)
    if report.nash is None:
        console.print("[bold red]The ZOPA is empty:[/] no package satisfies every required party.")
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
