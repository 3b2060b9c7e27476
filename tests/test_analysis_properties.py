"""Property tests: the vectorized analysis and scorer against a brute-force oracle.

The oracle below is written from the definitions in `detente.analysis`, not from its code: it
enumerates packages with itertools, computes utilities in exact rational arithmetic straight from
the preferences and evaluates red lines one by one. Scenarios are small and random: 2-4 voters,
1-3 issues of 2-4 options, at most one numeric term of 2-4 grid values (on grids such as 0.1
steps that floats cannot represent exactly), random red lines of all three kinds, and sometimes
veto and quorum rules.
"""

from __future__ import annotations

import importlib.util
import itertools
import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detente.analysis import Analysis, analyze, zone_of_agreement
from detente.scenario import Package, Scenario, check_scenario
from detente.scoring import score
from detente.space import PackageSpace

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --------------------------------------------------------------------------- random scenarios

# Grids as exact decimals: (min, step). Several are not exactly representable as floats.
GRIDS = [("0", "1"), ("0", "5"), ("0", "0.1"), ("0.2", "0.1"), ("-1.5", "0.5"), ("10", "2.5")]
WEIGHT_UNITS = 20  # weights are multiples of 1/20


@dataclass(frozen=True)
class Spec:
    """A random scenario in the oracle's own terms, alongside the model built from it."""

    voters: list[str]
    issues: dict[str, list[str]]
    term: tuple[str, list[Fraction]] | None
    weights: dict[str, dict[str, Fraction]]
    utilities: dict[str, dict[str, dict[str, int]]]
    term_points: dict[str, list[tuple[Fraction, int]]]
    reservation: dict[str, int]
    red_lines: dict[str, list[dict[str, Any]]]
    required: list[str]
    veto: list[str]
    quorum: tuple[int, list[str]] | None
    scenario: Scenario


def _num(x: Fraction) -> float | int:
    return int(x) if x.denominator == 1 else float(x)


@st.composite
def condition(
    draw: st.DrawFn, issues: dict[str, list[str]], term: tuple[str, list[Fraction]] | None
) -> dict[str, Any]:
    subjects = [*issues] + ([term[0]] if term else [])
    subject = draw(st.sampled_from(subjects))
    if subject in issues:
        options = draw(st.lists(st.sampled_from(issues[subject]), min_size=1, unique=True))
        return {"issue": subject, "options": options}
    assert term is not None
    return {"term": subject, **draw(bounds(term[1]))}


@st.composite
def bounds(draw: st.DrawFn, values: list[Fraction]) -> dict[str, float | int]:
    """`min`, `max` or both, at grid values (the edge cases) or between them."""
    halfway = [(a + b) / 2 for a, b in itertools.pairwise(values)]
    candidates = sorted({*values, *halfway, values[0] - 1, values[-1] + 1})
    which = draw(st.sampled_from(["min", "max", "both"]))
    out: dict[str, float | int] = {}
    low = candidates[0]
    if which in ("min", "both"):
        low = draw(st.sampled_from(candidates))
        out["min"] = _num(low)
    if which in ("max", "both"):
        out["max"] = _num(draw(st.sampled_from([c for c in candidates if c >= low])))
    return out


@st.composite
def red_line(
    draw: st.DrawFn, k: int, issues: dict[str, list[str]], term: tuple[str, list[Fraction]] | None
) -> dict[str, Any]:
    kinds = ["forbid", "conditional"] + (["bound"] if term else [])
    kind = draw(st.sampled_from(kinds))
    line: dict[str, Any] = {"id": f"r{k}", "description": f"red line {k}", "kind": kind}
    if kind == "forbid":
        issue = draw(st.sampled_from(sorted(issues)))
        options = draw(st.lists(st.sampled_from(issues[issue]), min_size=1, unique=True))
        line.update(issue=issue, options=options)
    elif kind == "bound":
        assert term is not None
        line.update(term=term[0], **draw(bounds(term[1])))
    else:
        line["if"] = draw(condition(issues, term))
        line["then"] = draw(condition(issues, term))
    return line


