"""`detente compare PATH...`: variants side by side, with intervals and tests against one.

Tables have one row per variant and are laid out for the terminal: the metric columns are packed
into as many tables as the width needs, each repeating the variant column, so no cell is ever
wrapped, folded or cut (a column wider than the whole terminal alone is folded, never cut).
`--json` and `--csv` hold every figure. Which metrics are shown, and how they are named and
explained, comes from the table in `detente.metrics`: per-variant metrics are columns of the
outcomes table, each per-party metric a table of its own.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import typer
from rich.cells import cell_len
from rich.console import Console
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from detente.cli._app import app, console, warn_skipped
from detente.comparison import (
    MIN_TEST_RUNS,
    SIGNIFICANT,
    Comparison,
    VariantStats,
    compare_runs,
    findings,
    load_runs_with_skipped,
    tested_metrics,
)
from detente.errors import InputError, Problem
from detente.metrics import (
    QUIET_SECTIONS,
    MeanCI,
    Metric,
    Proportion,
    Ratio,
    RoundsStats,
    Stat,
    format_diff,
    party_metrics,
    shown_metrics,
    shows_something,
    variant_metrics,
    written,
)


@app.command()
def compare(
    paths: list[str] = typer.Argument(..., metavar="PATH...",
                                      help="Run folders, sweep folders (every run below) or "
                                           "glob patterns."),
    against: str | None = typer.Option(None, "--against", metavar="VARIANT",
                                       help="The reference variant, or level of the factor "
                                            "grouped by (default: baseline, if present, else "
                                            "the first)."),
    by: list[str] = typer.Option(
        [], "--by", metavar="FACTOR",
        help="Group runs by scenario (the default), agents or scenario+agents; or by factors "
             "(repeat for several): scenario, agent:PARTY (who played the seat), model, "
             "temperature, assist, protocol, max_rounds, seed."),
    as_json: bool = typer.Option(False, "--json", help="Print the comparison as JSON."),
    csv_path: Path | None = typer.Option(None, "--csv", metavar="FILE",
                                         help="Also write one row per variant, metric and "
                                              "party (value, lo, hi)."),
) -> None:
    """Compare finished runs per variant: deal rates, utilities, red lines, agreed options."""
    loaded = load_runs_with_skipped(paths)
    comparison = compare_runs(loaded.runs, against, by=by or "scenario")
    comparison.skipped = loaded.skipped
    if csv_path is not None:
        write_csv(comparison, csv_path)
    if as_json:
        typer.echo(comparison.model_dump_json(indent=2))
        warn_skipped(comparison.skipped)
        return
    render(comparison)
    if csv_path is not None:
        console.print(f"CSV: {csv_path}", markup=False, highlight=False)


# --------------------------------------------------------------------------- formatting


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def fmt_rate(p: Proportion) -> str:
    return f"{_pct(p.rate)} [{_pct(p.lo)}, {_pct(p.hi)}] ({p.count}/{p.n})"


def fmt_mean(m: MeanCI | None, fmt: Callable[[float], str] | None = None) -> str:
    """The mean and its interval; the mean alone when the interval is a point (one run, or
    every run the same). `fmt` writes a number (default: one decimal)."""
    if m is None:
        return "-"
    show = fmt or (lambda x: f"{x:.1f}")
    if show(m.lo) == show(m.mean) == show(m.hi):
        return show(m.mean)
    return f"{show(m.mean)} [{show(m.lo)}, {show(m.hi)}]"


def fmt_stat(stat: Stat | None, metric: Metric) -> str:
    """A metric's statistic as a cell: a rate, a mean, a mean and median, or a ratio."""
    if isinstance(stat, Proportion):
        return fmt_rate(stat)
    if isinstance(stat, MeanCI):
        return fmt_mean(stat, metric.fmt)
    if isinstance(stat, RoundsStats):
        return f"mean {stat.mean:.1f}, median {stat.median:g}"
    if isinstance(stat, Ratio):
        return "-" if stat.value is None else written(metric, stat.value)
    return metric.empty


def fmt_p(p: float | None) -> Text:
    if p is None:
        return Text("n/a", style="dim")
    text = f"{p:.3f}" if p >= 0.001 else "<0.001"
    return Text(text, style="bold" if p < SIGNIFICANT else "")


