"""`detente.sensitivity` against brute force: change one number, recount the zone by hand.

The oracle below enumerates every package with itertools, scores it with plain Python (weighted
utilities, piecewise-linear terms, red lines read from the scenario), and applies the decision
rule as the README defines the zone of agreement: the packages the rule passes when every
voting party accepts exactly when it accepts rationally. For each party, the walk-away value or
one weight (the others rescaled to keep the sum at 1) is changed in a copy of the scenario and
the zone recounted; the sensitivity report must give the same sizes, and its non-empty ranges
must hold just inside their ends and fail just outside.
"""

from __future__ import annotations

import itertools
import json
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from detente.analysis import analyze
from detente.loading import load_scenario
from detente.scenario import (
    BoundRedLine,
    Condition,
    ConditionalRedLine,
    ForbidRedLine,
    Scenario,
)
from detente.sensitivity import RESERVATION_GRID, WEIGHT_GRID, Sensitivity, sensitivity
from helpers import Cli

DATA = Path(__file__).parent / "data"
TINY = DATA / "tiny" / "scenario.yaml"
QUORUM = DATA / "quorum" / "scenario.yaml"
BASELINE = Path(__file__).parents[1] / "scenarios" / "baseline.yaml"


# --------------------------------------------------------------------------- the oracle


def _holds(cond: Condition, options: dict[str, str], terms: dict[str, float]) -> bool:
    if cond.issue is not None:
        return options[cond.issue] in (cond.options or [])
    value = terms[str(cond.term)]
    return (cond.min is None or value >= cond.min - 1e-9) and (
        cond.max is None or value <= cond.max + 1e-9)


def _broken(line: Any, options: dict[str, str], terms: dict[str, float]) -> bool:
    if isinstance(line, ForbidRedLine):
        return options[line.issue] in line.options
    if isinstance(line, BoundRedLine):
        return not _holds(Condition(term=line.term, min=line.min, max=line.max), options, terms)
    assert isinstance(line, ConditionalRedLine)
    return _holds(line.if_, options, terms) and not _holds(line.then, options, terms)


def oracle_zopa(scenario: Scenario) -> int:
    rule = scenario.decision
    needed = set(rule.required) | set(rule.veto) | set(rule.quorum.including if rule.quorum
                                                     else [])
    grids = [[(i.id, o) for o in i.option_ids()] for i in scenario.issues]
    term_grids = [[(t.id, float(v)) for v in t.values()] for t in scenario.terms]
    count = 0
    for combo in itertools.product(*grids, *term_grids):
        options = {k: v for k, v in combo[: len(grids)]}
        terms = {k: v for k, v in combo[len(grids):]}
        accepting = set()
        for party in scenario.voters:
            prefs = scenario.preferences[party]
            u = sum(prefs.weights[i] * prefs.utilities[i][o] for i, o in options.items())
            for t, value in terms.items():
                xs, us = zip(*prefs.term_utilities[t], strict=True)
                u += prefs.weights[t] * float(np.interp(value, xs, us))
            if u >= prefs.reservation_utility - 1e-9 and not any(
                _broken(line, options, terms) for line in prefs.red_lines
            ):
                accepting.add(party)
        if needed <= accepting and (rule.quorum is None or len(accepting) >= rule.quorum.min):
            count += 1
    return count


def with_reservation(scenario: Scenario, party: str, value: float) -> Scenario:
    prefs = scenario.preferences[party].model_copy(update={"reservation_utility": value})
    return scenario.model_copy(update={"preferences": {**scenario.preferences, party: prefs}})


def with_weight(scenario: Scenario, party: str, dim: str, value: float) -> Scenario:
    weights = dict(scenario.preferences[party].weights)
    rest = 1 - weights[dim]
    if rest > 1e-12:
        weights = {d: (value if d == dim else w * (1 - value) / rest) for d, w in weights.items()}
    else:
        share = (1 - value) / (len(weights) - 1)
        weights = {d: (value if d == dim else share) for d in weights}
    prefs = scenario.preferences[party].model_copy(update={"weights": weights})
    return scenario.model_copy(update={"preferences": {**scenario.preferences, party: prefs}})


# --------------------------------------------------------------------------- small scenarios