@st.composite
def scenarios(draw: st.DrawFn) -> Spec:
    n_voters = draw(st.integers(2, 4))
    voters = [f"p{k}" for k in range(n_voters)]
    mediator = draw(st.sampled_from([None, "med"]))
    n_issues = draw(st.integers(1, 3))
    issues = {f"i{k}": [f"o{j}" for j in range(draw(st.integers(2, 4)))] for k in range(n_issues)}
    term: tuple[str, list[Fraction]] | None = None
    term_spec: list[dict[str, Any]] = []
    if draw(st.booleans()):
        low, step = (Fraction(x) for x in draw(st.sampled_from(GRIDS)))
        count = draw(st.integers(2, 4))
        values = [low + k * step for k in range(count)]
        term = ("t0", values)
        term_spec = [
            {
                "id": "t0",
                "label": "T",
                "description": "a number",
                "unit": "u",
                "min": _num(values[0]),
                "max": _num(values[-1]),
                "step": _num(step),
            }
        ]
    dims = [*issues] + ([term[0]] if term else [])

    weights: dict[str, dict[str, Fraction]] = {}
    utilities: dict[str, dict[str, dict[str, int]]] = {}
    term_points: dict[str, list[tuple[Fraction, int]]] = {}
    reservation: dict[str, int] = {}
    red_lines: dict[str, list[dict[str, Any]]] = {}
    preferences: dict[str, Any] = {}
    for party in voters:
        cuts = sorted(
            draw(
                st.lists(
                    st.integers(0, WEIGHT_UNITS), min_size=len(dims) - 1, max_size=len(dims) - 1
                )
            )
        )
        units = [b - a for a, b in zip([0, *cuts], [*cuts, WEIGHT_UNITS], strict=True)]
        weights[party] = {d: Fraction(u, WEIGHT_UNITS) for d, u in zip(dims, units, strict=True)}
        utilities[party] = {
            issue: {opt: draw(st.integers(0, 100)) for opt in options}
            for issue, options in issues.items()
        }
        prefs: dict[str, Any] = {
            "weights": {d: float(w) for d, w in weights[party].items()},
            "utilities": utilities[party],
        }
        if term:
            values = term[1]
            halfway = [(a + b) / 2 for a, b in itertools.pairwise(values)]
            xs = sorted(
                draw(
                    st.lists(
                        st.sampled_from(sorted({*values, *halfway})),
                        min_size=2,
                        max_size=3,
                        unique=True,
                    )
                )
            )
            term_points[party] = [(x, draw(st.integers(0, 100))) for x in xs]
            prefs["term_utilities"] = {term[0]: [[_num(x), u] for x, u in term_points[party]]}
        reservation[party] = draw(st.integers(0, 70))
        prefs["reservation_utility"] = reservation[party]
        n_lines = draw(st.integers(0, 2))
        red_lines[party] = [draw(red_line(k, issues, term)) for k in range(n_lines)]
        prefs["red_lines"] = red_lines[party]
        preferences[party] = prefs

    required = draw(st.lists(st.sampled_from(voters), unique=True))
    veto = draw(st.lists(st.sampled_from(voters), unique=True, max_size=2))
    quorum: tuple[int, list[str]] | None = None
    if not required or draw(st.booleans()):
        quorum = (
            draw(st.integers(1, n_voters)),
            draw(st.lists(st.sampled_from(voters), unique=True, max_size=2)),
        )
    decision: dict[str, Any] = {"required": required, "veto": veto, "max_rounds": 3}
    if quorum:
        decision["quorum"] = {"min": quorum[0], "including": quorum[1]}

    scenario = Scenario.model_validate(
        {
            "id": "random",
            "title": "Random",
            "description": "a property-test scenario",
            "parties": [*voters, *([mediator] if mediator else [])],
            "mediator": mediator,
            "issues": [
                {
                    "id": i,
                    "label": i,
                    "description": i,
                    "options": [{"id": o, "label": o, "description": o} for o in opts],
                }
                for i, opts in issues.items()
            ],
            "terms": term_spec,
            "preferences": preferences,
            "decision": decision,
        }
    )
    assert check_scenario(scenario) == []
    return Spec(
        voters,
        issues,
        term,
        weights,
        utilities,
        term_points,
        reservation,
        red_lines,
        required,
        veto,
        quorum,
        scenario,
    )


# --------------------------------------------------------------------------- the oracle


