"""Charts of runs as PNG files: one run's utilities by round, and comparisons across runs.

Charts are drawn on bare `matplotlib.figure.Figure` objects rendered by the Agg backend (no
pyplot, no global state, no display needed). Nothing here prints: functions return the figures,
the PNG bytes, or the paths they wrote.

- `run_utility_figure`: for one run, each voting party's utility of the package on the table in
  every round, with its reservation utility as a dashed line of the same colour (and a cross where
  the package breaks one of that party's red lines).
- `agreed_options_figure`: across runs, which option every issue was settled on, one stacked bar
  per variant, one subplot per issue (runs without a deal stacked as "no deal").
- `rates_figure`: per variant, the rates the metric table marks `chart` (the deal rate, each
  party's red-line violation rate), with their intervals.

Runs are `detente.runs.RunFolder`s (`load_runs` reads them up front); the cross-run statistics are
`detente.comparison`'s, and the rates chart draws the metrics of `detente.metrics` marked `chart`.
"""

from __future__ import annotations

import io
import re
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from detente.comparison import MIN_TEST_RUNS, Comparison, GroupBy, compare_runs, summarize_runs
from detente.events import Event, Proposal, Tally
from detente.metrics import Proportion, Stat, party_metrics, variant_metrics
from detente.runs import RunFolder
from detente.runs import load_runs as find_runs
from detente.scenario import Package, Scenario
from detente.scoring import normalize_package
from detente.space import PackageSpace

NO_DEAL = "no deal"
_DPI = 110


# --------------------------------------------------------------------------- loading runs


def load_run(run_dir: str | Path, scenario: str | Path | None = None) -> RunFolder:
    """A run folder with its scenario and result read now (`RunFolder.read`): a run that
    cannot be read stops a command before it draws or writes anything."""
    return RunFolder(run_dir, scenario).read()


def load_runs(paths: Sequence[str | Path], scenario: str | Path | None = None
              ) -> list[RunFolder]:
    """Every run under `paths` (`detente.runs.load_runs`, finished or not), each read now as by
    `load_run`; they share the scenarios they load."""
    return [run.read() for run in find_runs(paths, finished=False, scenario=scenario)]


# --------------------------------------------------------------------------- rendering

PNG_COLORS = 256
"""Charts are saved as palette PNGs of at most this many colours: a third of the size of a
full-colour PNG, with no visible difference (they are flat colours, lines and text)."""


def figure_png(fig: Figure) -> bytes:
    """The figure as a palette PNG (see `PNG_COLORS`)."""
    from PIL import Image  # matplotlib's own dependency: it writes its PNGs with it

    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI, metadata={"Software": None})
    image = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    small = io.BytesIO()
    image.quantize(colors=PNG_COLORS, method=Image.Quantize.MEDIANCUT).save(
        small, format="PNG", optimize=True)
    return small.getvalue()


def save_figure(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(figure_png(fig))
    return path


PALETTE = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
    "#bcbd22", "#7f7f7f", "#393b79", "#e7969c", "#637939", "#fdae6b", "#7b4173", "#9edae5",
    "#843c39", "#8ca252", "#6baed6", "#ce6dbd", "#bd9e39", "#31a354", "#de9ed6", "#3182bd",
]
"""Distinct colours: parties, and the options of a chart (each its own colour)."""
HATCHES = ["", "//", "..", "xx", "\\\\", "oo"]


def _colors(n: int, offset: int = 0) -> list[str]:
    return [PALETTE[(offset + k) % len(PALETTE)] for k in range(n)]


def party_colors(parties: Sequence[str]) -> dict[str, str]:
    """The colour of each party, the same in every chart of the same parties."""
    return dict(zip(parties, _colors(len(parties)), strict=True))


