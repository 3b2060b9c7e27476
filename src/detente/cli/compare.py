"""`detente compare PATH...`: variants side by side, with intervals and tests against one."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import get_args

import typer
from rich.table import Table
from rich.text import Text

from detente.cli._app import app, console, err_console
from detente.compare import (
    Comparison,
    GroupBy,
    MeanCI,
    Proportion,
    VariantStats,
    compare_runs,
    load_runs_with_skipped,
)
from detente.errors import InputError, Problem

SIGNIFICANT = 0.05


@app.command()
def compare(
    paths: list[str] = typer.Argument(..., metavar="PATH...",
                                      help="Run folders, sweep folders (every run below) or "
                                           "glob patterns."),
    against: str | None = typer.Option(None, "--against", metavar="VARIANT",
                                       help="The reference variant (default: baseline, if "
                                            "present, else the first)."),
    by: str = typer.Option("scenario", "--by",
                           help="Group runs by scenario, agents or scenario+agents."),
    as_json: bool = typer.Option(False, "--json", help="Print the comparison as JSON."),
    csv_path: Path | None = typer.Option(None, "--csv", metavar="FILE",
                                         help="Also write one row per variant, metric and "
                                              "party (value, lo, hi)."),
) -> None:
    """Compare finished runs per variant: deal rates, utilities, red lines, agreed options."""
    choices: tuple[str, ...] = get_args(GroupBy)
    if by not in choices:
        raise InputError("--by", [Problem("", f"expected one of {', '.join(choices)}; "
                                          f"got '{by}'")])
    loaded = load_runs_with_skipped(paths)
    comparison = compare_runs(loaded.runs, against, by=by)  # type: ignore[arg-type]
    comparison.skipped = loaded.skipped
    if csv_path is not None:
        write_csv(comparison, csv_path)
    if as_json:
        typer.echo(comparison.model_dump_json(indent=2))
        for s in comparison.skipped:
            err_console.print(f"skipped {s.run_dir}: {s.status or 'unreadable'}: {s.reason}",
                              markup=False, highlight=False)
        return
    render(comparison)
    if csv_path is not None:
        console.print(f"CSV: {csv_path}", markup=False, highlight=False)


# --------------------------------------------------------------------------- formatting


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def fmt_rate(p: Proportion) -> str:
    return f"{_pct(p.rate)} [{_pct(p.lo)}, {_pct(p.hi)}] ({p.count}/{p.n})"


def fmt_mean(m: MeanCI | None) -> str:
    return "-" if m is None else f"{m.mean:.1f} [{m.lo:.1f}, {m.hi:.1f}]"


def fmt_p(p: float | None) -> Text:
    if p is None:
        return Text("n/a", style="dim")
    text = f"{p:.3f}" if p >= 0.001 else "<0.001"
    return Text(text, style="bold" if p < SIGNIFICANT else "")


def _table(title: str) -> Table:
    return Table(title=Text(title), title_justify="left")


def _row(table: Table, *cells: str | Text) -> None:
    """Add a row; plain strings are never read as rich markup (labels hold brackets)."""
    table.add_row(*(Text(c) if isinstance(c, str) else c for c in cells))


def _variant_table(title: str, comparison: Comparison, first: str = "") -> Table:
    table = _table(title)
    table.add_column(Text(first), no_wrap=True)
    for g in comparison.groups:
        ref = " (reference)" if g.variant == comparison.reference else ""
        table.add_column(Text(g.variant + ref), justify="right", overflow="fold")
    return table


def _parties(groups: list[VariantStats]) -> list[str]:
    out: dict[str, None] = {}
    for g in groups:
        out.update(dict.fromkeys(g.parties))
    return list(out)


def render(comparison: Comparison) -> None:
    groups = comparison.groups
    runs = sum(g.n for g in groups)
    console.print(f"{runs} finished runs in {len(groups)} variants (grouped by "
                  f"{comparison.group_by}); reference: {comparison.reference}",
                  markup=False, highlight=False)
    if comparison.skipped:
        console.print(Text(f"skipped {len(comparison.skipped)} unfinished or unreadable runs:",
                           style="yellow"))
        for s in comparison.skipped:
            console.print(f"  {s.run_dir}: {s.status or 'unreadable'}: {s.reason}",
                          markup=False, highlight=False)

    outcomes = _variant_table("Outcomes", comparison)
    _row(outcomes, "runs", *(f"{g.n} (seeds {_seeds(g.seeds)})" for g in groups))
    _row(outcomes, "deal rate", *(fmt_rate(g.deal_rate) for g in groups))
    _row(outcomes, "outcomes", *(", ".join(f"{k} {v}" for k, v in sorted(g.statuses.items()))
                                   for g in groups))
    _row(outcomes, "rounds to agreement", *(
        f"mean {g.rounds_to_agreement.mean:.1f}, median {g.rounds_to_agreement.median:g}"
        if g.rounds_to_agreement else "- (no deal)" for g in groups))
    _row(outcomes, "distance to Nash", *(fmt_mean(g.distance_to_nash) for g in groups))
    _row(outcomes, "table in zone, any round",
         *(fmt_rate(g.deal_any_round) if g.deal_any_round else "-" for g in groups))
    _row(outcomes, "table in zone, final round",
         *(fmt_rate(g.deal_final_round) if g.deal_final_round else "-" for g in groups))
    _row(outcomes, "proposals breaking a red line",
         *(fmt_rate(g.red_line_proposals) if g.red_line_proposals else "-" for g in groups))
    if any(g.upper_bound for g in groups):
        _row(outcomes, Text("oracle mediator", style="yellow"),
             *("upper bound" if g.upper_bound else "" for g in groups))
    if any(len(g.agents) > 1 for g in groups) or len({a for g in groups for a in g.agents}) > 1:
        _row(outcomes, "agents", *("; ".join(g.agents) for g in groups))
    if any(len(g.scenario_hashes) > 1 for g in groups):
        _row(outcomes, Text("scenario versions", style="yellow"),
                         *(str(len(g.scenario_hashes)) for g in groups))
    console.print(outcomes)
    _note("Deal rate with its 95% Wilson interval; rounds over deals only; distance to Nash: "
          "mean Euclidean distance of the outcome's utilities to the Nash package's, with a "
          "95% bootstrap interval. Table in zone: runs in which a tabled package lay in the "
          "zone of agreement (the rule would pass it if every party voted by its own values "
          "and red lines), in any round or in the last. Proposals breaking a red line: tabled "
          "packages breaking a red line of a party the rule needs, over all proposals. An "
          "oracle mediator's runs are reference runs: an upper bound, not a negotiation.")

    parties = _parties(groups)
    utility = _variant_table("Mean utility [95% bootstrap interval]", comparison, "party")
    for party in parties:
        _row(utility, party, *(fmt_mean(g.parties[party].utility) if party in g.parties
                                 else "-" for g in groups))
    console.print(utility)
    _note("Over every run; a run without a deal scores each party's reservation utility.")

    violations = _variant_table("Red-line violation rate [95% Wilson interval]", comparison,
                                "party")
    for party in parties:
        _row(violations, party, *(fmt_rate(g.parties[party].violation_rate)
                                    if party in g.parties else "-" for g in groups))
        lines: dict[str, None] = {}
        for g in groups:
            if party in g.parties:
                lines.update(dict.fromkeys(g.parties[party].red_lines))
        for line in lines:
            _row(violations, Text(f"  {line}", style="dim"), *(
                f"{_pct(g.parties[party].red_lines[line].rate)} "
                f"({g.parties[party].red_lines[line].count}/{g.parties[party].red_lines[line].n})"
                if party in g.parties and line in g.parties[party].red_lines else "-"
                for g in groups))
    console.print(violations)
    _note("Share of runs whose outcome breaks at least one of the party's red lines (no deal "
          "breaks none); indented: each red line broken in any run.")

    if any((p.invalid_rate is not None and p.invalid_rate.count) or p.estimation_error
           for g in groups for p in g.parties.values()):
        answers = _variant_table("Answers: invalid-answer rate; value-estimate error", comparison,
                                 "party")
        for party in _parties(groups):
            _row(answers, party, *(_answers(g, party) for g in groups))
        console.print(answers)
        _note("Invalid: turns without a valid answer after every retry, over all turns (95% "
              "Wilson interval). Error: mean absolute error of the party's own estimates of the "
              "table's worth to it, averaged over runs (95% bootstrap interval).")

    if comparison.tests:
        _render_tests(comparison)
    _render_options(comparison)


def _answers(group: VariantStats, party: str) -> str:
    stats = group.parties.get(party)
    if stats is None:
        return "-"
    invalid = fmt_rate(stats.invalid_rate) if stats.invalid_rate is not None else "-"
    error = fmt_mean(stats.estimation_error) if stats.estimation_error is not None else "-"
    return f"invalid {invalid}; error {error}"


def _note(text: str) -> None:
    console.print(Text(text, style="dim"))
    console.print()


def _seeds(seeds: list[int]) -> str:
    if seeds and seeds == list(range(seeds[0], seeds[-1] + 1)) and len(seeds) > 2:
        return f"{seeds[0]}-{seeds[-1]}"
    return ",".join(str(s) for s in seeds)


def _render_tests(comparison: Comparison) -> None:
    """Rows are metrics, columns the variants tested against the reference: difference, p."""
    table = _table(f"Tests against {comparison.reference}: difference, p-value")
    table.add_column(Text("metric"), no_wrap=True)
    for test in comparison.tests:
        table.add_column(Text(test.a), justify="right", overflow="fold")
    stats = {g.variant: g for g in comparison.groups}

    def cell(diff: str, p: float | None) -> Text:
        return Text.assemble(f"{diff}  p ", fmt_p(p))

    tests = comparison.tests
    _row(table, "deal rate", *(cell(f"{100 * t.deal_rate_diff:+.0f} pts", t.deal_rate_p)
                               for t in tests))
    _row(table, "distance to Nash", *(
        cell(_diff(stats[t.a].distance_to_nash, stats[t.b].distance_to_nash),
             t.distance_to_nash_p) for t in tests))
    parties = _parties([stats[t.a] for t in tests])
    for party in parties:
        _row(table, f"{party} utility", *(
            cell(f"{t.parties[party].utility_diff:+.1f}", t.parties[party].utility_p)
            if party in t.parties else "-" for t in tests))
    table.add_section()
    for party in parties:
        _row(table, f"{party} red-line violations", *(
            cell(f"{100 * t.parties[party].violation_diff:+.0f} pts", t.parties[party].violation_p)
            if party in t.parties else "-" for t in tests))
    console.print(table)
    _note("Two-sided: Fisher's exact test for rates, Mann-Whitney U for utilities and "
          f"distances; bold: p < {SIGNIFICANT}; n/a: fewer than 2 runs in a group or no "
          "variation. Not corrected for multiple comparisons.")


def _diff(a: MeanCI | None, b: MeanCI | None) -> str:
    return "-" if a is None or b is None else f"{a.mean - b.mean:+.1f}"


def _render_options(comparison: Comparison) -> None:
    groups = comparison.groups
    if not any(g.deals for g in groups):
        console.print("No deals: no agreed options to show.", markup=False, highlight=False)
        return
    table = _variant_table("Agreed options (deals choosing it / deals)", comparison,
                           "issue: option")
    for kind in ("options", "terms"):
        keys: dict[str, dict[str, None]] = {}
        for g in groups:
            for issue, counts in getattr(g, kind).items():
                keys.setdefault(issue, {}).update(dict.fromkeys(counts))
        for issue, values in keys.items():
            for value in values:
                cells = []
                for g in groups:
                    count = getattr(g, kind).get(issue, {}).get(value, 0)
                    cells.append(f"{count}/{g.deals}" if g.deals else "-")
                _row(table, f"{issue}: {value}", *cells)
            table.add_section()
    console.print(table)


# --------------------------------------------------------------------------- csv

CSV_COLUMNS = ("variant", "metric", "party", "detail", "value", "lo", "hi", "n")


def csv_rows(comparison: Comparison) -> list[dict[str, str | float | int | None]]:
    """One row per (variant, metric, party[, detail]); tests are rows with `p_` metrics."""
    rows: list[dict[str, str | float | int | None]] = []

    def add(variant: str, metric: str, value: float | int | None, lo: float | None = None,
            hi: float | None = None, n: int | None = None, party: str = "",
            detail: str = "") -> None:
        rows.append({"variant": variant, "metric": metric, "party": party, "detail": detail,
                     "value": value, "lo": lo, "hi": hi, "n": n})

    for g in comparison.groups:
        v = g.variant
        add(v, "runs", g.n, n=g.n)
        add(v, "deal_rate", g.deal_rate.rate, g.deal_rate.lo, g.deal_rate.hi, g.n)
        if g.rounds_to_agreement is not None:
            add(v, "rounds_mean", g.rounds_to_agreement.mean, n=g.rounds_to_agreement.n)
            add(v, "rounds_median", g.rounds_to_agreement.median, n=g.rounds_to_agreement.n)
        if g.distance_to_nash is not None:
            d = g.distance_to_nash
            add(v, "distance_to_nash", d.mean, d.lo, d.hi, d.n)
        for metric in ("deal_any_round", "deal_final_round", "red_line_proposals"):
            prop = getattr(g, metric)
            if prop is not None:
                add(v, metric, prop.rate, prop.lo, prop.hi, prop.n)
        for party, p in g.parties.items():
            u, r = p.utility, p.violation_rate
            add(v, "utility", u.mean, u.lo, u.hi, u.n, party=party)
            add(v, "violation_rate", r.rate, r.lo, r.hi, r.n, party=party)
            if p.invalid_rate is not None:
                ir = p.invalid_rate
                add(v, "invalid_rate", ir.rate, ir.lo, ir.hi, ir.n, party=party)
            if p.estimation_error is not None:
                ee = p.estimation_error
                add(v, "estimation_error", ee.mean, ee.lo, ee.hi, ee.n, party=party)
            for line, lr in p.red_lines.items():
                add(v, "red_line_violation_rate", lr.rate, lr.lo, lr.hi, lr.n, party=party,
                    detail=line)
        for issue, counts in g.options.items():
            for option, count in counts.items():
                add(v, "agreed_option", count, n=g.deals, detail=f"{issue}={option}")
        for term, counts in g.terms.items():
            for value, count in counts.items():
                add(v, "agreed_term", count, n=g.deals, detail=f"{term}={value}")
    for t in comparison.tests:
        against = f"vs {t.b}"
        add(t.a, "p_deal_rate", t.deal_rate_p, detail=against)
        add(t.a, "p_distance_to_nash", t.distance_to_nash_p, detail=against)
        for party, pt in t.parties.items():
            add(t.a, "p_utility", pt.utility_p, party=party, detail=against)
            add(t.a, "p_violation_rate", pt.violation_p, party=party, detail=against)
    return rows


def write_csv(comparison: Comparison, path: Path) -> None:
    try:
        with path.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
            writer.writeheader()
            for row in csv_rows(comparison):
                writer.writerow({k: "" if v is None else v for k, v in row.items()})
    except OSError as exc:
        raise InputError(path, [Problem("--csv", f"cannot write: {exc.strerror}")]) from None