@dataclass(frozen=True)
class Judged:
    options: dict[str, str]
    value: Fraction | None
    utility: dict[str, Fraction]
    broken: dict[str, set[str]]
    """Ids of each voter's broken red lines."""

    def package(self, spec: Spec) -> Package:
        terms = {spec.term[0]: float(self.value)} if spec.term and self.value is not None else {}
        return Package(options=self.options, terms=terms)


def interpolate(points: list[tuple[Fraction, int]], x: Fraction) -> Fraction:
    """Piecewise-linear through `points`, constant beyond the first and last."""
    if x <= points[0][0]:
        return Fraction(points[0][1])
    for (x0, u0), (x1, u1) in itertools.pairwise(points):
        if x <= x1:
            return u0 + (u1 - u0) * (x - x0) / (x1 - x0)
    return Fraction(points[-1][1])


def holds(cond: dict[str, Any], options: dict[str, str], value: Fraction | None) -> bool:
    if "issue" in cond:
        return options[cond["issue"]] in cond["options"]
    assert value is not None
    low, high = cond.get("min"), cond.get("max")
    # str() first: the YAML-like spec holds floats such as 0.3, meant as the decimal.
    return (low is None or value >= Fraction(str(low))) and (
        high is None or value <= Fraction(str(high))
    )


def breaks(line: dict[str, Any], options: dict[str, str], value: Fraction | None) -> bool:
    if line["kind"] == "forbid":
        return options[line["issue"]] in line["options"]
    if line["kind"] == "bound":
        return not holds(line, options, value)
    return holds(line["if"], options, value) and not holds(line["then"], options, value)


def judge(spec: Spec, options: dict[str, str], value: Fraction | None) -> Judged:
    utility = {}
    for party in spec.voters:
        w = spec.weights[party]
        u = sum((w[i] * spec.utilities[party][i][o] for i, o in options.items()), Fraction(0))
        if spec.term:
            u += w[spec.term[0]] * interpolate(spec.term_points[party], value or Fraction(0))
        utility[party] = u
    broken = {
        party: {line["id"] for line in spec.red_lines[party] if breaks(line, options, value)}
        for party in spec.voters
    }
    return Judged(options, value, utility, broken)


def all_packages(spec: Spec) -> list[Judged]:
    """Every package, in the grid's C order (issues in order, then the term)."""
    axes: list[list[Any]] = [opts for opts in spec.issues.values()]
    axes.append(spec.term[1] if spec.term else [None])
    out = []
    for combo in itertools.product(*axes):
        options = dict(zip(spec.issues, combo[:-1], strict=True))
        out.append(judge(spec, options, combo[-1]))
    return out


def rational(spec: Spec, j: Judged, party: str) -> bool:
    return j.utility[party] >= spec.reservation[party] and not j.broken[party]


def needed(spec: Spec) -> set[str]:
    """Parties whose acceptance the rule always needs."""
    return {*spec.required, *spec.veto, *(spec.quorum[1] if spec.quorum else [])}


def admissible(spec: Spec, j: Judged) -> bool:
    return not any(j.broken[p] for p in needed(spec))


def rule_passes(spec: Spec, accepts: set[str]) -> bool:
    if not set(spec.required) <= accepts or not set(spec.veto) <= accepts:
        return False
    if spec.quorum is not None:
        least, including = spec.quorum
        return len(accepts) >= least and set(including) <= accepts
    return True


def passes(spec: Spec, j: Judged) -> bool:
    return rule_passes(spec, {p for p in spec.voters if rational(spec, j, p)})


def in_zopa(spec: Spec, j: Judged) -> bool:
    """The zone of agreement: the rule passes the package when every party votes rationally."""
    return passes(spec, j)


def coalitions(spec: Spec, j: Judged) -> list[tuple[str, ...]]:
    """Every smallest set of rational accepters that alone would pass the rule."""
    accepting = [p for p in spec.voters if rational(spec, j, p)]
    for size in range(len(accepting) + 1):
        found = [c for c in itertools.combinations(accepting, size) if rule_passes(spec, set(c))]
        if found:
            return found
    return []


def nash_product(spec: Spec, j: Judged) -> Fraction:
    """The best product of surpluses over the package's minimal winning coalitions."""
    found = coalitions(spec, j)
    if not found:
        return Fraction(0)
    return max(
        math.prod((j.utility[p] - spec.reservation[p] for p in c), start=Fraction(1))
        for c in found
    )


