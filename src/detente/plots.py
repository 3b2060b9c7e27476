"""Charts of runs as PNG files: one run's utilities by round, and comparisons across runs.

Charts are drawn on bare `matplotlib.figure.Figure` objects rendered by the Agg backend (no
pyplot, no global state, no display needed). Nothing here prints: functions return the figures,
the PNG bytes, or the paths they wrote.

- `run_utility_figure`: for one run, each voting party's utility of the package on the table in
  every round, with its reservation utility as a dashed line of the same colour (and a cross where
  the package breaks one of that party's red lines).
- `agreed_options_figure`: across runs, which option every issue was settled on, one stacked bar
  per variant, one subplot per issue (runs without a deal stacked as "no deal").
- `rates_figure`: per variant, the deal rate and each party's red-line violation rate, with their
  intervals.

`load_runs` reads run folders (as found by `detente.compare.find_run_dirs`) with their scenarios,
for these charts and for `detente.html_report`; the cross-run statistics are `detente.compare`'s.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from pydantic import ValidationError

from detente.compare import (
    FINISHED_STATUSES,
    Comparison,
    GroupBy,
    RunSummary,
    SkippedRun,
    compare_runs,
    summarize_run,
)
from detente.errors import InputError, Problem
from detente.events import LOG_NAME, Event, Proposal, RunHeader, Tally, read_events
from detente.loading import ScenarioBundle, load_bundle
from detente.report import RunResult, build_result, header_of
from detente.scenario import Package, Scenario
from detente.scoring import normalize_package
from detente.space import PackageSpace

RESULT_NAME = "result.json"
NO_DEAL = "no deal"
_DPI = 110


# --------------------------------------------------------------------------- loading runs


@dataclass(frozen=True)
class RunData:
    """A run folder read back: its events, its scenario (checked against the run's hash), its
    result (from `result.json`, or rebuilt from the events when that is missing or stale)."""

    run_dir: Path
    events: list[Event]
    bundle: ScenarioBundle
    result: RunResult

    @property
    def header(self) -> RunHeader:
        return header_of(self.events)

    @property
    def scenario(self) -> Scenario:
        return self.bundle.scenario

    @property
    def label(self) -> str:
        """`<scenario id> seed <n> (<run id>)`: short and unique enough for titles."""
        h = self.header
        return f"{h.scenario_id} seed {h.seed} ({h.run_id})"


def load_run(
    run_dir: Path,
    scenario: Path | None = None,
    bundles: dict[Path, ScenarioBundle] | None = None,
) -> RunData:
    """Read a run folder and its scenario.

    The scenario is `scenario` if given, else the header's `scenario_path`: as written (relative
    to the working folder), or relative to a folder above the run (runs are often stored inside
    the project that holds the scenarios). `bundles` caches loaded scenarios across calls.
    """
    if not run_dir.is_dir():
        raise InputError(run_dir, [Problem("", "not a folder; expected a run folder")])
    events = read_events(run_dir / LOG_NAME)
    try:
        header = header_of(events)
    except ValueError:
        raise InputError(run_dir / LOG_NAME, [Problem("", "the log has no header")]) from None
    path = scenario if scenario is not None else _find_scenario(run_dir, header.scenario_path)
    cache = bundles if bundles is not None else {}
    key = path.resolve()
    if key not in cache:
        cache[key] = load_bundle(path)
    bundle = cache[key]
    if bundle.content_hash != header.scenario_hash:
        raise InputError(path, [Problem("", f"this scenario's content differs from the one run "
                                        f"{run_dir} used (hash {header.scenario_hash[:12]}); "
                                        "pass the original with --scenario PATH")])
    return RunData(run_dir=run_dir, events=events, bundle=bundle,
                   result=_result(run_dir, bundle.scenario, events))


def load_runs(run_dirs: Sequence[Path], scenario: Path | None = None) -> list[RunData]:
    bundles: dict[Path, ScenarioBundle] = {}
    return [load_run(d, scenario, bundles) for d in run_dirs]


def _find_scenario(run_dir: Path, recorded: str) -> Path:
    path = Path(recorded)
    if path.exists() or path.is_absolute():
        if not path.exists():
            raise InputError(path, [Problem("", f"the scenario of run {run_dir} is not here; "
                                            "pass --scenario PATH")])
        return path
    for folder in run_dir.resolve().parents:
        if (folder / path).is_file():
            return folder / path
    raise InputError(path, [Problem("", f"the scenario of run {run_dir} is not here (looked in "
                                    "the working folder and above the run); pass "
                                    "--scenario PATH")])


def _result(run_dir: Path, scenario: Scenario, events: list[Event]) -> RunResult:
    try:
        result = RunResult.model_validate_json((run_dir / RESULT_NAME).read_text("utf-8"))
    except (OSError, ValueError, ValidationError):
        return build_result(scenario, events)
    header = header_of(events)
    if result.run_id != header.run_id or result.scenario_hash != header.scenario_hash:
        return build_result(scenario, events)
    return result


# --------------------------------------------------------------------------- rendering


def figure_png(fig: Figure) -> bytes:
    """The figure as PNG bytes."""
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI, metadata={"Software": None})
    return buffer.getvalue()


def save_figure(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(figure_png(fig))
    return path


def _colors(n: int, offset: int = 0) -> list[str]:
    palette = [
        "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
        "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f",
    ]
    return [palette[(offset + k) % len(palette)] for k in range(n)]


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


def table_series(run: RunData) -> TableSeries:
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


def run_utility_figure(run: RunData) -> Figure:
    """Chart (a): each voting party's utility of the package on the table, by round."""
    series = table_series(run)
    fig = Figure(figsize=(7.5, 4.2), layout="constrained")
    ax = fig.add_subplot()
    colors = _colors(len(series.voters))
    for v, party in enumerate(series.voters):
        color = colors[v]
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