def random_scenario(seed: int) -> Scenario:
    """Three or four voters, two or three issues, maybe a term, red lines and a random rule."""
    rng = np.random.default_rng(seed)
    voters = [f"p{k}" for k in range(int(rng.integers(3, 5)))]
    issues = []
    for i in range(int(rng.integers(2, 4))):
        n = int(rng.integers(2, 5))
        issues.append({"id": f"i{i}", "label": f"I{i}", "description": "an issue",
                       "options": [{"id": f"i{i}o{k}", "label": "o", "description": "o"}
                                   for k in range(n)]})
    terms = ([{"id": "t", "label": "T", "description": "a term", "unit": "u", "min": 0,
               "max": 20, "step": 10}] if rng.random() < 0.6 else [])
    dims = [i["id"] for i in issues] + [t["id"] for t in terms]
    preferences = {}
    for party in voters:
        raw = rng.random(len(dims)) + 0.05
        if rng.random() < 0.2:  # a party that weighs one dimension only
            raw = np.zeros(len(dims))
            raw[0] = 1.0
        weights = raw / raw.sum()
        weights[-1] = 1 - weights[:-1].sum()
        red_lines: list[dict[str, Any]] = []
        if rng.random() < 0.5:
            issue = issues[int(rng.integers(len(issues)))]
            red_lines.append({"id": "no_pole", "kind": "forbid", "issue": issue["id"],
                              "options": [issue["options"][0]["id"]], "description": "d"})
        if terms and rng.random() < 0.3:
            red_lines.append({"id": "t_cap", "kind": "bound", "term": "t", "max": 10,
                              "description": "d"})
        preferences[party] = {
            "weights": dict(zip(dims, weights.tolist(), strict=True)),
            "utilities": {i["id"]: {o["id"]: float(rng.integers(0, 101)) for o in i["options"]}
                          for i in issues},
            "term_utilities": {"t": [[0, float(rng.integers(0, 101))],
                                     [20, float(rng.integers(0, 101))]]} if terms else {},
            "reservation_utility": float(rng.integers(20, 70)),
            "red_lines": red_lines,
        }
    kind = seed % 3
    if kind == 0:
        decision: dict[str, Any] = {"required": voters, "max_rounds": 3}
    elif kind == 1:
        decision = {"required": voters[:2], "max_rounds": 3}
    else:
        decision = {"required": [], "veto": [voters[0]],
                    "quorum": {"min": len(voters) - 1}, "max_rounds": 3}
    return Scenario.model_validate({
        "id": f"random_{seed}", "title": "random", "description": "random",
        "parties": voters, "issues": issues, "terms": terms, "preferences": preferences,
        "decision": decision,
    })


def _scenarios() -> list[tuple[str, Scenario]]:
    return ([("tiny", load_scenario(TINY)), ("quorum", load_scenario(QUORUM))]
            + [(f"random-{seed}", random_scenario(seed)) for seed in range(8)])


SCENARIOS = _scenarios()


@cache
def report_of(name: str) -> Sensitivity:
    return sensitivity(dict(SCENARIOS)[name])


# --------------------------------------------------------------------------- walk-away values


@pytest.mark.parametrize(("name", "scenario"), SCENARIOS, ids=[n for n, _ in SCENARIOS])
def test_walk_away_sizes_match_brute_force(name: str, scenario: Scenario) -> None:
    report = report_of(name)
    assert report.zopa == oracle_zopa(scenario)
    for row in report.reservation:
        assert row.zopa == report.zopa  # at the current value
        for point in row.sizes[::5] + row.around:
            assert point.zopa == oracle_zopa(with_reservation(scenario, row.party, point.value)), (
                row.party, point.value)
        assert row.sizes[0].zopa == row.largest  # utilities are never below 0


@pytest.mark.parametrize(("name", "scenario"), SCENARIOS, ids=[n for n, _ in SCENARIOS])
def test_walk_away_range_is_exact(name: str, scenario: Scenario) -> None:
    for row in report_of(name).reservation:
        if row.always:
            assert row.nonempty_up_to is None
            assert oracle_zopa(with_reservation(scenario, row.party, 100)) > 0
            continue
        if row.nonempty_up_to is None:
            assert row.largest == 0
            assert oracle_zopa(with_reservation(scenario, row.party, 0)) == 0
            continue
        edge = row.nonempty_up_to
        assert oracle_zopa(with_reservation(scenario, row.party, edge)) > 0
        if edge + 1e-6 <= 100:
            assert oracle_zopa(with_reservation(scenario, row.party, edge + 1e-6)) == 0
        assert row.largest_below is not None
        assert oracle_zopa(with_reservation(scenario, row.party, row.largest_below)) == row.largest
        below = max(row.largest_below - 1e-6, 0)
        assert oracle_zopa(with_reservation(scenario, row.party, below)) == row.largest


