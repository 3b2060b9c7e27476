"""`detente diff RUN_A RUN_B`: two runs aligned by round and issue; how their outcomes differ."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table
from rich.text import Text

from detente.cli._app import app, console
from detente.diff import PartyMove, RoundDiff, RunDiff, Value, diff_runs, format_value

DIFFERS = "≠"
CHANGED = "*"


@app.command()
def diff(
    run_a: Path = typer.Argument(..., metavar="RUN_A", help="A run folder."),
    run_b: Path = typer.Argument(..., metavar="RUN_B", help="Another run folder."),
    as_json: bool = typer.Option(False, "--json", help="Print the diff as JSON."),
    diverging: bool = typer.Option(False, "--diverging",
                                   help="Show only the rounds where the runs differ."),
) -> None:
    """Compare two runs round by round: tables, votes, who moved, and the outcomes."""
    result = diff_runs(run_a, run_b)
    if as_json:
        typer.echo(result.model_dump_json(indent=2))
        return
    render(result, diverging)


def _t(text: str, style: str = "") -> Text:
    return Text(text, style=style)


def render(d: RunDiff, diverging: bool = False) -> None:
    runs = Table(title=_t("Runs"), title_justify="left", show_header=True)
    runs.add_column(_t(""))
    runs.add_column(_t("A"), overflow="fold")
    runs.add_column(_t("B"), overflow="fold")
    for label, va, vb in (
        ("folder", d.a.run_dir, d.b.run_dir),
        ("scenario", d.a.scenario_id, d.b.scenario_id),
        ("seed", str(d.a.seed), str(d.b.seed)),
        ("agents", d.a.agents, d.b.agents),
        ("outcome", f"{d.a.status}: {d.a.reason}", f"{d.b.status}: {d.b.reason}"),
    ):
        runs.add_row(_t(label), _t(va), _t(vb, "" if va == vb else "bold"))
    console.print(runs)
    for line in d.summary:
        console.print(_t(line, "bold"))
    console.print(_t(f"{DIFFERS} the runs differ; {CHANGED} the proposer changed this since the "
                     "previous round", "dim"))
    for rd in d.rounds:
        if diverging and not rd.diverges:
            continue
        console.print(_round_table(rd, d.first_divergence))
    if any(c.a is not None or c.b is not None for c in d.outcome.package):
        console.print(_package_table(d))
    console.print(_outcome_table(d))


def _package_table(d: RunDiff) -> Table:
    table = Table(title=_t("Agreed packages"), title_justify="left")
    for col in ("issue", "A", "B", ""):
        table.add_column(_t(col))
    for c in d.outcome.package:
        style = "" if c.same else "bold yellow"
        table.add_row(_t(c.issue), _t(format_value(c.a) if c.a is not None else "no deal", style),
                      _t(format_value(c.b) if c.b is not None else "no deal", style),
                      _t("" if c.same else DIFFERS))
    return table


def _cell(value: Value, changed: bool, differs: bool) -> Text:
    text = _t(format_value(value) + (f" {CHANGED}" if changed else ""))
    if differs:
        text.stylize("bold yellow")
    return text


def _answer(vote: str | None, objections: dict[str, Value]) -> str:
    if vote is None:
        return "-"
    if not objections:
        return vote
    parts = [f"{i}→{format_value(w)}" if w is not None else i for i, w in objections.items()]
    return f"{vote}; objects: {', '.join(parts)}"


def _round_title(rd: RoundDiff, first: int | None) -> Text:
    def side(reached: bool, proposer: str | None, passed: bool | None) -> str:
        if not reached:
            return "not reached"
        verdict = {True: "passes", False: "fails", None: "no tally"}[passed]
        return f"{proposer or '?'} tables, {verdict}"

    mark = " (first divergence)" if rd.round == first else ""
    return _t(f"Round {rd.round}{mark}: A {side(rd.reached_a, rd.proposer_a, rd.passed_a)}; "
              f"B {side(rd.reached_b, rd.proposer_b, rd.passed_b)}",
              "bold yellow" if rd.diverges else "bold")


def _round_table(rd: RoundDiff, first: int | None) -> Table:
    table = Table(title=_round_title(rd, first), title_justify="left")
    table.add_column(_t("issue / party"))
    table.add_column(_t("A"), overflow="fold")
    table.add_column(_t("B"), overflow="fold")
    table.add_column(_t(""), justify="center")
    for c in rd.issues:
        table.add_row(_t(c.issue), _cell(c.a, c.changed_in_a, not c.same),
                      _cell(c.b, c.changed_in_b, not c.same), _t("" if c.same else DIFFERS))
    table.add_section()
    for m in rd.parties:
        table.add_row(*_party_row(m))
    if rd.moved:
        table.caption = Text(f"moved (differ between A and B): {', '.join(rd.moved)}")
    return table


def _party_row(m: PartyMove) -> tuple[Text, Text, Text, Text]:
    style = "bold yellow" if m.differs else ""
    return (_t(f"{m.party} votes"), _t(_answer(m.vote_a, m.objects_a), style),
            _t(_answer(m.vote_b, m.objects_b), style), _t(DIFFERS if m.differs else ""))


def _outcome_table(d: RunDiff) -> Table:
    o = d.outcome
    table = Table(title=_t(f"Outcome: A {o.status_a} after {o.rounds_a} rounds; B {o.status_b} "
                           f"after {o.rounds_b} rounds"), title_justify="left")
    for col in ("party", "utility A", "utility B", "B - A", "red lines broken A",
                "red lines broken B"):
        table.add_column(_t(col), justify="right" if col.startswith(("utility", "B -")) else
                         "left")
    for p in o.parties:
        table.add_row(
            _t(p.party),
            _t("-" if p.utility_a is None else f"{p.utility_a:.1f}"),
            _t("-" if p.utility_b is None else f"{p.utility_b:.1f}"),
            _t("-" if p.delta is None else f"{p.delta:+.1f}", "bold" if p.delta else ""),
            _t(", ".join(p.red_lines_a) or "none", "red" if p.red_lines_a else ""),
            _t(", ".join(p.red_lines_b) or "none", "red" if p.red_lines_b else ""),
        )
    na, nb = o.distance_to_nash_a, o.distance_to_nash_b
    table.caption = Text("distance to the Nash package: A "
                         f"{'n/a' if na is None else f'{na:.1f}'}, B "
                         f"{'n/a' if nb is None else f'{nb:.1f}'}")
    return table