def figure_labels(fig: Figure) -> dict[str, list[str]]:
    """The words a figure shows, by role: titles, axis labels, tick labels and legend entries
    (for alt text, and to check that none is cut off)."""
    out: dict[str, list[str]] = {"titles": [], "axes": [], "ticks": [], "legends": []}
    if fig.get_suptitle():
        out["titles"].append(fig.get_suptitle())
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        if ax.get_title():
            out["titles"].append(ax.get_title())
        out["axes"] += [label for label in (ax.get_xlabel(), ax.get_ylabel()) if label]
        out["ticks"] += [t.get_text() for t in ax.get_xticklabels() + ax.get_yticklabels()
                         if t.get_text()]
        legend = ax.get_legend()
        if legend is not None:
            out["legends"] += [t.get_text() for t in legend.get_texts()]
    return out


def figure_alt(fig: Figure) -> str:
    """Alt text naming what the chart shows: its titles, axes and legend."""
    labels = figure_labels(fig)
    parts = [". ".join(t.replace("\n", " ") for t in labels["titles"])]
    if labels["axes"]:
        parts.append("Axes: " + "; ".join(dict.fromkeys(labels["axes"])))
    if labels["legends"]:
        parts.append("Legend: " + "; ".join(
            t.replace("\n", " ") for t in dict.fromkeys(labels["legends"])))
    return ". ".join(p for p in parts if p) + "."


# --------------------------------------------------------------------------- (a) one run


@dataclass(frozen=True)
class TableSeries:
    """The package on the table in each round of a run, and what it is worth to each voter."""

    rounds: list[int]
    packages: list[Package]
    voters: list[str]
    utilities: np.ndarray
    """(rounds, voters)"""
    reservation: dict[str, float]
    breaks_red_line: np.ndarray
    """(rounds, voters) whether the package breaks one of that voter's red lines."""
    deal_round: int | None = None


def packages_on_table(events: Sequence[Event]) -> dict[int, Package]:
    """Per round, the package put to the vote (the tally's; the proposal's if not tallied)."""
    tabled: dict[int, Package] = {}
    for e in events:
        if isinstance(e, Proposal):
            tabled.setdefault(e.round, e.package)
    for e in events:
        if isinstance(e, Tally):
            tabled[e.round] = e.package
    return dict(sorted(tabled.items()))


def table_series(run: RunFolder) -> TableSeries:
    scenario = run.scenario
    space = PackageSpace(scenario)
    tabled = packages_on_table(run.events)
    rounds: list[int] = []
    packages: list[Package] = []
    for r, package in tabled.items():
        try:
            packages.append(normalize_package(scenario, package))
        except ValueError:
            continue  # an invalid proposal never reached a vote; nothing to score
        rounds.append(r)
    voters = list(space.voters)
    if packages:
        ev = space.evaluate(space.columns_for_packages(packages))
        utilities = np.asarray(ev.utilities, dtype=np.float64)
        broken = np.zeros((len(packages), len(voters)), dtype=bool)
        for k, line in enumerate(space.red_lines):
            broken[:, voters.index(line.party)] |= np.asarray(ev.broken[:, k], dtype=bool)
    else:
        utilities = np.zeros((0, len(voters)))
        broken = np.zeros((0, len(voters)), dtype=bool)
    deal_round = run.result.rounds_played if run.result.status == "deal" else None
    return TableSeries(
        rounds=rounds, packages=packages, voters=voters, utilities=utilities,
        reservation={p: float(space.reservation[v]) for v, p in enumerate(voters)},
        breaks_red_line=broken, deal_round=deal_round,
    )


