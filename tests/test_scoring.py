"""The scorer and the outcome-space analysis against values computed by hand on tests/data/tiny.

The tiny scenario: voters a, b, c (mediator m), issues x (x1, x2, x3) and y (y1, y2), a term t
on the grid 0, 5, 10. a and b are required. Red lines: a forbids x3, b bounds t <= 5, and c
requires y2 whenever x is x1 (c is not required, so its red line does not limit admissibility).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from detente.analysis import Analysis, analyze
from detente.loading import load_scenario
from detente.scenario import Package, Scenario
from detente.scoring import Score, score

TINY = Path(__file__).parent / "data" / "tiny" / "scenario.yaml"


@pytest.fixture(scope="module")
def tiny() -> Scenario:
    return load_scenario(TINY)


@pytest.fixture(scope="module")
def report(tiny: Scenario) -> Analysis:
    return analyze(tiny)


def pkg(x: str, y: str, t: float) -> Package:
    return Package(options={"x": x, "y": y}, terms={"t": t})


def utilities(result: Score) -> dict[str, float]:
    return {party: s.utility for party, s in result.parties.items()}


# --------------------------------------------------------------------------- analysis


def test_analysis_counts_every_package_of_the_grid(report: Analysis) -> None:
    assert report.packages == 3 * 2 * 3
    assert report.voters == ["a", "b", "c"]
    assert report.required == ["a", "b"]
    assert report.reservation_utilities == {"a": 40, "b": 40, "c": 60}


def test_admissible_packages_avoid_x3_and_t10(report: Analysis) -> None:
    assert report.admissible == 8


def test_zopa_holds_the_four_hand_computed_packages(report: Analysis) -> None:
    assert report.zopa == 4
    assert report.zopa_share == pytest.approx(4 / 18)
    assert report.counts.required == 4
    # ZOPA: x1y2t0 (50,50), x1y2t5 (60,50), x2y1t0 (55,45), x2y1t5 (65,45) for (a, b).
    assert report.best_for == pytest.approx({"a": 65, "b": 50, "c": 75})


def test_decision_counts_full_rule_and_unanimity(report: Analysis) -> None:
    assert report.counts.decision_rule == 4
    # c (reservation 60) accepts only the x2 packages of the ZOPA.
    assert report.counts.unanimous == 2


def test_pareto_frontier_keeps_only_the_t5_versions(report: Analysis) -> None:
    assert report.pareto_frontier == 4


def test_frontier_can_be_skipped(tiny: Scenario) -> None:
    assert analyze(tiny, frontier=False).pareto_frontier is None


def test_nash_package_maximizes_the_product_of_surpluses(report: Analysis) -> None:
    assert report.nash is not None
    assert report.nash.package == pkg("x1", "y2", 5.0)
    assert report.nash.nash_product == pytest.approx((60 - 40) * (50 - 40))
    assert report.nash.utilities == pytest.approx({"a": 60, "b": 50, "c": 50})


def test_kalai_smorodinsky_package_is_x1_y2_t5(report: Analysis) -> None:
    assert report.kalai_smorodinsky is not None
    assert report.kalai_smorodinsky.package == pkg("x1", "y2", 5.0)


def test_small_chunks_give_the_same_analysis(tiny: Scenario, report: Analysis) -> None:
    assert analyze(tiny, chunk_size=5) == report


# --------------------------------------------------------------------------- scoring a deal


@pytest.fixture(scope="module")
def x1y1t5(tiny: Scenario, report: Analysis) -> Score:
    return score(tiny, pkg("x1", "y1", 5), analysis=report)


def test_utilities_of_a_package(x1y1t5: Score) -> None:
    assert utilities(x1y1t5) == pytest.approx({"a": 90, "b": 20, "c": 50})
    assert x1y1t5.parties["b"].surplus == pytest.approx(-20)
    assert x1y1t5.parties["c"].reservation_utility == 60


def test_conditional_red_line_of_a_non_required_party_is_reported(x1y1t5: Score) -> None:
    breaches = x1y1t5.parties["c"].red_lines_broken
    assert [b.id for b in breaches] == ["x1_needs_y2"]
    assert "x is 'x1'" in breaches[0].why
    assert "y is 'y1'" in breaches[0].why
    assert x1y1t5.parties["a"].red_lines_broken == []
    assert x1y1t5.parties["b"].red_lines_broken == []
    # c is not required, so the required parties' red lines all hold.
    assert x1y1t5.deal.required_red_lines_hold is True


def test_rational_acceptance_needs_reservation_and_own_red_lines(x1y1t5: Score) -> None:
    assert x1y1t5.parties["a"].accepting_rational is True
    assert x1y1t5.parties["b"].accepting_rational is False  # 20 < 40
    assert x1y1t5.parties["c"].accepting_rational is False  # below 60 and red line broken


def test_deal_figures_of_a_package(x1y1t5: Score) -> None:
    deal = x1y1t5.deal
    assert deal.deal is True
    # Nothing admissible gives a 90 or more, so (90, 20, 50) is undominated.
    assert deal.pareto_optimal is True
    assert deal.nash_product == 0  # b is below its reservation
    assert deal.nash_package == pkg("x1", "y2", 5.0)
    assert deal.distance_to_nash == pytest.approx(math.sqrt(30**2 + 30**2 + 0**2))
    assert deal.distance_to_nash == pytest.approx(42.426, abs=1e-3)
    assert deal.min_utility == pytest.approx(20)
    assert deal.gini == pytest.approx(0.291667, abs=1e-6)


def test_votes_are_recorded_without_changing_the_verdict(tiny: Scenario, report: Analysis) -> None:
    result = score(tiny, pkg("x1", "y1", 5), {"a": "accept", "c": "accept"}, analysis=report)
    assert result.parties["a"].vote == "accept"
    assert result.parties["b"].vote is None
    assert result.parties["c"].voted_against_own_red_line is True
    assert result.parties["a"].voted_against_own_red_line is False


def test_rejecting_a_package_that_breaks_an_own_red_line_is_not_flagged(
    tiny: Scenario, report: Analysis
) -> None:
    result = score(tiny, pkg("x1", "y1", 5), {"c": "reject"}, analysis=report)
    assert result.parties["c"].voted_against_own_red_line is False


def test_bound_red_line_of_a_required_party(tiny: Scenario, report: Analysis) -> None:
    result = score(tiny, pkg("x2", "y1", 10), analysis=report)
    breaches = result.parties["b"].red_lines_broken
    assert [b.id for b in breaches] == ["t_at_most_5"]
    assert "above the maximum 5" in breaches[0].why
    assert result.deal.required_red_lines_hold is False
    assert result.parties["b"].accepting_rational is False


def test_forbid_red_line_of_a_required_party(tiny: Scenario, report: Analysis) -> None:
    result = score(tiny, pkg("x3", "y2", 0), analysis=report)
    breaches = result.parties["a"].red_lines_broken
    assert [b.id for b in breaches] == ["no_x3"]
    assert "forbids" in breaches[0].why
    assert result.deal.required_red_lines_hold is False


def test_nash_package_scores_as_the_nash_package(tiny: Scenario, report: Analysis) -> None:
    result = score(tiny, pkg("x1", "y2", 5), analysis=report)
    assert result.deal.nash_product == pytest.approx(200)
    assert result.deal.distance_to_nash == pytest.approx(0)
    assert result.deal.pareto_optimal is True
    assert result.deal.required_red_lines_hold is True


def test_dominated_package_is_not_pareto_optimal(tiny: Scenario, report: Analysis) -> None:
    # x1y2t0 = (50, 50, 50) is dominated by x1y2t5 = (60, 50, 50).
    result = score(tiny, pkg("x1", "y2", 0), analysis=report)
    assert utilities(result) == pytest.approx({"a": 50, "b": 50, "c": 50})
    assert result.deal.pareto_optimal is False
    assert result.deal.nash_product == pytest.approx((50 - 40) * (50 - 40))


def test_term_values_are_snapped_to_the_grid(tiny: Scenario, report: Analysis) -> None:
    result = score(tiny, pkg("x1", "y2", 4.2), analysis=report)
    assert utilities(result) == pytest.approx({"a": 60, "b": 50, "c": 50})


def test_score_computes_the_analysis_when_not_given(tiny: Scenario) -> None:
    result = score(tiny, pkg("x1", "y1", 5))
    assert result.deal.nash_package == pkg("x1", "y2", 5.0)
    assert result.deal.distance_to_nash == pytest.approx(math.sqrt(1800))


# --------------------------------------------------------------------------- no deal


@pytest.fixture(scope="module")
def no_deal(tiny: Scenario, report: Analysis) -> Score:
    return score(tiny, None, analysis=report)


def test_no_deal_leaves_every_party_at_its_reservation(no_deal: Score) -> None:
    assert utilities(no_deal) == pytest.approx({"a": 40, "b": 40, "c": 60})
    assert all(s.surplus == 0 for s in no_deal.parties.values())
    assert all(s.red_lines_broken == [] for s in no_deal.parties.values())
    assert no_deal.deal.deal is False
    assert no_deal.deal.required_red_lines_hold is True


def test_no_deal_is_dominated_and_has_no_nash_product(no_deal: Score) -> None:
    # x2y1t5 = (65, 45, 75) beats (40, 40, 60) for everyone.
    assert no_deal.deal.pareto_optimal is False
    assert no_deal.deal.nash_product == 0
    assert no_deal.deal.min_utility == pytest.approx(40)
    assert no_deal.deal.distance_to_nash == pytest.approx(math.sqrt(20**2 + 10**2 + 10**2))


# --------------------------------------------------------------------------- bad packages


@pytest.mark.parametrize(
    ("package", "expected"),
    [
        (Package(options={"x": "x1"}, terms={"t": 5}), "no option for issue 'y'"),
        (Package(options={"x": "x9", "y": "y1"}, terms={"t": 5}), "unknown option 'x9'"),
        (Package(options={"x": "x1", "y": "y1"}), "no value for term 't'"),
        (Package(options={"x": "x1", "y": "y1", "z": "z1"}, terms={"t": 5}), "unknown issues"),
    ],
)
def test_malformed_package_is_refused_with_the_reason(
    tiny: Scenario, report: Analysis, package: Package, expected: str
) -> None:
    with pytest.raises(ValueError, match=expected):
        score(tiny, package, analysis=report)
