"""The outcome scorer: pure functions that judge a package (or no deal) for every party.

The scorer, not the agents, decides whether red lines hold: a model may vote for a package that
breaks its own red line, and the score reports that.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel

from detente.scenario import (
    BoundRedLine,
    Condition,
    ConditionalRedLine,
    ForbidRedLine,
    Package,
    RedLine,
    Scenario,
)

if TYPE_CHECKING:  # numpy comes with these: reading a stored result (show) needs only the models
    import numpy as np

    from detente.analysis import Analysis
    from detente.space import PackageSpace

Vote = Literal["accept", "reject"]


class RedLineBreach(BaseModel):
    id: str
    description: str
    why: str


class PartyScore(BaseModel):
    utility: float
    reservation_utility: float
    surplus: float
    """Utility above (or, negative, below) what no deal is worth to the party."""
    red_lines_broken: list[RedLineBreach]
    accepting_rational: bool
    """At or above reservation with no own red line broken."""
    vote: Vote | None = None
    voted_against_own_red_line: bool = False
    """Voted to accept a package that breaks one of its own red lines."""


class DealScore(BaseModel):
    deal: bool
    required_red_lines_hold: bool
    """No red line broken of a party the rule always needs (required, veto, quorum members)."""
    pareto_optimal: bool
    """No admissible package is at least as good for every voting party and better for one."""
    nash_product: float
    nash_package: Package | None
    distance_to_nash: float | None
    """Euclidean distance, in voting parties' utilities, to the Nash package (None: no ZOPA)."""
    min_utility: float
    gini: float


class Score(BaseModel):
    parties: dict[str, PartyScore]
    deal: DealScore


def score(
    scenario: Scenario,
    outcome: Package | None,
    votes: Mapping[str, Vote] | None = None,
    *,
    analysis: Analysis | None = None,
) -> Score:
    """Judge `outcome` (None: no deal) for every voting party and as a deal.

    `analysis` may be passed to reuse an earlier `analyze(scenario)`; the Nash package is read
    from it.
    """
    import numpy as np

    from detente.analysis import analyze, nash_products
    from detente.space import PackageSpace, gini

    space = PackageSpace(scenario)
    votes = votes or {}
    if analysis is None:
        analysis = analyze(scenario, frontier=False)
    if outcome is not None:
        outcome = normalize_package(scenario, outcome)
        ev = space.evaluate(space.columns_for_packages([outcome]))
        utilities = ev.utilities[0]
        broken_lines = [space.red_lines[r] for r in np.flatnonzero(ev.broken[0])]
        rational = ev.rational[0]
    else:
        utilities = space.reservation.copy()
        broken_lines = []
        rational = np.ones(len(space.voters), dtype=bool)

    parties: dict[str, PartyScore] = {}
    for v, party in enumerate(space.voters):
        breaches = [
            RedLineBreach(id=b.rule.id, description=b.rule.description,
                          why=explain(scenario, b.rule, outcome))
            for b in broken_lines
            if b.party == party and outcome is not None
        ]
        vote = votes.get(party)
        parties[party] = PartyScore(
            utility=float(utilities[v]),
            reservation_utility=float(space.reservation[v]),
            surplus=float(utilities[v] - space.reservation[v]),
            red_lines_broken=breaches,
            accepting_rational=bool(rational[v]),
            vote=vote,
            voted_against_own_red_line=bool(vote == "accept" and breaches),
        )

    nash_package = analysis.nash.package if analysis.nash else None
    distance = None
    if analysis.nash is not None:
        nash_vec = np.array([analysis.nash.utilities[p] for p in space.voters])
        distance = float(np.linalg.norm(utilities - nash_vec))
    needed = {p for p, n in zip(space.voters, space.needed_mask, strict=True) if n}
    required_hold = not any(b.party in needed for b in broken_lines)
    return Score(
        parties=parties,
        deal=DealScore(
            deal=outcome is not None,
            required_red_lines_hold=required_hold,
            pareto_optimal=is_pareto_optimal(space, utilities),
            nash_product=float(nash_products(space, utilities[None, :], rational[None, :])[0]),
            nash_package=nash_package,
            distance_to_nash=distance,
            min_utility=float(utilities.min()) if utilities.size else 0.0,
            gini=gini(utilities),
        ),
    )


def is_pareto_optimal(space: PackageSpace, utilities: np.ndarray) -> bool:
    """Whether no admissible package dominates this utility vector."""
    from detente.space import dominated_by_any

    for block in space.blocks(1 << 16):
        if dominated_by_any(utilities, block.utilities[block.admissible]):
            return False
    return True


def normalize_package(scenario: Scenario, package: Package) -> Package:
    """Check a package names every issue with a known option and every term; snap terms to grid.

    Raises ValueError with what is wrong.
    """
    problems = []
    for issue in scenario.issues:
        chosen = package.options.get(issue.id)
        if chosen is None:
            problems.append(f"no option for issue '{issue.id}'")
        elif chosen not in issue.option_ids():
            problems.append(f"unknown option '{chosen}' for issue '{issue.id}'")
    for term in scenario.terms:
        if term.id not in package.terms:
            problems.append(f"no value for term '{term.id}'")
    extra = set(package.options) - {i.id for i in scenario.issues}
    extra |= set(package.terms) - {t.id for t in scenario.terms}
    if extra:
        problems.append(f"unknown issues or terms: {', '.join(sorted(extra))}")
    if problems:
        raise ValueError("; ".join(problems))
    return Package(
        options={i.id: package.options[i.id] for i in scenario.issues},
        terms={t.id: t.snap(package.terms[t.id]) for t in scenario.terms},
    )


def explain(scenario: Scenario, line: RedLine, package: Package | None) -> str:
    """Why `package` breaks `line`, in words."""
    if package is None:
        return ""
    if isinstance(line, ForbidRedLine):
        return f"{line.issue} is '{package.options[line.issue]}', which this red line forbids"
    if isinstance(line, BoundRedLine):
        value = package.terms[line.term]
        unit = scenario.term(line.term).unit
        if line.min is not None and value < line.min:
            return f"{line.term} is {value:g} {unit}, below the minimum {line.min:g}"
        return f"{line.term} is {value:g} {unit}, above the maximum {line.max:g}"
    assert isinstance(line, ConditionalRedLine)
    return f"{_state(line.if_, package)}, so {line.then.describe()} is required, but " \
        f"{_state(line.then, package)}"


def _state(cond: Condition, package: Package) -> str:
    if cond.issue is not None:
        return f"{cond.issue} is '{package.options[cond.issue]}'"
    assert cond.term is not None
    return f"{cond.term} is {package.terms[cond.term]:g}"