def ks_share(spec: Spec, j: Judged, best: dict[str, Fraction]) -> Fraction:
    """The best, over minimal winning coalitions, of the smallest share of a member's best gain."""
    def share(p: str) -> Fraction:
        gain = best[p] - spec.reservation[p]
        span = gain if gain > 0 else Fraction(1)
        return (j.utility[p] - spec.reservation[p]) / span

    return max(min(share(p) for p in c) for c in coalitions(spec, j))


def dominates(a: Judged, b: Judged, voters: list[str]) -> bool:
    return all(a.utility[p] >= b.utility[p] for p in voters) and any(
        a.utility[p] > b.utility[p] for p in voters
    )


def frontier(spec: Spec, packages: list[Judged]) -> list[Judged]:
    """Admissible packages no admissible package dominates, by comparing every pair."""
    pool = [j for j in packages if admissible(spec, j)]
    return [j for j in pool if not any(dominates(o, j, spec.voters) for o in pool)]


def same_package(report_package: Package, j: Judged) -> bool:
    if report_package.options != j.options:
        return False
    if j.value is None:
        return report_package.terms == {}
    return math.isclose(
        next(iter(report_package.terms.values())), float(j.value), rel_tol=1e-12, abs_tol=1e-12
    )


def find(spec: Spec, packages: list[Judged], report_package: Package) -> Judged:
    matches = [j for j in packages if same_package(report_package, j)]
    assert len(matches) == 1, report_package
    return matches[0]


def close(x: float, exact: Fraction) -> bool:
    return math.isclose(x, float(exact), rel_tol=1e-9, abs_tol=1e-9)


# --------------------------------------------------------------------------- properties


@SETTINGS
@given(spec=scenarios())
def test_counts_match_brute_force(spec: Spec) -> None:
    packages = all_packages(spec)
    report = analyze(spec.scenario)
    assert report.packages == len(packages)
    assert report.admissible == sum(admissible(spec, j) for j in packages)
    assert report.zopa == sum(in_zopa(spec, j) for j in packages)
    assert report.counts.decision_rule == report.zopa
    assert report.counts.required == sum(
        all(rational(spec, j, p) for p in spec.required) for j in packages
    )
    assert report.counts.unanimous == sum(
        all(rational(spec, j, p) for p in spec.voters) for j in packages
    )


@SETTINGS
@given(spec=scenarios())
def test_pareto_frontier_size_matches_pairwise_comparison(spec: Spec) -> None:
    report = analyze(spec.scenario)
    assert report.pareto_frontier == len(frontier(spec, all_packages(spec)))


@SETTINGS
@given(spec=scenarios())
def test_nash_package_is_in_the_zopa_pareto_optimal_and_maximal(spec: Spec) -> None:
    packages = all_packages(spec)
    zopa = [j for j in packages if in_zopa(spec, j)]
    report = analyze(spec.scenario)
    if not zopa:
        assert report.nash is None
        assert report.kalai_smorodinsky is None
        assert report.best_for == {}
        return
    assert report.nash is not None
    nash = find(spec, packages, report.nash.package)
    assert in_zopa(spec, nash) and passes(spec, nash)
    if spec.quorum is None:  # unanimity of the needed parties: the Nash package is Pareto-optimal
        pool = [j for j in packages if admissible(spec, j)]
        assert not any(dominates(o, nash, spec.voters) for o in pool)
    top = max(nash_product(spec, j) for j in zopa)
    assert close(report.nash.nash_product, top)
    assert close(report.nash.nash_product, nash_product(spec, nash))
    best: dict[str, Fraction] = {}
    for party in spec.voters:
        assert close(report.nash.utilities[party], nash.utility[party])
        accepting = [j.utility[party] for j in zopa if rational(spec, j, party)]
        best[party] = max(accepting) if accepting else max(j.utility[party] for j in zopa)
        assert close(report.best_for[party], best[party])
    assert report.kalai_smorodinsky is not None
    ks = find(spec, packages, report.kalai_smorodinsky.package)
    assert in_zopa(spec, ks) and passes(spec, ks)
    assert close(float(ks_share(spec, ks, best)), max(ks_share(spec, j, best) for j in zopa))