def fmt_runs(g: VariantStats) -> str:
    """`3` or, with identical runs, `3 (1 distinct)`."""
    runs = g.runs or g.n
    return str(runs) if runs == g.n else f"{runs} ({g.n} distinct)"


def _seeds(seeds: list[int]) -> str:
    if seeds and seeds == list(range(seeds[0], seeds[-1] + 1)) and len(seeds) > 2:
        return f"{seeds[0]}-{seeds[-1]}"
    return ",".join(str(s) for s in seeds)


# --------------------------------------------------------------------------- layout


@dataclass
class Column:
    """One metric column of a variant table: its header and one cell per variant."""

    header: str
    cells: list[Text]
    justify: Literal["left", "right"] = "right"


def _cell(value: str | Text) -> Text:
    """Plain strings are never read as rich markup (labels hold brackets)."""
    return Text(value) if isinstance(value, str) else value


def _width(text: Text) -> int:
    return max((cell_len(line) for line in text.plain.split("\n")), default=0)


def _longest_word(text: str) -> int:
    return max((cell_len(word) for word in text.split()), default=0)


def packed_tables(title: str, first: str, labels: Sequence[str | Text],
                  columns: Sequence[Column], width: int) -> list[Table]:
    """Tables of `columns` beside the label column (`first`, `labels`), as many as it takes
    for each to fit `width`: every cell keeps its own line; a header wraps between words. A
    column too wide for the terminal even alone gets a table of its own and folds (nothing is
    cut)."""
    label_cells = [_cell(label) for label in labels]
    # Labels with spaces (agents labels) wrap between words rather than crowd the figures out.
    label_width = max([_longest_word(c.plain) for c in label_cells] + [_longest_word(first)]
                      + [min(max(_width(c) for c in label_cells), width // 2)])
    room = width - (label_width + 3) - 1  # borders: one left, then `width + 2 padding + 1`
    groups: list[list[tuple[Column, int]]] = [[]]
    used = 0
    for column in columns:
        need = max([_width(c) for c in column.cells] + [_longest_word(column.header)])
        if groups[-1] and used + need + 3 > room:
            groups.append([])
            used = 0
        groups[-1].append((column, need))
        used += need + 3
    tables: list[Table] = []
    for k, group in enumerate(g for g in groups if g):
        name = title if k == 0 else f"{title} (continued)"
        table = Table(title=Text(name), title_justify="left")
        table.add_column(Text(first), width=label_width, overflow="fold")
        spare = room - sum(need + 3 for _, need in group)
        for column, need in group:
            fits = need + 3 <= room
            # room left over goes to headers, so they wrap only when the terminal is narrow
            extra = max(0, min(cell_len(column.header) - need, spare))
            spare -= extra
            table.add_column(Text(column.header), justify=column.justify, overflow="fold",
                             width=need + extra if fits else max(room - 3, 4))
        for row, label in enumerate(label_cells):
            table.add_row(label, *(column.cells[row] for column, _ in group))
        tables.append(table)
    return tables


def _variant_labels(comparison: Comparison, groups: Sequence[VariantStats]) -> list[str]:
    return [g.variant + (" (reference)" if g.variant == comparison.reference else "")
            for g in groups]


def _print_variant_tables(out: Console, comparison: Comparison, title: str,
                          columns: Sequence[Column]) -> None:
    for table in packed_tables(title, _first(comparison),
                               _variant_labels(comparison, comparison.groups), columns,
                               out.width):
        out.print(table)


def _first(comparison: Comparison) -> str:
    """The label column's header: `variant`, or the factors grouped by."""
    return comparison.group_by if comparison.factors else "variant"


def _parties(groups: Sequence[VariantStats]) -> list[str]:
    found: dict[str, None] = {}
    for g in groups:
        found.update(dict.fromkeys(g.parties))
    return list(found)


# --------------------------------------------------------------------------- rendering


def render(comparison: Comparison, out: Console | None = None) -> None:
    """Print the comparison: findings, then tables with one row per variant."""
    out = out if out is not None else console
    groups = comparison.groups
    runs = sum(g.runs or g.n for g in groups)
    distinct = sum(g.n for g in groups)
    what = f"{runs} finished runs" + (f" ({distinct} distinct)" if distinct < runs else "")
    if comparison.factors:
        pooled = (f"; pooled over {', '.join(comparison.pooled_over)}"
                  if comparison.pooled_over else "")
        out.print(f"{what} in {len(groups)} levels of {comparison.group_by}{pooled}; "
                  f"reference: {comparison.reference}", markup=False, highlight=False)
    else:
        out.print(f"{what} in {len(groups)} variants (grouped by {comparison.group_by}); "
                  f"reference: {comparison.reference}", markup=False, highlight=False)
    if comparison.skipped:
        out.print(Text(f"skipped {len(comparison.skipped)} unfinished or unreadable runs:",
                       style="yellow"))
        for s in comparison.skipped:
            out.print(f"  {s.run_dir}: {s.status or 'unreadable'}: {s.reason}",
                      markup=False, highlight=False)
    out.print()
    out.print(Text("Findings", style="bold"))
    bullets = Table.grid(padding=(0, 1))
    bullets.add_column(no_wrap=True)
    bullets.add_column(overflow="fold")
    for line in findings(comparison):
        warn = line.startswith(("Identical runs", "Every agent is scripted"))
        bullets.add_row("-", Text(line, style="yellow" if warn else ""))
    out.print(bullets)
    out.print()

    _render_outcomes(out, comparison)
    _render_party_section(out, comparison, "parties")
    _render_red_lines(out, comparison)
    _render_party_section(out, comparison, "answers")
    _render_party_section(out, comparison, "judged")
    if comparison.tests:
        _render_tests(out, comparison)
    _render_options(out, comparison)


def _note(out: Console, text: str) -> None:
    out.print(Text(text, style="dim"))
    out.print()


def _render_outcomes(out: Console, comparison: Comparison) -> None:
    groups = comparison.groups
    columns = [
        Column("runs", [_cell(fmt_runs(g)) for g in groups]),
        Column("seeds", [_cell(_seeds(g.seeds)) for g in groups]),
    ]
    whole = shown_metrics(variant_metrics(), lambda key: (g.stat(key) for g in groups))
    for metric in whole:
        columns.append(Column(metric.label, [_cell(fmt_stat(g.stat(metric.key), metric))
                                             for g in groups]))
        if metric.key == "deal_rate":  # what the runs that made no deal ended in
            columns.append(Column("outcomes", [
                _cell(", ".join(f"{k} {v}" for k, v in sorted(g.statuses.items())))
                for g in groups], "left"))
    if any(g.upper_bound for g in groups):
        columns.append(Column("oracle mediator", [
            Text("upper bound", style="yellow") if g.upper_bound else Text("") for g in groups],
            "left"))
    if any(len(g.scenario_hashes) > 1 for g in groups):
        columns.append(Column("scenario versions", [_cell(str(len(g.scenario_hashes)))
                                                    for g in groups]))
    _print_variant_tables(out, comparison, "Outcomes", columns)
    _note(out, " ".join([
        "Runs: finished runs; identical runs (the same events) count once, and every figure "
        "is over the distinct runs.", *(m.note for m in whole if m.note),
        "An oracle mediator's runs are reference runs: an upper bound, not a negotiation."]))
    players: dict[str, list[str]] = {}
    for g in groups:
        players.setdefault("; ".join(g.agents), []).append(g.variant)
    if len(players) > 1 or any(len(g.agents) > 1 for g in groups):
        out.print(Text("Who played", style="bold"))
        for label, variants in players.items():
            out.print(Padding(Text(label), (0, 0, 0, 2)))
            out.print(Padding(Text(", ".join(variants), style="dim"), (0, 0, 0, 4)))
        out.print()


def _render_party_section(out: Console, comparison: Comparison, section: str) -> None:
    """Each per-party metric of `section` as a table of its own (a column per party), with
    its note; a quiet section with nothing in it is one line."""
    metrics = shown_metrics(party_metrics(section), lambda key: (
        p.stat(key) for g in comparison.groups for p in g.parties.values()))
    if not metrics:
        return
    if section in QUIET_SECTIONS and not section_shown(comparison, section):
        out.print(QUIET_SECTIONS[section], markup=False, highlight=False)
        out.print()
        return
    groups = comparison.groups
    parties = _parties(groups)
    for metric in metrics:
        _print_variant_tables(out, comparison, metric.title, [
            Column(party, [_cell(fmt_stat(g.parties[party].stat(metric.key), metric)
                                 if party in g.parties else "-") for g in groups])
            for party in parties])
        if metric.note:
            _note(out, metric.note)


def section_shown(comparison: Comparison, section: str) -> bool:
    """Whether some group has something to show in `section` (a rate with a count, a mean)."""
    return any(shows_something(p.stat(m.key)) for m in party_metrics(section)
               for g in comparison.groups for p in g.parties.values())


def answers_shown(comparison: Comparison) -> bool:
    """Whether some run had an invalid answer or a value estimate (else no answers tables)."""
    return section_shown(comparison, "answers")


def _render_red_lines(out: Console, comparison: Comparison) -> None:
    """Per variant, the red lines some run broke (the others broke none)."""
    shown = False
    for g in comparison.groups:
        rows = [(party, line, p) for party, stats in g.parties.items()
                for line, p in stats.red_lines.items() if p.count]
        if not rows:
            continue
        shown = True
        out.print(f"Red lines broken: {g.variant}", markup=False, highlight=False)
        table = Table()
        table.add_column(Text("party"), overflow="fold")
        table.add_column(Text("red line"), overflow="fold")
        table.add_column(Text("runs breaking it"), justify="right", overflow="fold")
        for party, line, p in rows:
            table.add_row(Text(party), Text(line), Text(fmt_rate(p)))
        out.print(table)
    if shown:
        _note(out, "Red lines no run of a variant broke are left out (0%); --json and --csv "
              "list every one.")


def _render_tests(out: Console, comparison: Comparison) -> None:
    """One row per variant tested against the reference: difference and p-value per tested
    metric (and per party)."""
    ref = comparison.reference
    tested = [t for t in comparison.tests if t.note is None]
    untested = [t for t in comparison.tests if t.note is not None]
    stats = {g.variant: g for g in comparison.groups}
    needs = f"a test needs {MIN_TEST_RUNS} distinct runs in each group"
    if stats[ref].n < MIN_TEST_RUNS:
        out.print(Text(f"Tests against {ref}: none: {ref} has {_runs_phrase(stats[ref])}, "
                       f"and {needs}.", style="bold"))
        out.print()
        return

    def cell(metric: Metric, diff: float | None, p: float | None) -> Text:
        return Text.assemble(f"{format_diff(metric, diff)} p ", fmt_p(p))

    columns = [Column(m.label, [cell(m, t.metrics[m.key].diff, t.metrics[m.key].p_judged)
                                if m.key in t.metrics else Text("-") for t in tested])
               for m in tested_metrics(per_party=False)]
    parties = _parties([stats[t.a] for t in tested])
    for m in tested_metrics(per_party=True):
        columns += [Column(f"{party} {m.named_in_tests}", [
            cell(m, pt.metrics[m.key].diff, pt.metrics[m.key].p_judged)
            if (pt := t.parties.get(party)) is not None and m.key in pt.metrics else Text("-")
            for t in tested]) for party in parties]
    holm = comparison.correction == "holm"
    if tested:
        what = "Holm-corrected p-value" if holm else "p-value"
        for table in packed_tables(f"Tests against {ref}: difference, {what}",
                                   _first(comparison), [t.a for t in tested], columns,
                                   out.width):
            out.print(table)
    if untested:
        out.print(f"Not tested ({needs}): " + "; ".join(
            f"{t.a} ({_runs_phrase(stats[t.a])})" for t in untested) + ".",
            markup=False, highlight=False)
    correction = (f"p-values Holm-corrected for the {len(tested)} groups tested against {ref} "
                  "(each measure, and each party's, a family of its own); the uncorrected ones "
                  "are in --json and --csv." if holm else
                  "Not corrected for multiple comparisons (one group tested).")
    _note(out, "Two-sided: Fisher's exact test for rates, Mann-Whitney U for means (utilities, "
          f"distances), over distinct runs; bold: p < {SIGNIFICANT}; n/a: no variation. "
          + correction)


def _runs_phrase(g: VariantStats) -> str:
    runs = g.runs or g.n
    if runs > g.n:
        return f"{runs} identical runs" if g.n == 1 else f"{g.n} distinct runs of {runs}"
    return f"{g.n} run{'s' if g.n != 1 else ''}"


def _render_options(out: Console, comparison: Comparison) -> None:
    """One table per variant with deals: each issue (and term) and what its deals chose."""
    groups = comparison.groups
    with_deals = [g for g in groups if g.deals]
    if not with_deals:
        out.print("No deals: no agreed options to show.", markup=False, highlight=False)
        return
    for g in with_deals:
        out.print(f"Agreed options: {g.variant} ({g.deals} deal{'s' if g.deals != 1 else ''} "
                  f"in {g.n} distinct run{'s' if g.n != 1 else ''})", markup=False,
                  highlight=False)
        table = Table()
        table.add_column(Text("issue"), overflow="fold")
        table.add_column(Text("option"), overflow="fold")
        table.add_column(Text("deals"), justify="right", overflow="fold")
        for kind in (g.options, g.terms):
            for issue, counts in kind.items():
                for k, (value, count) in enumerate(counts.items()):
                    table.add_row(Text(issue if k == 0 else ""), Text(value),
                                  Text(f"{count}/{g.deals}"))
                table.add_section()
        out.print(table)
    without = [g.variant for g in groups if not g.deals]
    if without:
        out.print(f"No deal in: {', '.join(without)}.", markup=False, highlight=False)
    out.print()


# --------------------------------------------------------------------------- csv

CSV_COLUMNS = ("variant", "metric", "party", "detail", "value", "lo", "hi", "n")


def csv_rows(comparison: Comparison) -> list[dict[str, str | float | int | None]]:
    """One row per (variant, metric, party[, detail]): the run counts, every metric of
    `detente.metrics` (a `mean_median` metric as `<name>_mean` and `<name>_median`), the red
    lines and agreed options; tests are rows with `p_` metrics."""
    rows: list[dict[str, str | float | int | None]] = []

    def add(variant: str, metric: str, value: float | int | None, lo: float | None = None,
            hi: float | None = None, n: int | None = None, party: str = "",
            detail: str = "") -> None:
        rows.append({"variant": variant, "metric": metric, "party": party, "detail": detail,
                     "value": value, "lo": lo, "hi": hi, "n": n})

    def add_stat(variant: str, metric: Metric, stat: Stat | None, party: str = "") -> None:
        name = metric.csv_name
        if isinstance(stat, Proportion):
            add(variant, name, stat.rate, stat.lo, stat.hi, stat.n, party=party)
        elif isinstance(stat, MeanCI):
            add(variant, name, stat.mean, stat.lo, stat.hi, stat.n, party=party)
        elif isinstance(stat, RoundsStats):
            add(variant, f"{name}_mean", stat.mean, n=stat.n, party=party)
            add(variant, f"{name}_median", stat.median, n=stat.n, party=party)
        elif isinstance(stat, Ratio):
            add(variant, name, stat.value, n=stat.n, party=party)

    for g in comparison.groups:
        v = g.variant
        add(v, "runs", g.runs or g.n, n=g.runs or g.n)
        add(v, "distinct_runs", g.n, n=g.n)
        for ids in g.identical:
            add(v, "identical_runs", len(ids), n=len(ids), detail=" ".join(ids))
        add(v, "all_scripted", int(g.scripted))
        for metric in variant_metrics():
            add_stat(v, metric, g.stat(metric.key))
        for party, p in g.parties.items():
            for metric in party_metrics():
                add_stat(v, metric, p.stat(metric.key), party)
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
        for metric in tested_metrics(per_party=False):
            if metric.key in t.metrics:
                add(t.a, f"p_{metric.csv_name}", t.metrics[metric.key].p, detail=against)
                if comparison.correction:
                    add(t.a, f"p_holm_{metric.csv_name}", t.metrics[metric.key].p_holm,
                        detail=against)
        for party, pt in t.parties.items():
            for metric in tested_metrics(per_party=True):
                if metric.key in pt.metrics:
                    add(t.a, f"p_{metric.csv_name}", pt.metrics[metric.key].p, party=party,
                        detail=against)
                    if comparison.correction:
                        add(t.a, f"p_holm_{metric.csv_name}", pt.metrics[metric.key].p_holm,
                            party=party, detail=against)
        if t.note is not None:
            add(t.a, "not_tested", None, detail=t.note)
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