def summaries_of(runs: Sequence[RunData]) -> list[RunSummary]:
    """`detente.compare` summaries of the finished runs among `runs`."""
    return [summarize_run(r.run_dir, r.header, r.result,
                          [e.model_dump(mode="json") for e in r.events])
            for r in runs if r.result.status in FINISHED_STATUSES]


def comparison_of(
    runs: Sequence[RunData], reference: str | None = None, by: GroupBy = "scenario"
) -> Comparison | None:
    """`detente.compare` statistics of the finished runs among `runs`, grouped `by` scenario
    (or agents), tested against `reference`; the unfinished ones are listed as skipped. None
    when no run has finished."""
    summaries = summaries_of(runs)
    if not summaries:
        return None
    comparison = compare_runs(summaries, reference, by=by)
    comparison.skipped = [
        SkippedRun(run_dir=str(r.run_dir), status=r.result.status, reason=r.result.reason)
        for r in runs if r.result.status not in FINISHED_STATUSES
    ]
    return comparison


def variant_scenarios(runs: Sequence[RunData], comparison: Comparison) -> dict[str, Scenario]:
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
                        names[option.id] = _shorten(option.label, 40)
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


def agreed_options_figure(comparison: Comparison, scenarios: Mapping[str, Scenario]) -> Figure:
    """Chart (b): per issue (and numeric term), what the deals settled it on, one stacked bar per
    variant; runs without a deal are stacked on top as "no deal", so every bar is as tall as its
    variant has runs. `scenarios` gives option labels and order (see `variant_scenarios`)."""
    groups = comparison.groups
    names = [g.variant for g in groups]
    dims = _dimensions(comparison, scenarios)
    n = max(len(dims), 1)
    cols = min(n, 2)
    rows = (n + cols - 1) // cols
    panel = max(5.5, 0.7 * len(groups) + 4.0)
    fig = Figure(figsize=(panel * cols, 3.3 * rows + 0.5), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    x = np.arange(len(groups))
    no_deal = np.array([max(g.n - g.deals, 0) for g in groups], dtype=np.float64)
    for k, dim in enumerate(dims):
        ax = axes[k // cols][k % cols]
        bottom = np.zeros(len(groups))
        for j, category in enumerate(dim.categories):
            counts = np.array([c.get(category, 0) for c in dim.counts], dtype=np.float64)
            if not counts.any():
                continue
            ax.bar(x, counts, bottom=bottom, color=_colors(1, j)[0], width=0.6,
                   label=dim.names.get(category, category))
            bottom += counts
        if no_deal.any():
            ax.bar(x, no_deal, bottom=bottom, color="#eeeeee", hatch="//", edgecolor="#999999",
                   width=0.6, label=NO_DEAL)
        ax.set_title(dim.label, fontsize=10)
        _variant_ticks(ax, x, names)
        ax.set_ylabel("runs")
        ax.yaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    if not dims:
        axes[0][0].text(0.5, 0.5, "no issues", ha="center", va="center")
    for k in range(len(dims), rows * cols):
        axes[k // cols][k % cols].set_visible(False)
    fig.suptitle("What the deals settled each issue on (per variant)", fontsize=11)
    return fig


def _variant_ticks(ax: Axes, x: np.ndarray, names: Sequence[str]) -> None:
    slanted = len(names) > 2 or max((len(n) for n in names), default=0) > 14
    ax.set_xticks(x, [_shorten(n, 24) for n in names], rotation=25 if slanted else 0,
                  ha="right" if slanted else "center", fontsize=8)


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --------------------------------------------------------------------------- (c) rates


def rates_figure(comparison: Comparison) -> Figure:
    """Chart (c): per variant, the deal rate and each party's red-line violation rate (share of
    runs whose outcome breaks one of its red lines), with Wilson 95% intervals."""
    groups = comparison.groups
    names = [g.variant for g in groups]
    parties: list[str] = []
    for g in groups:
        parties += [p for p in g.parties if p not in parties]
    x = np.arange(len(groups))
    right_width = max(4.5, 0.35 * len(groups) * max(len(parties), 1) + 2.5)
    left_width = max(2.5, 0.6 * len(groups) + 1.5)
    fig = Figure(figsize=(left_width + right_width + 1.2, 4.0), layout="constrained")
    left, right = fig.subplots(1, 2, width_ratios=[left_width, right_width])

    rate = np.array([g.deal_rate.rate for g in groups])
    low = np.array([g.deal_rate.lo for g in groups])
    high = np.array([g.deal_rate.hi for g in groups])
    left.bar(x, rate, color="#4c72b0", width=0.6)
    left.errorbar(x, rate, yerr=_yerr(rate, low, high), fmt="o", color="#222222", markersize=3,
                  capsize=4)
    for xi, g in zip(x, groups, strict=True):
        left.annotate(f"{g.deals}/{g.n}", (xi, 1.0), xycoords=("data", "axes fraction"),
                      xytext=(0, -10), textcoords="offset points", ha="center", fontsize=7)
    _variant_ticks(left, x, names)
    left.set_ylim(0, 1.08)
    left.set_ylabel("share of runs")
    left.set_title("deal rate", fontsize=10)
    left.grid(axis="y", alpha=0.3)

    widest = max((len(g.parties) for g in groups), default=1) or 1
    bar = 0.8 / widest
    labelled: set[str] = set()
    for i, g in enumerate(groups):
        present = [p for p in parties if p in g.parties]
        for j, party in enumerate(present):
            stats = g.parties[party].violation_rate
            pos = x[i] - bar * len(present) / 2 + bar * (j + 0.5)
            color = _colors(1, parties.index(party))[0]
            right.bar(pos, stats.rate, width=bar * 0.9, color=color,
                      label=None if party in labelled else party)
            labelled.add(party)
            right.errorbar(pos, stats.rate, yerr=[[max(stats.rate - stats.lo, 0)],
                                                  [max(stats.hi - stats.rate, 0)]],
                           fmt="o", color=color, markersize=3, capsize=2, linewidth=1)
    _variant_ticks(right, x, names)
    right.set_ylim(0, 1.08)
    right.set_title("red-line violation rate per party", fontsize=10)
    right.grid(axis="y", alpha=0.3)
    if parties:
        right.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.suptitle("Per variant, with 95% Wilson intervals", fontsize=11)
    return fig


def _yerr(value: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    return np.vstack([np.clip(value - low, 0, None), np.clip(high - value, 0, None)])


# --------------------------------------------------------------------------- files

AGREED_OPTIONS_PNG = "agreed-options.png"
RATES_PNG = "rates.png"


def file_safe(text: str) -> str:
    """`text` with anything but letters, digits, `_`, `.` and `-` replaced by `-`."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.") or "chart"


def run_chart_name(run: RunData) -> str:
    h = run.header
    return file_safe(f"utilities-{h.scenario_id}-seed{h.seed}-{h.run_id}") + ".png"


def write_run_chart(run: RunData, out_dir: Path) -> Path:
    """Chart (a) of `run` as `<out_dir>/utilities-<scenario>-seed<n>-<run id>.png`."""
    return save_figure(run_utility_figure(run), out_dir / run_chart_name(run))


def comparison_figures(
    runs: Sequence[RunData], comparison: Comparison | None = None
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
    runs: Sequence[RunData],
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