@SETTINGS
@given(spec=scenarios())
def test_zopa_never_breaks_a_required_red_line(spec: Spec) -> None:
    """The analysis's own per-package ZOPA verdicts, checked against the oracle's red lines."""
    packages = all_packages(spec)
    space = PackageSpace(spec.scenario)
    ev = space.evaluate(space.columns_for_flat(np.arange(space.total)))
    zopa = zone_of_agreement(space, ev.rational)
    assert len(zopa) == len(packages)
    for in_code_zopa, j in zip(zopa, packages, strict=True):
        if in_code_zopa:
            assert not any(j.broken[p] for p in needed(spec))
        assert bool(in_code_zopa) == in_zopa(spec, j)


@SETTINGS
@given(spec=scenarios(), data=st.data())
def test_score_agrees_with_the_oracle(spec: Spec, data: st.DataObject) -> None:
    packages = all_packages(spec)
    report: Analysis = analyze(spec.scenario, frontier=False)
    chosen = data.draw(st.sampled_from(packages), label="package")
    votes = data.draw(
        st.dictionaries(st.sampled_from(spec.voters), st.sampled_from(["accept", "reject"])),
        label="votes",
    )
    result = score(spec.scenario, chosen.package(spec), votes, analysis=report)
    pool = [j for j in packages if admissible(spec, j)]
    for party in spec.voters:
        got = result.parties[party]
        assert close(got.utility, chosen.utility[party])
        assert close(got.surplus, chosen.utility[party] - spec.reservation[party])
        assert {b.id for b in got.red_lines_broken} == chosen.broken[party]
        assert got.accepting_rational == rational(spec, chosen, party)
        assert got.voted_against_own_red_line == (
            votes.get(party) == "accept" and bool(chosen.broken[party])
        )
    assert result.deal.required_red_lines_hold == admissible(spec, chosen)
    assert result.deal.pareto_optimal == (not any(dominates(o, chosen, spec.voters) for o in pool))
    assert close(result.deal.nash_product, nash_product(spec, chosen))
    assert close(result.deal.min_utility, min(chosen.utility.values()))


@SETTINGS
@given(spec=scenarios())
def test_no_deal_scores_the_reservations(spec: Spec) -> None:
    packages = all_packages(spec)
    result = score(spec.scenario, None)
    for party in spec.voters:
        assert result.parties[party].utility == spec.reservation[party]
        assert result.parties[party].red_lines_broken == []
    pool = [j for j in packages if admissible(spec, j)]
    beaten = any(
        all(o.utility[p] >= spec.reservation[p] for p in spec.voters)
        and any(o.utility[p] > spec.reservation[p] for p in spec.voters)
        for o in pool
    )
    assert result.deal.pareto_optimal == (not beaten)
    # Everyone at the walk-away: every surplus, and so every coalition product, is 0.
    assert close(result.deal.nash_product, Fraction(0))


# --------------------------------------------------------------------------- regressions


def _two_party(decision: dict[str, Any], red_lines: list[dict[str, Any]]) -> Scenario:
    """p0 and p1 over one issue and a term on the grid 0.2, 0.3 (0.2 + 0.1 is not 0.3 in floats)."""
    prefs = {
        party: {
            "weights": {"i0": 0.5, "t0": 0.5},
            "utilities": {"i0": {"o0": u, "o1": 100 - u}},
            "term_utilities": {"t0": [[0.2, 0], [0.3, 100]]},
            "reservation_utility": 10,
            "red_lines": red_lines if party == "p0" else [],
        }
        for party, u in (("p0", 100), ("p1", 0))
    }
    return Scenario.model_validate(
        {
            "id": "regression",
            "title": "R",
            "description": "R",
            "parties": ["p0", "p1"],
            "issues": [
                {
                    "id": "i0",
                    "label": "I",
                    "description": "I",
                    "options": [
                        {"id": "o0", "label": "O0", "description": "O0"},
                        {"id": "o1", "label": "O1", "description": "O1"},
                    ],
                }
            ],
            "terms": [
                {
                    "id": "t0",
                    "label": "T",
                    "description": "T",
                    "unit": "u",
                    "min": 0.2,
                    "max": 0.3,
                    "step": 0.1,
                }
            ],
            "preferences": prefs,
            "decision": {"max_rounds": 3, **decision},
        }
    )