def run_utility_figure(run: RunFolder) -> Figure:
    """Chart (a): each voting party's utility of the package on the table, by round."""
    series = table_series(run)
    fig = Figure(figsize=(7.5, 4.2), layout="constrained")
    ax = fig.add_subplot()
    colors = party_colors(series.voters)
    for v, party in enumerate(series.voters):
        color = colors[party]
        if series.rounds:
            ax.plot(series.rounds, series.utilities[:, v], marker="o", color=color, label=party)
            hit = series.breaks_red_line[:, v]
            if hit.any():
                ax.scatter(np.asarray(series.rounds)[hit], series.utilities[hit, v], marker="x",
                           s=90, color=color, linewidths=2, zorder=3)
        ax.axhline(series.reservation[party], color=color, linestyle="--", linewidth=1,
                   alpha=0.8)
    if series.deal_round is not None:
        ax.axvline(series.deal_round, color="#444444", linestyle=":", linewidth=1)
        ax.annotate("deal", (series.deal_round, 1.0), xycoords=("data", "axes fraction"),
                    xytext=(3, -12), textcoords="offset points", fontsize=8, color="#444444")
    ax.set_xlabel("round")
    ax.set_ylabel("utility of the package on the table")
    ax.set_ylim(-2, 102)
    if series.rounds:
        ax.set_xticks(series.rounds)
    else:
        ax.text(0.5, 0.5, "no package was put to a vote", transform=ax.transAxes,
                ha="center", va="center", color="#666666")
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    from matplotlib.lines import Line2D

    handles += [Line2D([], [], color="#666666", linestyle="--", linewidth=1),
                Line2D([], [], color="#666666", marker="x", linestyle="none")]
    labels += ["reservation utility", "breaks own red line"]
    ax.legend(handles, labels, fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    status = run.result.status.replace("_", " ")
    ax.set_title(f"{run.label}: {status}", fontsize=10)
    return fig


# --------------------------------------------------------------------------- comparisons


def comparison_of(
    runs: Sequence[RunFolder], reference: str | None = None,
    by: GroupBy | str | Sequence[str] = "scenario",
) -> Comparison | None:
    """`detente.comparison` statistics of the finished runs among `runs`, grouped `by` scenario
    (or agents, or factors), tested against `reference`; the others are listed as skipped.
    None when no run has finished."""
    loaded = summarize_runs(runs)
    if not loaded.runs:
        return None
    comparison = compare_runs(loaded.runs, reference, by=by)
    comparison.skipped = loaded.skipped
    return comparison


def variant_scenarios(runs: Sequence[RunFolder], comparison: Comparison) -> dict[str, Scenario]:
    """For each variant of `comparison`, the scenario of its runs (its id is the variant's
    name; otherwise the first run's scenario)."""
    by_id: dict[str, Scenario] = {}
    for r in runs:
        by_id.setdefault(r.scenario.id, r.scenario)
    fallback = runs[0].scenario if runs else None
    out: dict[str, Scenario] = {}
    for g in comparison.groups:
        scenario = by_id.get(g.variant, fallback)
        if scenario is not None:
            out[g.variant] = scenario
    return out


# --------------------------------------------------------------------------- (b) agreed options


@dataclass(frozen=True)
class _Dimension:
    id: str
    label: str
    categories: list[str]
    """Option ids (issues) or formatted values (terms), in the scenario's order."""
    names: dict[str, str]
    """Legend label per category."""
    counts: list[dict[str, int]]
    """Per variant: deals per category."""


def _dimensions(comparison: Comparison, scenarios: Mapping[str, Scenario]) -> list[_Dimension]:
    groups = comparison.groups
    ordered = list(scenarios.values())
    issue_ids: list[str] = []
    term_ids: list[str] = []
    for s in ordered:
        issue_ids += [i.id for i in s.issues if i.id not in issue_ids]
        term_ids += [t.id for t in s.terms if t.id not in term_ids]
    for g in groups:
        issue_ids += [i for i in g.options if i not in issue_ids]
        term_ids += [t for t in g.terms if t not in term_ids]
    dims: list[_Dimension] = []
    for issue_id in issue_ids:
        label, categories, names = issue_id, [], {}
        for s in ordered:
            for issue in s.issues:
                if issue.id != issue_id:
                    continue
                label = issue.label if label == issue_id else label
                for option in issue.options:
                    if option.id not in categories:
                        categories.append(option.id)
                        names[option.id] = option.label
        counts = [dict(g.options.get(issue_id, {})) for g in groups]
        for c in counts:
            categories += [o for o in c if o not in categories]
        dims.append(_Dimension(issue_id, label, categories, names, counts))
    for term_id in term_ids:
        label, unit = term_id, ""
        for s in ordered:
            for term in s.terms:
                if term.id == term_id and label == term_id:
                    label, unit = term.label, term.unit
        counts = [dict(g.terms.get(term_id, {})) for g in groups]
        values = sorted({v for c in counts for v in c}, key=_as_number)
        names = {v: f"{v} {unit}".strip() for v in values}
        dims.append(_Dimension(term_id, label, values, names, counts))
    return dims


def _as_number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float("inf")


def option_colors(dims: Sequence[_Dimension]) -> dict[tuple[str, str], tuple[str, str]]:
    """A colour and hatch for every (dimension, category) some deal chose: no two options of a
    chart share both, so a colour means one option in every panel."""
    chosen = [(d.id, c) for d in dims for c in d.categories if any(n.get(c) for n in d.counts)]
    return {key: (PALETTE[k % len(PALETTE)], HATCHES[(k // len(PALETTE)) % len(HATCHES)])
            for k, key in enumerate(chosen)}


def _wrap(text: str, width: int) -> str:
    return "\n".join(textwrap.wrap(text, width)) or text


def agreed_options_figure(comparison: Comparison, scenarios: Mapping[str, Scenario]) -> Figure:
    """Chart (b): per issue (and numeric term), what the deals settled it on: one panel per
    issue, one horizontal bar per variant with a deal, stacked by option, with the variant's
    runs without a deal as a hatched "no deal" segment (bars count distinct runs). Every option
    has its own colour across the panels; labels are wrapped, never shortened. Variants without
    any deal are named below the panels. `scenarios` gives option labels and order (see
    `variant_scenarios`)."""
    all_groups = comparison.groups
    shown = [k for k, g in enumerate(all_groups) if g.deals]
    groups = [all_groups[k] for k in shown]
    every = _dimensions(comparison, scenarios)
    dims = [d for d in every if any(d.counts[k] for k in shown)]
    unsettled = [d.label for d in every if d not in dims]
    colors = option_colors(dims)
    names = [g.variant for g in groups]
    rows = max(len(groups), 1)
    panel_height = 0.32 * rows + 0.75
    name_width = max((len(n) for n in names), default=8)
    width = min(max(9.0, 0.075 * name_width + 7.2), 12.0)
    without = [g.variant for g in all_groups if not g.deals]
    notes = []
    if without:
        notes.append("No deal in: " + ", ".join(without) + ".")
    if unsettled and groups:
        notes.append("No deal settled: " + ", ".join(unsettled) + " (not an issue of the "
                     "variants with deals).")
    note = "\n".join(_wrap(n, int(width * 12)) for n in notes)
    footer = 0.3 + 0.17 * note.count("\n") if note else 0.0
    fig = Figure(figsize=(width, panel_height * max(len(dims), 1) + 1.0 + footer),
                 layout="constrained")
    axes = fig.subplots(max(len(dims), 1), 1, squeeze=False, sharex=True)[:, 0]
    y = np.arange(len(groups))
    no_deal = np.array([max(g.n - g.deals, 0) for g in groups], dtype=np.float64)
    copies = any(g.runs > g.n for g in all_groups)
    for ax, dim in zip(axes, dims, strict=False):
        left = np.zeros(len(groups))
        for category in dim.categories:
            counts = np.array([dim.counts[k].get(category, 0) for k in shown],
                              dtype=np.float64)
            if not counts.any():
                continue
            color, hatch = colors[(dim.id, category)]
            ax.barh(y, counts, left=left, color=color, hatch=hatch, edgecolor="white",
                    height=0.6, label=_wrap(dim.names.get(category, category), 34))
            left += counts
        if no_deal.any():
            ax.barh(y, no_deal, left=left, color="#eeeeee", hatch="//", edgecolor="#999999",
                    height=0.6, label=NO_DEAL)
        ax.set_title(dim.label, fontsize=10, loc="left")
        ax.set_yticks(y, names, fontsize=8)
        ax.invert_yaxis()
        ax.set_ylabel("variant", fontsize=8)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.tick_params(axis="x", labelsize=8)
        ax.set_xlim(0, max([g.n for g in groups] + [1]))
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    axes[-1].set_xlabel(("distinct runs" if copies else "runs") + " (deals by option; "
                        "hatched grey: no deal)", fontsize=8)
    if not dims or not groups:
        axes[0].text(0.5, 0.5, "no deal in any variant" if dims else "no issues",
                     ha="center", va="center", transform=axes[0].transAxes)
        axes[0].set_axis_off()
    fig.suptitle("What the deals settled each issue on, per variant", fontsize=11)
    if note:
        fig.supxlabel(note, fontsize=8, color="#444444")
    return fig


# --------------------------------------------------------------------------- (c) rates


def rates_figure(comparison: Comparison) -> Figure:
    """Chart (c): per variant (rows), the rates of `detente.metrics` marked `chart` as shaded
    cells: the per-variant ones (the deal rate) as columns of the first panel, each per-party
    one (the red-line violation rate: share of runs whose outcome breaks one of the party's red
    lines) as a panel of party columns. Each cell is labelled with its rate and count, and with
    its Wilson 95% interval where the variant has at least two distinct runs (an interval of
    one run says nothing a count does not)."""
    groups = comparison.groups
    names = [g.variant for g in groups]
    parties: list[str] = []
    for g in groups:
        parties += [p for p in g.parties if p not in parties]
    whole = [m for m in variant_metrics() if m.chart]
    per_party = [m for m in party_metrics() if m.chart]
    name_width = max((len(n) for n in names), default=8)
    label_width = 0.075 * name_width + 0.6
    first = 1.3 * max(len(whole), 1)
    party_width = 1.05 * max(len(parties), 1)
    widths = ([first] if whole else []) + [party_width] * len(per_party)
    width = label_width + sum(widths or [first]) + 0.6
    height = 0.42 * len(groups) + 1.5
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(1, max(len(widths), 1), sharey=True, squeeze=False,
                        width_ratios=[w / 1.3 for w in widths or [first]])[0]
    rows = np.arange(len(groups))
    panels = iter(axes)
    if whole:
        ax = next(panels)
        values = np.array([[_rate_of(g.stat(m.key)) for m in whole] for g in groups])
        for i, g in enumerate(groups):
            for j, m in enumerate(whole):
                _cell(ax, j, i, g.stat(m.key), values[i, j], dark_above=0.95)
        ax.imshow(values, cmap="Blues", vmin=0, vmax=1.6, aspect="auto")
        ax.set_xticks(np.arange(len(whole)), [m.label for m in whole], fontsize=8)
        ax.set_title(whole[0].label if len(whole) == 1 else "per variant", fontsize=10)
    for m in per_party:
        ax = next(panels)
        values = np.full((len(groups), max(len(parties), 1)), np.nan)
        for i, g in enumerate(groups):
            for j, party in enumerate(parties):
                stat = g.parties[party].stat(m.key) if party in g.parties else None
                values[i, j] = _rate_of(stat)
                _cell(ax, j, i, stat, values[i, j], dark_above=0.55)
        ax.imshow(values, cmap="Reds", vmin=0, vmax=1.25, aspect="auto")
        ax.set_xticks(np.arange(len(parties)), parties, fontsize=8)
        ax.set_xlabel(m.chart_axis or "party")
        ax.set_title(m.label, fontsize=10)
    if not whole and not per_party:
        axes[0].text(0.5, 0.5, "no rate is charted", ha="center", va="center",
                     transform=axes[0].transAxes)
    axes[0].set_yticks(rows, names, fontsize=8)
    axes[0].set_ylabel("variant")
    for k, ax in enumerate(axes):
        if k:
            ax.tick_params(axis="y", left=False, labelleft=False)
        ax.set_xticks(np.arange(-0.5, ax.get_xlim()[1], 1), minor=True)
        ax.set_yticks(np.arange(-0.5, len(groups), 1), minor=True)
        ax.grid(which="minor", color="white", linewidth=2)
        ax.tick_params(which="minor", length=0)
        for spine in ax.spines.values():
            spine.set_visible(False)
    copies = any(g.runs > g.n for g in groups)
    fig.suptitle("Share of " + ("distinct runs" if copies else "runs") + " per variant "
                 "(count; 95% Wilson interval from 2 distinct runs)", fontsize=10)
    return fig


def _rate_of(stat: Stat | None) -> float:
    return stat.rate if isinstance(stat, Proportion) else np.nan


def _cell(ax: Axes, x: int, y: int, stat: Stat | None, shade: float, dark_above: float) -> None:
    if isinstance(stat, Proportion):
        _cell_label(ax, x, y, stat, shade, dark_above)
    else:
        ax.text(x, y, "-", ha="center", va="center", fontsize=8, color="#666666")


def _cell_label(ax: Axes, x: int, y: int, p: Proportion, shade: float,
                dark_above: float) -> None:
    text = f"{p.rate:.0%} ({p.count}/{p.n})"
    if p.n >= MIN_TEST_RUNS:
        text += f"\n[{p.lo:.0%}, {p.hi:.0%}]"
    ax.text(x, y, text, ha="center", va="center", fontsize=7.5,
            color="white" if shade >= dark_above else ("#222222" if p.count else "#777777"))


# --------------------------------------------------------------------------- files

AGREED_OPTIONS_PNG = "agreed-options.png"
RATES_PNG = "rates.png"


def file_safe(text: str) -> str:
    """`text` with anything but letters, digits, `_`, `.` and `-` replaced by `-`."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.") or "chart"


def run_chart_name(run: RunFolder) -> str:
    h = run.header
    return file_safe(f"utilities-{h.scenario_id}-seed{h.seed}-{h.run_id}") + ".png"


def write_run_chart(run: RunFolder, out_dir: Path) -> Path:
    """Chart (a) of `run` as `<out_dir>/utilities-<scenario>-seed<n>-<run id>.png`."""
    return save_figure(run_utility_figure(run), out_dir / run_chart_name(run))


def comparison_figures(
    runs: Sequence[RunFolder], comparison: Comparison | None = None
) -> dict[str, Figure]:
    """Charts (b) and (c) of `runs`, by file name; empty when no run has finished."""
    comparison = comparison if comparison is not None else comparison_of(runs)
    if comparison is None:
        return {}
    scenarios = variant_scenarios(runs, comparison)
    return {
        AGREED_OPTIONS_PNG: agreed_options_figure(comparison, scenarios),
        RATES_PNG: rates_figure(comparison),
    }


def write_charts(
    runs: Sequence[RunFolder],
    out_dir: Path,
    *,
    per_run: bool = False,
    comparison: Comparison | None = None,
) -> list[Path]:
    """Write the charts of `runs` into `out_dir` (created if need be); the paths written.

    One run: its chart (a). Several: charts (b) and (c) (from `comparison`, computed from the
    finished runs if not given), and chart (a) of every run if `per_run`.
    """
    if len(runs) == 1:
        return [write_run_chart(runs[0], out_dir)]
    written = [save_figure(fig, out_dir / name)
               for name, fig in comparison_figures(runs, comparison).items()]
    if per_run:
        written += [write_run_chart(run, out_dir) for run in runs]
    return written
