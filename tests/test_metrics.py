"""`detente.metrics`: the table of run metrics, and that one entry reaches every output.

A metric added to the table (`register`) shows up in `detente compare`'s terminal tables, its
`--json` and `--csv`, the HTML report's comparison tables and, if charted, the rates chart, and is
tested against the reference when marked `tested`: nothing else is edited. The crafted sweep of
`test_compare.py` gives figures that can be checked by hand; the report needs real runs (their
scenarios), the scripted ones of `test_plots_report.py`.
"""

from __future__ import annotations

import csv
import html
import json
import math
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from detente.comparison import (
    Comparison,
    PairTest,
    VariantStats,
    compare_runs,
    load_runs_with_skipped,
)
from detente.html_report import render_report
from detente.metrics import (
    METRICS,
    MeanCI,
    Metric,
    Proportion,
    RoundsStats,
    format_diff,
    metric,
    register,
    wilson_interval,
)
from detente.plots import comparison_of, figure_labels, load_runs, rates_figure
from detente.runs import RunFolder
from helpers import CliResult as Result
from test_compare import crafted_sweep
from test_plots_report import SampleRuns, make_runs


def _rounds_played(run: RunFolder) -> int:
    return run.result.rounds_played


def _above_reservation(run: RunFolder) -> dict[str, bool]:
    return {p: s.surplus > 0 for p, s in run.result.scores.parties.items()}


@pytest.fixture
def added() -> Iterator[tuple[Metric, Metric]]:
    """Two metrics added to the table for one test: rounds played by every run (a tested
    mean) and, per party, whether the outcome left it above its reservation utility (a tested,
    charted rate)."""
    entries = (
        register(Metric("rounds_played", "rounds played", "mean", _rounds_played, tested=True,
                        note="Rounds played: every run's rounds, deal or not.")),
        register(Metric("above_reservation", "above reservation", "rate", _above_reservation,
                        per_party=True, tested=True, chart=True,
                        chart_axis="party the outcome leaves above its reservation",
                        note="Share of runs whose outcome gives the party more than its "
                             "reservation utility.")),
    )
    yield entries
    for entry in entries:
        METRICS.remove(entry)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return crafted_sweep(tmp_path_factory.mktemp("crafted"))


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> SampleRuns:
    return make_runs(tmp_path_factory.mktemp("scripted"))


# --------------------------------------------------------------------------- the table


def test_each_kind_pools_as_documented() -> None:
    def pooled(kind: str, values: list[object]) -> object:
        return Metric("x", "x", kind, lambda run: None).pool(values)

    rate = pooled("rate", [True, False, None, True])
    assert isinstance(rate, Proportion) and (rate.count, rate.n) == (2, 3)  # None: unmeasured
    assert (rate.lo, rate.hi) == wilson_interval(2, 3)
    share = pooled("pooled_rate", [(1, 4), None, (2, 6)])
    assert isinstance(share, Proportion) and (share.count, share.n, share.rate) == (3, 10, 0.3)
    assert pooled("pooled_rate", [(0, 0)]) is None  # nothing was counted
    mean = pooled("mean", [2.0, 4.0, None])
    assert isinstance(mean, MeanCI) and (mean.mean, mean.n) == (3.0, 2) and mean.lo < 3 < mean.hi
    rounds = pooled("mean_median", [1.0, 2.0, 6.0])
    assert rounds == RoundsStats(mean=3.0, median=2.0, n=3)
    for kind in ("rate", "mean", "mean_median"):
        assert pooled(kind, [None, None]) is None


def test_a_bad_entry_is_refused_with_its_name() -> None:
    with pytest.raises(ValueError, match="'x': only rate and mean metrics can be tested"):
        Metric("x", "x", "pooled_rate", lambda run: None, tested=True)
    with pytest.raises(ValueError, match="only rates can be charted"):
        Metric("x", "x", "mean", lambda run: None, chart=True)
    with pytest.raises(ValueError, match="kind must be one of"):
        Metric("x", "x", "median", lambda run: None)
    with pytest.raises(ValueError, match="already registered"):
        register(Metric("deal_rate", "deal rate", "rate", lambda run: None))
    assert [m.key for m in METRICS].count("deal_rate") == 1


def test_a_key_that_is_a_field_name_is_refused(sweep: Path) -> None:
    runs = load_runs_with_skipped([sweep]).runs
    clash = register(Metric("deals", "deals", "rate", lambda run: True))
    try:
        with pytest.raises(ValueError, match="deals are names of the comparison's own fields"):
            compare_runs(runs)
    finally:
        METRICS.remove(clash)


def test_titles_and_differences_follow_the_kind() -> None:
    assert metric("utility").title == "Mean utility [95% bootstrap interval]"
    assert metric("invalid_rate").title == "Invalid-answer rate [95% Wilson interval]"
    assert format_diff(metric("deal_rate"), 0.5) == "+50 pts"
    assert format_diff(metric("utility"), -12.5) == "-12.5"
    assert format_diff(metric("utility"), None) == "-"


def test_json_of_earlier_versions_still_reads() -> None:
    """A test written before the tests were driven by the table had no distance_to_nash_diff."""
    old = {"a": "v", "b": "baseline", "deal_rate_diff": 0.25, "deal_rate_p": 0.5,
           "distance_to_nash_p": None, "note": None,
           "parties": {"us": {"utility_diff": -1.5, "utility_p": 0.2, "violation_diff": 0.0,
                              "violation_p": 1.0}}}
    test = PairTest.model_validate(old)
    assert (test.deal_rate_diff, test.deal_rate_p, test.distance_to_nash_p) == (0.25, 0.5, None)
    assert test.metrics["distance_to_nash"].diff is None
    assert (test.parties["us"].utility_diff, test.parties["us"].violation_p) == (-1.5, 1.0)
    dumped = test.model_dump()
    assert set(old) <= set(dumped) and "metrics" not in dumped
    assert "metrics" not in dumped["parties"]["us"]