# --------------------------------------------------------------------------- weights


@pytest.mark.parametrize(("name", "scenario"), SCENARIOS, ids=[n for n, _ in SCENARIOS])
def test_weight_sizes_match_brute_force(name: str, scenario: Scenario) -> None:
    for row in report_of(name).weights:
        assert row.zopa == report_of(name).zopa
        for point in row.sizes[::2]:
            changed = with_weight(scenario, row.party, row.dimension, point.value)
            assert point.zopa == oracle_zopa(changed), (row.party, row.dimension, point.value)


@pytest.mark.parametrize(("name", "scenario"), SCENARIOS, ids=[n for n, _ in SCENARIOS])
def test_weight_ranges_are_exact(name: str, scenario: Scenario) -> None:
    for row in report_of(name).weights:
        def size(w: float, row: Any = row) -> int:
            return oracle_zopa(with_weight(scenario, row.party, row.dimension, w))

        for lo, hi in row.nonempty:
            assert 0 <= lo <= hi <= 1
            assert size(lo) > 0 and size(hi) > 0 and size((lo + hi) / 2) > 0
            for outside in (lo - 1e-6, hi + 1e-6):
                if 0 <= outside <= 1 and not any(a <= outside <= b for a, b in row.nonempty):
                    assert size(outside) == 0, (row.party, row.dimension, outside)
        if not row.nonempty:
            assert all(p.zopa == 0 for p in row.sizes)


def test_a_weight_range_ends_inside_the_unit_interval_somewhere() -> None:
    ends = [(name, row.party, row.dimension, row.nonempty) for name, _ in SCENARIOS
            for row in report_of(name).weights if row.nonempty and row.nonempty != [(0, 1)]]
    assert ends, "the random scenarios never exercise an interior end of a weight range"


# --------------------------------------------------------------------------- the baseline


def test_baseline_sensitivity_agrees_with_the_analysis() -> None:
    scenario = load_scenario(BASELINE)
    report = sensitivity(scenario)
    zopa = analyze(scenario, frontier=False).zopa
    assert report.zopa == zopa
    assert {r.party for r in report.reservation} == set(scenario.voters)
    assert len(report.weights) == len(scenario.voters) * len(scenario.dimension_ids())
    for row in report.reservation:
        assert row.zopa == zopa
        assert row.size_at(100) <= zopa <= row.size_at(0)
        sizes = [p.zopa for p in row.sizes]
        assert sizes == sorted(sizes, reverse=True)  # a higher walk-away never adds a package
        if row.nonempty_up_to is not None:
            changed = with_reservation(scenario, row.party, row.nonempty_up_to + 0.01)
            assert analyze(changed, frontier=False).zopa == 0
    for row in report.weights:
        assert row.zopa == zopa
    assert [p.value for p in report.reservation[0].sizes] == RESERVATION_GRID
    assert [p.value for p in report.weights[0].sizes] == WEIGHT_GRID


# --------------------------------------------------------------------------- command line


def test_analyze_sensitivity_json_and_text(cli: Cli) -> None:
    result = cli("analyze", TINY, "--json", "--sensitivity", "--no-frontier")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    moves = Sensitivity.model_validate(data["sensitivity"])
    assert moves == sensitivity(load_scenario(TINY))
    assert moves.zopa == data["zopa"] == 4
    # a and b are required; c is not, so the zone never depends on c's walk-away value.
    by_party = {r.party: r for r in moves.reservation}
    assert by_party["c"].always == 4 and by_party["c"].size_at(100) == 4
    assert by_party["a"].always == 0 and by_party["a"].nonempty_up_to == 65

    text = cli("analyze", TINY, "--sensitivity", "--no-frontier")
    assert text.returncode == 0, text.stderr
    assert "Walk-away (reservation) utility of one party" in text.stdout
    assert "<= 65.00" in text.stdout and "at any value" in text.stdout
    assert "One weight of one party" in text.stdout

    plain = cli("analyze", TINY, "--json", "--no-frontier")
    assert "sensitivity" not in json.loads(plain.stdout)
