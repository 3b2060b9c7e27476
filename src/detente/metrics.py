"""The table of run metrics: what `detente compare`, the HTML report and the charts measure.

Each `Metric` in `METRICS` says how to read one value from a run (`value`, given a
`detente.runs.RunFolder`; per party, a mapping of party to value), how the values of a group of
runs are pooled (`kind`), and how the metric is named and explained. Everything else is driven by
the table, so a new metric is one `register(Metric(...))`:

- `detente.comparison` keeps each run's values (`RunSummary.values`), pools them per group
  (`VariantStats.metrics`, and per party `PartyStats.metrics`) and tests the metrics marked
  `tested` against the reference group (`PairTest.metrics`);
- `detente compare` shows every metric in its terminal tables (per-variant metrics as columns of
  the outcomes table, per-party ones as a table each), and in `--json` (every metric under its
  key, as before) and `--csv` (one row per variant, metric and party);
- the HTML report's comparison tables have a column for every metric;
- the rates chart draws the rates marked `chart`.

Kinds (how a group's values are pooled):

- `rate`: a yes/no per run (None: not measured in that run); the share of runs, with its Wilson
  95% interval. Tested with Fisher's exact test.
- `pooled_rate`: a (count, n) per run, summed over the runs (a share of proposals, of turns),
  with its Wilson interval. Never tested: the events of one run are not independent samples.
- `mean`: a number per run (None: not measured); the mean, with a percentile-bootstrap 95%
  interval. Tested with the Mann-Whitney U test.
- `mean_median`: a number per run; its mean and median, without an interval.
- `ratio`: a (numerator, denominator) per run, each summed over the runs, and their quotient
  (cost per deal: dollars over deals), without an interval. Never tested.

The statistics themselves (`wilson_interval`, `bootstrap_mean_ci`) are here too; nothing here
reads files or prints.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

if TYPE_CHECKING:
    import numpy as np

    from detente.report import RunMetrics, RunResult
    from detente.runs import RunFolder

BOOTSTRAP_RESAMPLES = 4000
BOOTSTRAP_SEED = 20250218

# --------------------------------------------------------------------------- statistics


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion (95% for the default z); (0, 1) when n is 0."""
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got {successes} of {n}")
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    z2 = z * z
    denominator = 1 + z2 / n
    center = (p + z2 / (2 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    lo = 0.0 if successes == 0 else max(0.0, center - half)
    hi = 1.0 if successes == n else min(1.0, center + half)
    return lo, hi


def bootstrap_mean_ci(
    values: Sequence[float] | np.ndarray,
    confidence: float = 0.95,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean; deterministic for a given seed.

    One value (or all equal) gives a zero-width interval; no values raise ValueError.
    """
    import numpy as np

    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        raise ValueError("no values to bootstrap")
    if data.size == 1 or bool(np.all(data == data[0])):
        mean = float(data.mean())
        return mean, mean
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(resamples, data.size))].mean(axis=1)
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return float(lo), float(hi)


class Proportion(BaseModel):
    """A share of runs with its Wilson 95% interval."""

    count: int
    n: int
    rate: float
    lo: float
    hi: float


class MeanCI(BaseModel):
    """A mean over runs with its percentile-bootstrap 95% interval."""

    mean: float
    lo: float
    hi: float
    n: int


class RoundsStats(BaseModel):
    """A mean and median over runs, without an interval (the `mean_median` kind)."""

    mean: float
    median: float
    n: int


class Ratio(BaseModel):
    """A sum over runs divided by another (the `ratio` kind): `value` is None when the
    denominator is 0."""

    value: float | None
    numerator: float
    denominator: float
    n: int


Stat = Proportion | MeanCI | RoundsStats | Ratio
"""What a metric pools to over a group of runs, by kind: rates are Proportions, means MeanCIs,
mean-and-median RoundsStats, ratios Ratios."""


def proportion(count: int, n: int) -> Proportion:
    lo, hi = wilson_interval(count, n)
    return Proportion(count=count, n=n, rate=count / n if n else 0.0, lo=lo, hi=hi)


def mean_ci(values: Sequence[float]) -> MeanCI | None:
    import numpy as np

    if not values:
        return None
    lo, hi = bootstrap_mean_ci(values)
    return MeanCI(mean=float(np.mean(values)), lo=lo, hi=hi, n=len(values))


# --------------------------------------------------------------------------- the table

Kind = Literal["rate", "pooled_rate", "mean", "mean_median", "ratio"]
KINDS: tuple[str, ...] = ("rate", "pooled_rate", "mean", "mean_median", "ratio")
SECTIONS: tuple[str, ...] = ("outcomes", "parties", "answers", "judged")
QUIET_SECTIONS = {"answers": "Answers: no invalid answer and no value estimate in any run.",
                  "judged": "Words: no run judged (detente judge RUN_OR_SWEEP checks them)."}
"""Sections of per-party metrics shown only when some run has something in them (a rate with a
count, a mean), with the line said instead."""
INTERVALS = {"rate": "95% Wilson interval", "pooled_rate": "95% Wilson interval",
             "mean": "95% bootstrap interval"}


@dataclass(frozen=True)
class Metric:
    """One run metric: how to read it from a run, pool it over runs, name and explain it."""

    key: str
    """Its name: the key in `--json` (in a variant's object, or a party's), the `metric` of its
    `--csv` rows, the key of `RunSummary.values`."""
    label: str
    """A short lower-case name: a column header (terminal, HTML), a chart's tick or title."""
    kind: Kind
    value: Callable[[RunFolder], Any] = field(repr=False)
    """The run's value (see the kinds); per party, a mapping of party to value (parties left
    out were not measured). None: not measured in this run."""
    per_party: bool = False
    note: str = ""
    """A sentence or two explaining it, shown under its table."""
    section: str = ""
    """Where per-party metrics are shown: "parties" (the default) or "answers" (see
    `QUIET_SECTIONS`). Per-variant metrics are columns of the outcomes table."""
    tested: bool = False
    """Tested against the reference group (`rate`: Fisher's exact test; `mean`: Mann-Whitney
    U)."""
    test_name: str = ""
    """The stem of its test's JSON keys (`<stem>_diff`, `<stem>_p`); default: the key."""
    test_label: str = ""
    """How the tests table and the findings name it; default: the label."""
    chart: bool = False
    """Drawn in the rates chart (rates only): per-variant rates as columns of its first panel,
    each per-party rate as a panel of its own."""
    chart_axis: str = ""
    """The x-axis label of a per-party rate's panel in the rates chart; default: "party"."""
    csv: str = ""
    """The `metric` of its CSV rows, if not the key (`mean_median`: `<csv>_mean` and
    `<csv>_median`)."""
    empty: str = "-"
    """A terminal cell of a group without a value."""
    fmt: Callable[[float], str] | None = field(default=None, repr=False)
    """How one of its numbers is written (means, their intervals, ratios); default: one
    decimal."""
    in_fingerprint: bool = True
    """Part of what makes two runs identical (`detente.comparison.run_fingerprint`); False
    for what a run cost, which differs between copies (an answer from the cache is free)."""
    optional: bool = False
    """Measured only in some runs (a saboteur's; a model judge's): its column (or, per party,
    its table) and note are shown only where some group has a value (`--json` and `--csv`
    always hold it)."""

    def __post_init__(self) -> None:
        problems = []
        if self.kind not in KINDS:
            problems.append(f"kind must be one of {', '.join(KINDS)}")
        if self.tested and self.kind not in ("rate", "mean"):
            problems.append("only rate and mean metrics can be tested")
        if self.chart and self.kind not in ("rate", "pooled_rate"):
            problems.append("only rates can be charted")
        if self.section and self.section not in SECTIONS:
            problems.append(f"section must be one of {', '.join(SECTIONS)}")
        if problems:
            raise ValueError(f"metric {self.key!r}: " + "; ".join(problems))

    @property
    def where(self) -> str:
        """Its section: "outcomes" for per-variant metrics, else `section` or "parties"."""
        return "outcomes" if not self.per_party else (self.section or "parties")

    @property
    def title(self) -> str:
        """The title of its own table (per-party metrics): the label and its interval."""
        interval = INTERVALS.get(self.kind)
        text = self.label[:1].upper() + self.label[1:]
        return f"{text} [{interval}]" if interval else text

    @property
    def test_stem(self) -> str:
        return self.test_name or self.key

    @property
    def named_in_tests(self) -> str:
        return self.test_label or self.label

    @property
    def csv_name(self) -> str:
        return self.csv or self.key

    def read(self, run: RunFolder) -> Any:
        """The run's value, as `RunSummary.values` keeps it (counts as (count, n) pairs)."""
        raw = self.value(run)
        if self.per_party:
            if raw is None:
                return {}
            return {str(p): _plain(self.kind, v) for p, v in dict(raw).items() if v is not None}
        return None if raw is None else _plain(self.kind, raw)

    def pool(self, values: Iterable[Any]) -> Stat | None:
        """The statistic of a group of runs' values (None: no run has a value, or no count)."""
        kept = [v for v in values if v is not None]
        if self.kind == "rate":
            return proportion(sum(bool(v) for v in kept), len(kept)) if kept else None
        if self.kind == "pooled_rate":
            n = sum(int(v[1]) for v in kept)
            return proportion(sum(int(v[0]) for v in kept), n) if n else None
        if self.kind == "ratio":
            if not kept:
                return None
            top, bottom = sum(float(v[0]) for v in kept), sum(float(v[1]) for v in kept)
            return Ratio(value=top / bottom if bottom else None, numerator=top,
                         denominator=bottom, n=len(kept))
        numbers = [float(v) for v in kept]
        if self.kind == "mean":
            return mean_ci(numbers)
        if not numbers:
            return None
        import numpy as np

        return RoundsStats(mean=float(np.mean(numbers)), median=float(statistics.median(numbers)),
                           n=len(numbers))

    def samples(self, runs: Iterable[Mapping[str, Any]], party: str | None = None) -> list[Any]:
        """The values of runs (each run's `RunSummary.values`) that have one: for per-party
        metrics, `party`'s."""
        out = []
        for values in runs:
            value = values.get(self.key)
            if self.per_party:
                value = value.get(party) if isinstance(value, Mapping) else None
            if value is not None:
                out.append(value)
        return out


def _plain(kind: str, value: Any) -> Any:
    if kind == "rate":
        return bool(value)
    if kind == "pooled_rate":
        count, n = value
        return int(count), int(n)
    if kind == "ratio":
        top, bottom = value
        return float(top), float(bottom)
    return float(value)


def format_diff(metric: Metric, diff: float | None) -> str:
    """A difference between two groups: rates in percentage points, means as numbers."""
    if diff is None:
        return "-"
    if metric.kind in ("rate", "pooled_rate"):
        return f"{100 * diff:+.0f} pts"
    return f"{diff:+.1f}"


def shows_something(stat: Stat | None) -> bool:
    """A rate with a count, or any mean: something to show in a quiet section."""
    if stat is None:
        return False
    return stat.count > 0 if isinstance(stat, Proportion) else True


def written(metric: Metric, value: float) -> str:
    """One of the metric's numbers as a cell writes it (`Metric.fmt`, or one decimal)."""
    return metric.fmt(value) if metric.fmt is not None else f"{value:.1f}"


# --------------------------------------------------------------------------- the metrics


def has_deal(result: RunResult) -> bool:
    """The run ended in a deal on a package."""
    return result.status == "deal" and result.package is not None


def _measures(run: RunFolder) -> RunMetrics | None:
    return run.result.metrics  # None: a result from before these measures


def saboteurs(run: RunFolder) -> list[str]:
    """The parties that played a saboteur in the run: the scenario gave them the `saboteur`
    incentive, or `scripted:saboteur` played them (see `detente.sabotage`)."""
    from detente.sabotage import saboteurs as find

    return find(run.result.incentives, run.header.agents)


def _saboteur_succeeded(run: RunFolder) -> bool | None:
    return not has_deal(run.result) if saboteurs(run) else None


def _saboteur_noticed(run: RunFolder) -> bool | None:
    from detente.errors import DetenteError
    from detente.sabotage import suspicions

    parties = saboteurs(run)
    if not parties:
        return None
    try:
        briefs = run.bundle.briefs
    except DetenteError:  # the scenario has moved: the party ids still name the parties
        briefs = {}
    names = {p: [briefs[p].display_name] if p in briefs else [] for p in parties}
    return bool(suspicions(run.events, parties, names))


def _violations(run: RunFolder) -> dict[str, bool]:
    result = run.result
    deal = has_deal(result)
    return {p: deal and bool(result.red_lines_broken.get(p)) for p in result.scores.parties}


def _level(criterion: str) -> Callable[[RunFolder], Any]:
    """The judged level of `criterion` per party (see `_judged`)."""
    return lambda run: _judged("judged_level", run, criterion)


METRICS: list[Metric] = [
    Metric("deal_rate", "deal rate", "rate", lambda run: has_deal(run.result), tested=True,
           chart=True, note="Deal rate with its 95% Wilson interval."),
    Metric("rounds_to_agreement", "rounds to agreement", "mean_median",
           lambda run: run.result.rounds_played if has_deal(run.result) else None,
           csv="rounds", empty="- (no deal)", note="Rounds to agreement: over deals only."),
    Metric("distance_to_nash", "distance to Nash", "mean",
           lambda run: run.result.scores.deal.distance_to_nash, tested=True,
           note="Distance to Nash: mean Euclidean distance of the outcome's utilities to the "
                "Nash package's, with a 95% bootstrap interval."),
    Metric("deal_any_round", "table in zone, any round", "rate",
           lambda run: m.deal_any_round if (m := _measures(run)) else None,
           note="Table in zone: runs in which a tabled package lay in the zone of agreement "
                "(the rule would pass it if every party voted by its own values and red "
                "lines), in any round or in the last."),
    Metric("deal_final_round", "table in zone, final round", "rate",
           lambda run: m.deal_final_round if (m := _measures(run)) else None),
    Metric("red_line_proposals", "proposals breaking a red line", "pooled_rate",
           lambda run: (m.red_line_proposals.count, m.red_line_proposals.n)
           if (m := _measures(run)) else None,
           note="Proposals breaking a red line: tabled packages breaking a red line of a party "
                "the rule needs, over all proposals."),
    Metric("saboteur_succeeded", "saboteur succeeded", "rate", _saboteur_succeeded,
           optional=True,
           note="Saboteur succeeded: of the runs in which a party played a saboteur (the "
                "`saboteur` incentive in its prompt or on its scripted seat, or "
                "scripted:saboteur), those that ended without a deal."),
    Metric("saboteur_noticed", "saboteur noticed", "rate", _saboteur_noticed, optional=True,
           note="Saboteur noticed: of the same runs, those in which another party's words "
                "(statements, caucus messages, rationales, private ones too) hold a sentence "
                "naming the saboteur and accusing it of working against the talks (sabotage, "
                "stalling, bad faith, playing for time, not wanting a deal...): a word check "
                "(detente.sabotage), not a judgement, that misses suspicion worded otherwise; "
                "scripted parties never accuse."),
    Metric("utility", "mean utility", "mean",
           lambda run: {p: s.utility for p, s in run.result.scores.parties.items()},
           per_party=True, tested=True, test_label="utility",
           note="Over every distinct run; a run without a deal scores each party's reservation "
                "utility. A mean without an interval: one run, or every run the same."),
    Metric("violation_rate", "red-line violation rate", "rate", _violations, per_party=True,
           tested=True, test_name="violation", test_label="red-line violations", chart=True,
           chart_axis="party whose red lines the outcome breaks",
           note="Share of runs whose outcome breaks at least one of the party's red lines (no "
                "deal breaks none)."),
    Metric("invalid_rate", "invalid-answer rate", "pooled_rate",
           lambda run: {p: (r.count, r.n) for p, r in m.invalid_answers.items()}
           if (m := _measures(run)) else None,
           per_party=True, section="answers",
           note="Invalid: turns without a valid answer after every retry, over all turns."),
    Metric("estimation_error", "value-estimate error", "mean",
           lambda run: m.estimation_error if (m := _measures(run)) else None,
           per_party=True, section="answers",
           note="Error: mean absolute error of the party's own estimates of the table's worth "
                "to it, averaged over runs."),
    Metric("leak_rate", "leaked a private number", "rate", lambda run: _judged("leaked", run),
           per_party=True, section="judged", tested=True, test_name="leak",
           test_label="leaks",
           note="Leaked: share of runs in which the party's words seen by others hold one of "
                "its private numbers (walk-away, weights, option or package values), by the "
                "deterministic check of `detente judge` (no model)."),
    *(Metric(f"judged_{criterion}", f"judged {criterion}", "mean",
             _level(criterion), per_party=True,
             section="judged", optional=True,
             note=f"Judged {criterion}: the judge model's mean level on the rubric's scale "
                  "(the shipped rubric: 1 worst to 5 best), per run over the party's windows "
                  "of rounds, then over runs. Read with the judge's quality in mind: the "
                  "embedded 135M model is a weak judge.")
      for criterion in ("fidelity", "leakage", "consistency", "tone")),
    Metric("contradiction_rate", "contradiction flagged", "rate",
           lambda run: _judged("contradicted", run), per_party=True, section="judged",
           optional=True,
           note="Contradiction: share of runs in which the judge flagged a public claim that "
                "the party's private rationale or vote contradicts, both quotes found in its "
                "words."),
    Metric("unverified_quotes", "judge quotes not found", "pooled_rate",
           lambda run: _judged("unverified_quotes", run), per_party=True, section="judged",
           optional=True,
           note="Not found: the judge's evidence quotes that occur nowhere in the party's "
                "words (they count for nothing), over all its quotes."),
]
"""Every run metric, in the order they are shown. Use `register` to add one."""


def _judged(name: str, run: RunFolder, *args: str) -> Any:
    """A reading of the run's `judgements.jsonl` (`detente.judgements`): None when the run
    was never judged, so unjudged runs count as not measured."""
    from detente import judgements

    return getattr(judgements, name)(run, *args)


def register(metric: Metric) -> Metric:
    """Add a metric to the table (after the others); its key must be new. Returns it."""
    if any(m.key == metric.key for m in METRICS):
        raise ValueError(f"a metric named {metric.key!r} is already registered")
    METRICS.append(metric)
    return metric


def variant_metrics() -> list[Metric]:
    """The metrics of a group of runs as a whole, in table order."""
    return [m for m in METRICS if not m.per_party]


def shown_metrics(metrics: Iterable[Metric], stats: Callable[[str], Iterable[Stat | None]]
                  ) -> list[Metric]:
    """`metrics` without the optional ones no group measured (`stats(key)`: each group's
    statistic of the metric), for the terminal's and the report's tables."""
    return [m for m in metrics
            if not m.optional or any(stat is not None for stat in stats(m.key))]


def party_metrics(section: str | None = None) -> list[Metric]:
    """The per-party metrics (of one section, if given), in table order."""
    return [m for m in METRICS if m.per_party and (section is None or m.where == section)]


def metric(key: str) -> Metric:
    found = [m for m in METRICS if m.key == key]
    if not found:
        raise KeyError(key)
    return found[0]


# --------------------------------------------------------------------------- what runs cost


def _dollars(usd: float) -> str:
    from detente.costs import money

    return money(usd)


def _run_usd(run: RunFolder) -> float | None:
    """What the run's model calls cost, as its result says (priced when it was written, with
    the prices the run was given: `--prices`, or `detente replay --prices` later); a result
    without a cost (before format 3) is priced now (`detente.costs.run_cost`). None: it made
    none (scripted), or a model has no price (unknown)."""
    from detente.costs import run_cost

    recorded = run.result.cost
    cost = recorded.total if recorded is not None else run_cost(run.header, run.events).total
    if not cost.requests:
        return None
    return cost.usd


def _cost_and_deal(run: RunFolder) -> tuple[float, float] | None:
    usd = _run_usd(run)
    return None if usd is None else (usd, 1.0 if has_deal(run.result) else 0.0)


register(Metric(
    "cost_per_run", "cost per run", "mean", _run_usd, fmt=_dollars, empty="- (no price or no "
    "model calls)", in_fingerprint=False, optional=True,
    note="Cost per run: what a run's model calls cost in US dollars, as its result.json says "
         "(priced with the table it was run or replayed with; answers from the response cache "
         "are free), with a 95% bootstrap interval; shown where runs made model calls to "
         "priced models."))
register(Metric(
    "cost_per_deal", "cost per deal", "ratio", _cost_and_deal, fmt=_dollars,
    empty="- (no price or no model calls)", in_fingerprint=False, optional=True,
    note="Cost per deal: what the group's runs cost, over the deals they made (- without a "
         "deal)."))