# --------------------------------------------------------------------------- every output


def test_an_added_metric_reaches_the_terminal_json_and_csv(
    added: tuple[Metric, Metric], sweep: Path, cli: Callable[..., Result], tmp_path: Path,
) -> None:
    rounds, above = added
    shown = cli("compare", sweep)
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    # Rounds played: baseline 3, 5, 8, 6; bilateral 2, 3, 4, 5.
    assert "rounds played" in out and "Rounds played: every run's rounds" in out
    assert re.search(r"│ baseline \(reference\) .*│ 5\.5 \[", out)
    assert re.search(r"│ bilateral_us_russia .*│ 3\.5 \[", out)
    # Above reservation (40): Ukraine's utilities 50, 30, 36, 36 against 10, 20, 30, 40.
    assert "Above reservation [95% Wilson interval]" in out
    assert "25% [5%, 70%] (1/4)" in out and "0% [0%, 49%] (0/4)" in out
    assert "us above reservation" in out  # a column of the tests table

    path = tmp_path / "out.csv"
    done = cli("compare", sweep, "--json", "--csv", path)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    base, bil = data["groups"]
    assert base["rounds_played"]["mean"] == 5.5 and bil["rounds_played"]["mean"] == 3.5
    assert base["parties"]["ukraine"]["above_reservation"]["count"] == 1
    assert bil["parties"]["ukraine"]["above_reservation"]["count"] == 0
    assert "deal_rate" in base and "metrics" not in base  # every metric under its own key
    (test,) = data["tests"]
    assert test["rounds_played_diff"] == -2.0
    # Mann-Whitney, {2, 3, 4, 5} against {3, 5, 6, 8}: U = 3 (ties at 3 and 5 count a half);
    # normal approximation with tie and continuity corrections, as in test_compare.py.
    z = (8 - 3 - 0.5) / math.sqrt(16 / 12 * (9 - 12 / 56))
    assert test["rounds_played_p"] == pytest.approx(math.erfc(z / math.sqrt(2)), rel=1e-9)
    assert test["parties"]["ukraine"]["above_reservation_p"] == pytest.approx(1.0)  # 0/4, 1/4
    parsed = Comparison.model_validate_json(done.stdout)
    assert isinstance(parsed.groups[0].stat("rounds_played"), MeanCI)
    assert parsed.groups[0].parties["ukraine"].stat("above_reservation") == \
        Proportion(count=1, n=4, rate=0.25, lo=wilson_interval(1, 4)[0],
                   hi=wilson_interval(1, 4)[1])

    rows = list(csv.DictReader(path.open(encoding="utf-8")))

    def value(variant: str, name: str, party: str = "") -> str:
        (row,) = [r for r in rows if (r["variant"], r["metric"], r["party"])
                  == (variant, name, party)]
        return row["value"]

    assert float(value("baseline", "rounds_played")) == 5.5
    assert float(value("bilateral_us_russia", "above_reservation", "ukraine")) == 0.0
    assert float(value("bilateral_us_russia", "p_rounds_played")) == test["rounds_played_p"]
    assert float(value("bilateral_us_russia", "p_above_reservation", "ukraine")) == \
        pytest.approx(1.0)
    assert rounds.key in {r["metric"] for r in rows} and above.key in {r["metric"] for r in rows}


def test_an_added_metric_reaches_the_report_and_the_rates_chart(
    added: tuple[Metric, Metric], sample: SampleRuns,
) -> None:
    runs = load_runs([sample.sweep])
    comparison = comparison_of(runs)
    assert comparison is not None
    page = render_report(runs, comparison=comparison)
    section = page[page.index('<section id="comparison">'):page.index('<section id="charts">')]
    assert '<th data-metric="rounds_played">rounds played</th>' in section
    assert '<th data-metric="above_reservation">above reservation</th>' in section
    played: dict[str, list[int]] = {}
    for run in runs:
        played.setdefault(run.scenario.id, []).append(run.result.rounds_played)
    for group in comparison.groups:
        # every variant's runs are copies of one run: the mean is that run's rounds
        assert len(set(played[group.variant])) == 1
        cell = re.search(rf'<tr data-variant="{group.variant}">.*?'
                         r'<td data-metric="rounds_played">([^<]*)</td>', section)
        assert cell is not None and float(cell.group(1)) == played[group.variant][0]
    assert section.count('<td data-metric="above_reservation">') == sum(
        len(g.parties) for g in comparison.groups)
    notes = html.unescape(section)
    assert "Rounds played: every run's rounds, deal or not." in notes

    fig = rates_figure(comparison)
    assert [ax.get_title() for ax in fig.axes] == [
        "deal rate", "red-line violation rate", "above reservation"]
    assert "party the outcome leaves above its reservation" in figure_labels(fig)["axes"]


def test_without_added_metrics_the_stats_hold_the_built_in_ones(sweep: Path) -> None:
    comparison = compare_runs(load_runs_with_skipped([sweep]).runs)
    group: VariantStats = comparison.groups[0]
    assert list(group.metrics) == [m.key for m in METRICS if not m.per_party]
    assert list(group.parties["us"].metrics) == [m.key for m in METRICS if m.per_party]
    assert group.deal_rate is group.metrics["deal_rate"]