def test_a_grid_value_on_a_bound_does_not_break_it() -> None:
    bound = {"id": "cap", "description": "at most 0.3", "kind": "bound", "term": "t0", "max": 0.3}
    conditional = {
        "id": "if_o1",
        "description": "o1 needs t0 >= 0.3",
        "kind": "conditional",
        "if": {"issue": "i0", "options": ["o1"]},
        "then": {"term": "t0", "min": 0.3},
    }
    scenario = _two_party({"required": ["p0", "p1"]}, [bound, conditional])
    report = analyze(scenario)
    assert report.admissible == 3  # only (o1, 0.2) breaks the conditional
    result = score(scenario, Package(options={"i0": "o1"}, terms={"t0": 0.3}), analysis=report)
    assert result.parties["p0"].red_lines_broken == []
    assert result.deal.required_red_lines_hold


def test_a_quorum_only_rule_is_analyzed() -> None:
    scenario = _two_party({"required": [], "quorum": {"min": 1}}, [])
    report = analyze(scenario)
    assert report.zopa == report.packages == 4
    # No required party: every share ties and the larger sum of utilities decides.
    assert report.kalai_smorodinsky is not None
    assert report.kalai_smorodinsky.package.terms == {"t0": pytest.approx(0.3)}


# --------------------------------------------------------------------------- chunking at scale


def _synthetic() -> Any:
    path = Path(__file__).parents[1] / "bench" / "synthetic.py"
    spec = importlib.util.spec_from_file_location("detente_bench_synthetic", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.synthetic_scenario


def test_chunking_does_not_change_the_analysis_of_ten_thousand_packages() -> None:
    scenario = _synthetic()(4, 10, seed=1)
    whole = analyze(scenario)
    chunked = analyze(scenario, chunk_size=1000)
    assert whole.packages == 10**4
    assert whole.zopa > 0
    assert chunked.pareto_frontier == whole.pareto_frontier
    assert chunked == whole


def test_frontier_decomposition_matches_brute_force_on_ten_thousand_packages() -> None:
    """The Minkowski-sum frontier against a plain pairwise skyline of the admissible set."""
    scenario = _synthetic()(3, 8, seed=2, term_values=8)
    space = PackageSpace(scenario)
    ev = space.evaluate(space.columns_for_flat(np.arange(space.total)))
    points = ev.utilities[ev.admissible]
    dominated = np.zeros(len(points), dtype=bool)
    for start in range(0, len(points), 256):
        block = points[start : start + 256]
        weakly = (points[None, :, :] >= block[:, None, :] - 1e-9).all(axis=2)
        strictly = (points[None, :, :] > block[:, None, :] + 1e-9).any(axis=2)
        dominated[start : start + 256] = (weakly & strictly).any(axis=1)
    assert analyze(scenario).pareto_frontier == int((~dominated).sum())


# --------------------------------------------------------------------------- decision rules

QUORUM = Path(__file__).parent / "data" / "quorum" / "scenario.yaml"


def test_on_a_quorum_with_vetoes_nash_and_kalai_smorodinsky_pass_the_rule() -> None:
    """At least 5 of 6 must accept, p1 and p5 holding vetoes, nobody `required`: the package
    with the highest total, (x1, y1) or (x1, y5), is accepted by four parties only."""
    from detente.analysis import passes_rule
    from detente.loading import load_scenario

    scenario = load_scenario(QUORUM)
    report = analyze(scenario)
    space = PackageSpace(scenario)
    assert report.zopa == 5
    assert report.nash is not None and report.kalai_smorodinsky is not None
    for found in (report.nash, report.kalai_smorodinsky):
        ev = space.evaluate(space.columns_for_packages([found.package]))
        assert passes_rule(space, ev.rational)[0], found.package
        assert int(ev.rational[0].sum()) >= 5
    # p6 falls below its walk-away there: the coalition that passes it is p1-p5.
    assert report.nash.package.options == {"x": "x2", "y": "y5"}
    assert report.nash.coalition == ["p1", "p2", "p3", "p4", "p5"]
    assert report.nash.nash_product == pytest.approx(25**4 * 2.5)
    assert "at least 5 of the 6 voting parties" in report.rule
