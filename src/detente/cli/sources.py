"""`detente sources PATH...`: how many claims rest on the article, inference, background and
assumption, per party."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from detente.cli._app import app, console
from detente.errors import InputError, Problem

if TYPE_CHECKING:  # the models load with the command, not with every --help
    from detente.briefs import Brief
    from detente.scenario import Scenario
    from detente.sources import SourceCounts

NUMBERS = ("utility", "weight")


def _shown(path: Path) -> Path:
    try:
        return path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return path


def collect(paths: list[Path]) -> SourceCounts:
    """Load every scenario (with its briefs) and brief under `paths` and count their tags."""
    from detente.loading import classify, load_brief, load_bundle, load_yaml
    from detente.sources import count_sources, iter_yaml

    scenarios: list[tuple[Path, Scenario, dict[str, tuple[Path, Brief]]]] = []
    briefs: list[tuple[Path, Brief]] = []
    files = list(iter_yaml(paths))
    for path in paths:
        if path.is_dir() and not any(f.is_relative_to(path) for f in files):
            raise InputError(path, [Problem("", "no .yaml files in this folder")])
    for file in files:
        kind = classify(load_yaml(file))
        if kind == "design":  # a sweep design makes no claim
            continue
        if kind == "scenario":
            bundle = load_bundle(file)
            agents_dir = (file.parent / bundle.scenario.agents_dir).resolve()
            party_briefs = {party: (_shown(agents_dir / f"{party}.yaml"), brief)
                            for party, brief in bundle.briefs.items()}
            scenarios.append((file, bundle.scenario, party_briefs))
        else:
            briefs.append((file, load_brief(file)))
    return count_sources(scenarios, briefs)


@app.command("sources")
def sources_command(
    paths: list[Path] = typer.Argument(
        ..., help="Scenario or brief files, or folders (searched recursively for .yaml)."),
    as_json: bool = typer.Option(False, "--json", help="Print the counts as JSON."),
) -> None:
    """Count the claims that rest on each source tag, per party.

    A claim a variant repeats from its base, or a brief reached twice, counts once.
    """
    counts = collect(paths)
    if as_json:
        console.print_json(counts.model_dump_json())
        return
    render(counts)


def render(counts: SourceCounts) -> None:
    from detente.sources import KINDS, SCENARIO_KINDS, TAGS

    console.print(f"Source tags in {len(counts.files)} files (each distinct claim counted once).")
    table = Table(title="Claims per party and source tag")
    table.add_column("party")
    for tag in TAGS:
        table.add_column(tag, justify="right")
    table.add_column("claims", justify="right")
    table.add_column("+ utilities & weights (assumption)", justify="right")
    for party, c in counts.parties.items():
        numbers = sum(c.by_kind[k]["assumption"] for k in NUMBERS)
        table.add_row(party, *[str(c.prose_total[t]) for t in TAGS],
                      str(sum(c.prose_total.values())), str(numbers))
    scenario_total = {t: sum(row[t] for row in counts.scenario.values()) for t in TAGS}
    table.add_row("(scenario: issues, options, terms)", *[str(scenario_total[t]) for t in TAGS],
                  str(sum(scenario_total.values())), "")
    numbers = sum(counts.total.values()) - sum(counts.prose_total.values())
    table.add_row("[bold]total[/]", *[f"[bold]{counts.prose_total[t]}[/]" for t in TAGS],
                  f"[bold]{sum(counts.prose_total.values())}[/]", f"[bold]{numbers}[/]")
    console.print(table)

    kinds = Table(title="Claims per kind and source tag (all parties)")
    kinds.add_column("kind")
    for tag in TAGS:
        kinds.add_column(tag, justify="right")
    kinds.add_column("total", justify="right")
    rows: dict[str, dict[str, int]] = {}
    for c in counts.parties.values():
        for kind in KINDS:
            row = rows.setdefault(kind, dict.fromkeys(TAGS, 0))
            for tag in TAGS:
                row[tag] += c.by_kind[kind][tag]
    for kind in SCENARIO_KINDS:
        rows[f"{kind} (scenario)"] = counts.scenario[kind]
    for kind, row in rows.items():
        kinds.add_row(kind, *[str(row[t]) for t in TAGS], str(sum(row.values())))
    console.print(kinds)
    console.print(
        "[dim]Per party: its brief's positions and persona, its red lines and walk-away value "
        "(reservation), and the options its positions prefer, accept or reject (under the tag "
        "the scenario gives each option). Utilities and weights are assumptions by definition: "
        "one claim per number, in the last column. Issues, options and numeric terms belong to "
        "the scenario, not to a party.[/]")
