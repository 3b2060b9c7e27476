"""Scripted agents: deterministic negotiators and mediators from the negotiation literature.

They are baselines for the LLM agents and the engine's own test players, so every turn is a pure
function of the agent's private view of the scenario and the `Context` it is given: no model, no
randomness, no token usage.

- `TimeDependentNegotiator` (Faratin, Sierra & Jennings 1998): a voting party whose aspiration
  falls from its best achievable utility to its reservation utility over the rounds, slowly
  (Boulware), steadily (linear) or fast (Conceder). It never accepts a package that breaks one of
  its own red lines and, when it rejects, says per issue what the nearest package it could accept
  would change.
- `NashMediator`: tables the package maximizing the product of the parties' utilities as
  *estimated from their stated positions*; a mediator holds no preferences, so it cannot know the
  real ones.
- `SingleTextMediator` (Raiffa's single negotiating text): starts from the middle of every issue
  and revises the last rejected text one step at a time toward what a majority objected to.
- `SaboteurNegotiator`: the `saboteur` incentive. A time-dependent negotiator that rejects, with
  a hard bargainer's objections, every package its own acceptance could pass.

Agents are built from a `private_view` and only ever read their own party's preferences.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TypeVar

import numpy as np

from detente.agents.base import (
    Agent,
    CaucusContent,
    Context,
    OpeningContent,
    ProposalContent,
    ResponseContent,
    Turn,
)
from detente.agents.valuation import PartyValuer
from detente.analysis import analyze, nash_products, zone_of_agreement
from detente.events import ORACLE_STRATEGY, AgentSettings, IssueStance, Usage
from detente.scenario import Package, Scenario
from detente.space import PackageSpace

CONCESSION_EXPONENTS: dict[str, float] = {"boulware": 0.2, "linear": 1.0, "conceder": 5.0}
"""Faratin et al.'s concession exponent e: aspiration(t) = U_max - (U_max - U_res)(t/T)^(1/e)."""

MEDIATOR_STRATEGIES = ("nash", "snt", ORACLE_STRATEGY)
"""The built-in scripted mediators (see `detente.builtins` for every registered one)."""

_TOL = 1e-9
"""Utilities are sums of floats: within this of a threshold counts as reaching it."""
NASH_EPSILON = 1e-3
"""Added to each estimated utility so that one party at zero does not flatten the product."""
_CHUNK = 1 << 16

C = TypeVar("C")


def _timed(make: Callable[[], C]) -> Turn[C]:
    """Run one turn and report its wall-clock latency; scripted turns use no tokens."""
    start = time.perf_counter()
    content = make()
    return Turn(content=content, usage=Usage(), latency=time.perf_counter() - start)


def _first_best(candidates: np.ndarray, *keys: np.ndarray) -> int:
    """Flat index of the first candidate minimizing `keys` lexicographically (within `_TOL`).

    Comparing within a tolerance, rather than `np.lexsort`, keeps ties that differ only by float
    noise tied, so the final tie-break (lowest index) is the deterministic one.
    """
    idx = np.flatnonzero(candidates)
    for key in keys:
        values = key[idx]
        idx = idx[values <= values.min() + _TOL]
    return int(idx[0])


Mask = Callable[[np.ndarray], np.ndarray]
"""Flat indices of a chunk of the grid -> one boolean or float per package."""


def _flat_chunks(total: int, chunk: int = _CHUNK) -> Iterator[np.ndarray]:
    for start in range(0, total, chunk):
        yield np.arange(start, min(start + chunk, total), dtype=np.int64)


def _first_best_chunked(total: int, candidates: Mask, *keys: Mask) -> int:
    """`_first_best` over the whole grid, computed chunk by chunk: no array of the grid's size
    is ever held. One pass per key finds its minimum among the packages tied on the keys
    before it; a last pass returns the first package tied on all of them (the same package
    `_first_best` picks)."""
    mins: list[float] = []

    def tied(flat: np.ndarray) -> np.ndarray:
        mask = candidates(flat)
        for key, low in zip(keys, mins, strict=False):
            if not mask.any():
                break
            mask = mask & (key(flat) <= low + _TOL)
        return mask

    for key in keys:
        low = np.inf
        for flat in _flat_chunks(total):
            mask = tied(flat)
            if mask.any():
                low = min(low, float(key(flat)[mask].min()))
        mins.append(low)
    for flat in _flat_chunks(total):
        mask = tied(flat)
        if mask.any():
            return int(flat[np.flatnonzero(mask)[0]])
    raise ValueError("no candidate package")


def _any_chunked(total: int, mask: Mask) -> bool:
    return any(bool(mask(flat).any()) for flat in _flat_chunks(total))


def _join(items: Sequence[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


class _Grid:
    """The public shape of a scenario's package space: what every agent may know.

    A package is a point of D coordinates: the option index for an issue, the value for a term.
    Distances are normalized per dimension (option steps over n - 1, values over the range) so
    that an issue with six options and a term of 26 grid values weigh alike.
    """

    def __init__(self, scenario: Scenario) -> None:
        self.issues = scenario.issues
        self.terms = scenario.terms
        self.n_issues = len(self.issues)
        self.dimension_ids = scenario.dimension_ids()
        self.option_ids = [i.option_ids() for i in self.issues]
        self.term_values = [t.values() for t in self.terms]
        self.sizes = tuple(len(o) for o in self.option_ids) + tuple(
            len(v) for v in self.term_values
        )
        self.total = math.prod(self.sizes)
        self.scales = np.array(
            [max(len(o) - 1, 1) for o in self.option_ids]
            + [max(t.max - t.min, _TOL) for t in self.terms],
            dtype=np.float64,
        )
        self.axes: list[np.ndarray] = [
            np.arange(len(o), dtype=np.float64) for o in self.option_ids
        ] + [v.astype(np.float64) for v in self.term_values]
        """Coordinate of every grid position, per dimension."""

    # ------------------------------------------------------------------ packages <-> points

    def points(self, flat: np.ndarray) -> np.ndarray:
        """(n, D) coordinates of the packages at `flat` (C order over `sizes`)."""
        indices = np.unravel_index(flat, self.sizes)
        return np.stack([self.axes[k][ix] for k, ix in enumerate(indices)], axis=1)

    def point(self, package: Package) -> np.ndarray:
        """(D,) coordinates of `package`; NaN where it names an unknown option or lacks a term."""
        out = np.full(len(self.dimension_ids), np.nan)
        for k, issue in enumerate(self.issues):
            option = package.options.get(issue.id)
            if option in self.option_ids[k]:
                out[k] = self.option_ids[k].index(option)
        for j, term in enumerate(self.terms):
            if term.id in package.terms:
                out[self.n_issues + j] = package.terms[term.id]
        return out

    def grid_index(self, k: int, value: float) -> float:
        """Fractional grid position of coordinate `value` of dimension k, clamped to the grid."""
        if k < self.n_issues:
            return min(max(value, 0.0), self.sizes[k] - 1.0)
        term = self.terms[k - self.n_issues]
        return min(max((value - term.min) / term.step, 0.0), self.sizes[k] - 1.0)

    def positions(self, point: np.ndarray) -> list[int]:
        """Grid position of each coordinate of `point`; -1 where it is off the grid or unknown."""
        out: list[int] = []
        for k, value in enumerate(point):
            if np.isnan(value):
                out.append(-1)
                continue
            pos = round(self.grid_index(k, float(value)))
            on_grid = abs(self.axes[k][pos] - value) <= _TOL * max(1.0, abs(float(value)))
            out.append(pos if on_grid else -1)
        return out

    def flat_of(self, package: Package) -> int | None:
        """Grid index of `package`, or None when it is off the grid (e.g. a term between steps)."""
        index = self.positions(self.point(package))
        if min(index) < 0:
            return None
        return int(np.ravel_multi_index(tuple(index), self.sizes))

    def flats_of(self, packages: Sequence[Package]) -> np.ndarray:
        flats = {f for f in (self.flat_of(p) for p in packages) if f is not None}
        return np.array(sorted(flats), dtype=np.int64)

    def package_at_indices(self, index: Sequence[int]) -> Package:
        return Package(
            options={
                issue.id: self.option_ids[k][index[k]] for k, issue in enumerate(self.issues)
            },
            terms={
                term.id: float(self.term_values[j][index[self.n_issues + j]])
                for j, term in enumerate(self.terms)
            },
        )

    def package_at(self, flat: int) -> Package:
        index = np.unravel_index(flat, self.sizes)
        return self.package_at_indices([int(i) for i in index])

    def middle_indices(self) -> list[int]:
        """The middle option of every issue (the lower one if even) and mid-range of every term."""
        middle = [(len(o) - 1) // 2 for o in self.option_ids]
        for term in self.terms:
            middle.append(round((term.snap((term.min + term.max) / 2) - term.min) / term.step))
        return middle

    # ------------------------------------------------------------------ words

    def dimension_label(self, k: int) -> str:
        return self.issues[k].label if k < self.n_issues else self.terms[k - self.n_issues].label

    def value_label(self, k: int, value: float) -> str:
        if k < self.n_issues:
            if np.isnan(value):
                return "an unknown option"
            return self.issues[k].options[int(value)].label
        return f"{value:g} {self.terms[k - self.n_issues].unit}"

    def describe(self, point: np.ndarray) -> str:
        return "; ".join(
            f"{self.dimension_label(k)}: {self.value_label(k, float(v))}"
            for k, v in enumerate(point)
        )

    def stance_value(self, k: int, value: float) -> str | float:
        """What an `IssueStance.wants` holds for coordinate `value`: an option id or a number."""
        return self.option_ids[k][int(value)] if k < self.n_issues else float(value)

    def wanted(self, k: int, stance: IssueStance | None, table: np.ndarray | None) -> float | None:
        """The coordinate a party asked for on dimension k: its `wants` if it objected, else the
        tabled value; None when the stance says nothing usable (e.g. a malformed `wants`)."""
        if stance is None:
            return None
        if stance.stance == "object":
            wants = stance.wants
            if k < self.n_issues:
                if isinstance(wants, str) and wants in self.option_ids[k]:
                    return float(self.option_ids[k].index(wants))
                return None
            try:
                return float(wants) if wants is not None else None
            except ValueError:
                return None
        if table is None or np.isnan(table[k]):
            return None
        return float(table[k])

    def targets(self, ctx: Context, parties: Sequence[str]) -> dict[str, np.ndarray]:
        """Each party's stated target per dimension (NaN: unknown); parties with none left out."""
        table = self.point(ctx.table) if ctx.table is not None else None
        out: dict[str, np.ndarray] = {}
        for party in parties:
            stances = ctx.positions.get(party)
            if not stances:
                continue
            row = np.array(
                [
                    np.nan if (w := self.wanted(k, stances.get(d), table)) is None else w
                    for k, d in enumerate(self.dimension_ids)
                ]
            )
            if not np.isnan(row).all():
                out[party] = row
        return out


# =========================================================================== negotiators


class TimeDependentNegotiator:
    """A voting party with a time-dependent concession tactic (Faratin, Sierra & Jennings 1998)."""

    def __init__(self, party: str, scenario: Scenario, strategy: str = "linear") -> None:
        if strategy not in CONCESSION_EXPONENTS:
            raise ValueError(f"unknown negotiator strategy '{strategy}'; expected one of: "
                             f"{', '.join(CONCESSION_EXPONENTS)}")
        if party == scenario.mediator or party not in scenario.preferences:
            raise ValueError(f"a '{strategy}' negotiator plays a voting party and needs its own "
                             f"preferences; '{party}' has none in this view")
        self.party = party
        self.strategy = strategy
        self.exponent = CONCESSION_EXPONENTS[strategy]
        self.settings = AgentSettings(kind="scripted", strategy=strategy)
        self.scenario = scenario
        self.preferences = scenario.preferences[party]
        self.reservation = self.preferences.reservation_utility
        self._grid = _Grid(scenario)
        self._space = PartyValuer(scenario, party).space

        # One utility and one red-line verdict per package, computed once (about 9 bytes a
        # package); the packages themselves are never held: each turn walks the grid in chunks.
        total = self._grid.total
        self._utility = np.empty(total)
        self._ok = np.empty(total, dtype=bool)
        for flat, columns in self._space.chunks(_CHUNK):
            ev = self._space.evaluate(columns)
            self._utility[flat] = ev.utilities[:, 0]
            self._ok[flat] = ~ev.broken.any(axis=1)
        # With every package breaking a red line there is nothing to aim for but utility.
        self._pool = self._ok if self._ok.any() else np.ones(total, dtype=bool)
        self._ideal_flat = _first_best(self._pool, -self._utility)
        # A party whose best package is worth less than walking away aspires to no deal at all:
        # clamping keeps the aspiration at or above the reservation throughout.
        self.best_utility = max(float(self._utility[self._ideal_flat]), self.reservation)

    # ------------------------------------------------------------------ evaluation

    def reservation_at(self, round: int) -> float:
        """The walk-away in force in `round` (a `walk_away` event during the talks changes it
        from its round on; the view holds this party's own changes only)."""
        return self.scenario.reservation_at(self.party, round)

    def best_at(self, round: int) -> float:
        """The best achievable utility, or the walk-away in force if that is higher."""
        return max(float(self._utility[self._ideal_flat]), self.reservation_at(round))

    def aspiration(self, round: int, max_rounds: int | None = None) -> float:
        """U_max - (U_max - U_res) (t/T)^(1/e), with t = round - 1 and T = max_rounds - 1, and
        U_res the walk-away in force in `round`."""
        last = self.scenario.decision.max_rounds if max_rounds is None else max_rounds
        horizon = last - 1
        share = 1.0 if horizon <= 0 else min(max((round - 1) / horizon, 0.0), 1.0)
        best, reservation = self.best_at(round), self.reservation_at(round)
        return best - (best - reservation) * math.pow(share, 1 / self.exponent)

    def utility(self, package: Package) -> float:
        columns = self._space.columns_for_packages([package])
        return float(self._space.evaluate(columns).utilities[0, 0])

    def broken_red_lines(self, package: Package) -> list[str]:
        """Ids of this party's red lines that `package` breaks."""
        columns = self._space.columns_for_packages([package])
        broken = self._space.evaluate(columns).broken[0]
        return [line.rule.id for line, hit in zip(self._space.red_lines, broken, strict=True)
                if hit]

    def ideal_package(self) -> Package:
        return self._grid.package_at(self._ideal_flat)

    def counter_package(self, table: Package, aspiration: float) -> Package:
        """The package nearest `table` (fewest changed dimensions; ties: highest own utility) that
        reaches `aspiration` and breaks none of this party's red lines."""
        return self._grid.package_at(self._counter_flat(self._grid.point(table), aspiration))

    def _counter_flat(self, point: np.ndarray, aspiration: float) -> int:
        floor = aspiration
        if not (self._pool & (self._utility >= aspiration - _TOL)).any():
            floor = float(self._utility[self._ideal_flat])  # none is worth the reservation
        # An off-grid or unknown coordinate has position -1: it counts as changed everywhere.
        positions = self._grid.positions(point)

        def target(flat: np.ndarray) -> np.ndarray:
            return np.asarray(self._pool[flat] & (self._utility[flat] >= floor - _TOL))

        def changed(flat: np.ndarray) -> np.ndarray:
            grid = np.unravel_index(flat, self._grid.sizes)
            out = np.zeros(flat.size, dtype=np.int16)
            for column, pos in zip(grid, positions, strict=True):
                out += column != pos
            return out

        return _first_best_chunked(self._grid.total, target, changed,
                                   lambda flat: -self._utility[flat])

    def _point_at(self, flat: int) -> np.ndarray:
        point: np.ndarray = self._grid.points(np.array([flat], dtype=np.int64))[0]
        return point

    # ------------------------------------------------------------------ turns

    def opening(self, ctx: Context) -> Turn[OpeningContent]:
        return _timed(lambda: OpeningContent(text=self._opening_text()))

    def _opening_text(self) -> str:
        ideal = self._grid.describe(self._point_at(self._ideal_flat))
        weights = self.preferences.weights
        order = sorted(
            (k for k, d in enumerate(self._grid.dimension_ids) if weights.get(d, 0.0) > 0),
            key=lambda k: (-weights[self._grid.dimension_ids[k]], k),
        )
        priorities = _join([self._grid.dimension_label(k) for k in order])
        return (f"{self.party} comes to the table seeking: {ideal}. "
                f"What matters most to us, in order: {priorities}.")

    def respond(self, ctx: Context) -> Turn[ResponseContent]:
        return _timed(lambda: self._respond(ctx))

    def _respond(self, ctx: Context) -> ResponseContent:
        if ctx.table is None:
            return ResponseContent(vote="reject", stances={},
                                   statement="There is no package on the table to answer.",
                                   private_rationale="No package was tabled.")
        table = ctx.table
        point = self._grid.point(table)
        utility = self.utility(table)
        broken = self.broken_red_lines(table)
        aspiration = self.aspiration(ctx.round, ctx.max_rounds)
        numbers = (f"Utility {utility:.1f}; aspiration {aspiration:.1f} at round {ctx.round} of "
                   f"{ctx.max_rounds} ({self.strategy}); reservation "
                   f"{self.reservation_at(ctx.round):.1f}; best achievable "
                   f"{self.best_at(ctx.round):.1f}.")
        dims = self._grid.dimension_ids
        if utility >= aspiration - _TOL and not broken:
            return ResponseContent(
                vote="accept",
                stances={d: IssueStance(stance="accept") for d in dims},
                statement=f"{self.party} accepts this package.",
                private_rationale=f"{numbers} The package meets our aspiration and crosses "
                                  "none of our red lines.",
            )
        counter = self._point_at(self._counter_flat(point, aspiration))
        stances: dict[str, IssueStance] = {}
        objections: list[str] = []
        for k, dim in enumerate(dims):
            if abs(counter[k] - point[k]) <= _TOL:
                stances[dim] = IssueStance(stance="accept")
                continue
            stances[dim] = IssueStance(stance="object",
                                       wants=self._grid.stance_value(k, float(counter[k])))
            objections.append(
                f"{self._grid.dimension_label(k)} ({self._grid.value_label(k, float(point[k]))};"
                f" we want {self._grid.value_label(k, float(counter[k]))})"
            )
        if objections:
            statement = f"{self.party} cannot accept this package. We object to " \
                        f"{_join(objections)}."
        else:  # the degenerate case of a party that prefers no deal to every package
            statement = f"{self.party} cannot accept this package: no deal serves us better."
        why = [f"breaks our red lines {', '.join(broken)}" if broken else "",
               "falls short of our aspiration" if utility < aspiration - _TOL else ""]
        return ResponseContent(
            vote="reject",
            stances=stances,
            statement=statement,
            private_rationale=f"{numbers} The package {' and '.join(w for w in why if w)}; "
                              f"the nearest package we could accept: "
                              f"{self._grid.describe(counter)}.",
        )

    def propose(self, ctx: Context) -> Turn[ProposalContent]:
        return _timed(lambda: self._propose(ctx))

    def _propose(self, ctx: Context) -> ProposalContent:
        aspiration = self.aspiration(ctx.round, ctx.max_rounds)
        rejected = self._grid.flats_of(ctx.rejected)
        others = [p for p in self.scenario.voters if p != self.party]
        targets = self._grid.targets(ctx, others)

        def fresh(flat: np.ndarray) -> np.ndarray:
            return ~np.isin(flat, rejected)

        def distance(flat: np.ndarray) -> np.ndarray:
            points = self._grid.points(flat)
            out = np.zeros(flat.size)
            for row in targets.values():
                known = ~np.isnan(row)
                out += (np.abs(points[:, known] - row[known])
                        / self._grid.scales[known]).sum(axis=1)
            return out

        def utility(flat: np.ndarray) -> np.ndarray:
            return np.asarray(-self._utility[flat])

        def aspired(flat: np.ndarray) -> np.ndarray:
            return np.asarray(self._pool[flat] & fresh(flat)
                              & (self._utility[flat] >= aspiration - _TOL))

        total = self._grid.total
        any_fresh = len(rejected) < total
        if (self._pool & (self._utility >= aspiration - _TOL)).any() and \
                _any_chunked(total, aspired):
            flat = _first_best_chunked(total, aspired, distance, utility)
        else:
            # Everything we aspire to was rejected already: offer our best unrejected package.
            def pool(flat: np.ndarray) -> np.ndarray:
                return np.asarray(self._pool[flat] & fresh(flat))

            if _any_chunked(total, pool):
                flat = _first_best_chunked(total, pool, utility, distance)
            elif any_fresh:
                flat = _first_best_chunked(total, fresh, utility, distance)
            else:
                flat = _first_best_chunked(total, lambda f: self._pool[f], utility, distance)
        package = self._grid.package_at(flat)
        point = self._point_at(flat)
        met = [
            self._grid.dimension_label(k)
            for k in range(len(point))
            if any(abs(row[k] - point[k]) <= _TOL for row in targets.values())
        ]
        rationale = f"{self.party} proposes: {self._grid.describe(point)}."
        if targets:
            rationale += (f" It meets the others' stated positions on {_join(met)}."
                          if met else " It moves as far toward the others' stated positions as "
                                      "we can go.")
        return ProposalContent(package=package, rationale=rationale)

    def caucus_reply(self, ctx: Context, message: str) -> Turn[CaucusContent]:
        return _timed(lambda: CaucusContent(text=self._caucus_text(ctx)))

    def _caucus_text(self, ctx: Context) -> str:
        if ctx.table is None:
            return "We will answer once a package is on the table."
        point = self._grid.point(ctx.table)
        aspiration = self.aspiration(ctx.round, ctx.max_rounds)
        if self.utility(ctx.table) >= aspiration - _TOL and not self.broken_red_lines(ctx.table):
            return "We hear you. As it stands, we can accept the package on the table."
        return self._objection_text(point, aspiration)

    def _objection_text(self, point: np.ndarray, aspiration: float) -> str:
        """A caucus reply objecting to the tabled `point` on the weightiest issue the nearest
        package worth `aspiration` changes."""
        counter = self._point_at(self._counter_flat(point, aspiration))
        changed = [k for k in range(len(point)) if not abs(counter[k] - point[k]) <= _TOL]
        if not changed:
            return "We hear you, but no package on offer serves us better than no deal."
        weights = self.preferences.weights
        main = min(changed, key=lambda k: (-weights.get(self._grid.dimension_ids[k], 0.0), k))
        return (f"We hear you. Our main objection remains {self._grid.dimension_label(main)}: we "
                f"cannot accept {self._grid.value_label(main, float(point[main]))}; we need "
                f"{self._grid.value_label(main, float(counter[main]))}.")


def rule_passes(scenario: Scenario, accepts: set[str]) -> bool:
    """Whether the scenario's decision rule passes a package these parties accept."""
    rule = scenario.decision
    needed = {*rule.required, *rule.veto, *(rule.quorum.including if rule.quorum else [])}
    if not needed <= accepts:
        return False
    return rule.quorum is None or len(accepts & set(scenario.voters)) >= rule.quorum.min


class SaboteurNegotiator(TimeDependentNegotiator):
    """A voting party that makes the talks fail without being seen to (the `saboteur`
    incentive, or `scripted:saboteur`).

    It opens, proposes and objects as its base strategy (Conceder unless the seat names
    another) would, and votes as it would, except on a package its base would accept and that
    its own acceptance could pass. It cannot see the others' votes before casting its own
    (they answer at once), so it assumes the worst: that every other party accepts. A package
    it is needed for (a party the rule requires or gives a veto, or whose vote a quorum needs)
    it therefore rejects, objecting to what a party holding out for a little more would name
    (the nearest package worth more to it), in the same words as any rejection: its votes and
    objections read like a hard bargainer's, always one step from yes. Where the rule can pass
    a package without it, it votes as its base does. Its private rationale (seen by no other
    agent) says why it rejected.
    """

    HOLDOUT = 0.5
    """How much more than the table's worth a blocking objection asks for (utility points)."""

    def __init__(self, party: str, scenario: Scenario, strategy: str = "conceder") -> None:
        super().__init__(party, scenario, strategy)
        self.settings = AgentSettings(kind="scripted", strategy="saboteur")
        others = set(scenario.voters) - {party}
        self.needed = rule_passes(scenario, others | {party}) and \
            not rule_passes(scenario, others)
        """Whether its acceptance can decide a package (with every other party accepting)."""

    def _blocks(self, ctx: Context) -> float | None:
        """The aspiration it pretends to when it blocks the table (None: it does not)."""
        if ctx.table is None:
            return None
        aspiration = self.aspiration(ctx.round, ctx.max_rounds)
        utility = self.utility(ctx.table)
        if utility < aspiration - _TOL or self.broken_red_lines(ctx.table) or not self.needed:
            return None  # its base rejects it anyway, or the rule can pass it without us
        return utility + self.HOLDOUT

    def _respond(self, ctx: Context) -> ResponseContent:
        pretended = self._blocks(ctx)
        if pretended is None:
            return super()._respond(ctx)
        assert ctx.table is not None
        point = self._grid.point(ctx.table)
        counter = self._point_at(self._counter_flat(point, pretended))
        stances: dict[str, IssueStance] = {}
        objections: list[str] = []
        for k, dim in enumerate(self._grid.dimension_ids):
            if abs(counter[k] - point[k]) <= _TOL:
                stances[dim] = IssueStance(stance="accept")
                continue
            stances[dim] = IssueStance(stance="object",
                                       wants=self._grid.stance_value(k, float(counter[k])))
            objections.append(
                f"{self._grid.dimension_label(k)} ({self._grid.value_label(k, float(point[k]))};"
                f" we want {self._grid.value_label(k, float(counter[k]))})")
        statement = (f"{self.party} cannot accept this package. We object to "
                     f"{_join(objections)}." if objections else
                     f"{self.party} cannot accept this package: no deal serves us better.")
        return ResponseContent(
            vote="reject", stances=stances, statement=statement,
            private_rationale=(
                f"Saboteur: the package is worth {self.utility(ctx.table):.1f} to us, enough "
                f"for our {self.strategy} aspiration of "
                f"{self.aspiration(ctx.round, ctx.max_rounds):.1f}, but our acceptance could "
                "pass it. We reject it, objecting as a party holding out for a little more "
                "would."))

    def _caucus_text(self, ctx: Context) -> str:
        pretended = self._blocks(ctx)
        if pretended is None:
            return super()._caucus_text(ctx)
        assert ctx.table is not None
        return self._objection_text(self._grid.point(ctx.table), pretended)


def apply_incentive(agent: Agent, party: str, scenario: Scenario) -> Agent:
    """The scripted agent that plays `party`'s incentive (`scenario.incentives`), if any.

    `saboteur` turns a built-in negotiator into a `SaboteurNegotiator` with the same concession
    pace; `cooperative` and `greedy` leave it as it is (a scripted negotiator already pursues
    its own value above its walk-away and accepts whatever meets its aspiration). A `targeted`
    incentive, and any incentive but `cooperative` on a scripted mediator, has no scripted form:
    ValueError (play that seat with an LLM agent)."""
    incentive = scenario.incentives.get(party)
    if incentive is None or incentive.kind in ("cooperative", "greedy"):
        return agent
    if incentive.kind == "saboteur":
        if isinstance(agent, SaboteurNegotiator):
            return agent
        if type(agent) is TimeDependentNegotiator:
            return SaboteurNegotiator(party, scenario, agent.strategy)
    strategy = agent.settings.strategy or "this strategy"
    raise ValueError(f"the scenario gives '{party}' a `{incentive.kind}` incentive, which "
                     f"scripted:{strategy} cannot play (a scripted seat plays `saboteur` over "
                     f"{', '.join(CONCESSION_EXPONENTS)} or as scripted:saboteur); play "
                     f"'{party}' with an LLM agent")


# =========================================================================== mediators


class _Mediator:
    """What both scripted mediators share: they vote never, caucus alike, open alike."""

    strategy = ""

    def __init__(self, party: str, scenario: Scenario) -> None:
        if party != scenario.mediator:
            raise ValueError(f"a '{self.strategy}' mediator plays the scenario's mediator "
                             f"({scenario.mediator or 'none'}), not '{party}'")
        self.party = party
        self.scenario = scenario
        self.settings = AgentSettings(kind="scripted", strategy=self.strategy)
        self.voters = scenario.voters
        rule = scenario.decision
        named = {*rule.required, *rule.veto, *(rule.quorum.including if rule.quorum else [])}
        # As in the analysis: a package needs the named parties plus, under a quorum, the fewest
        # further accepters the quorum asks for.
        self.needed = [p for p in self.voters if p in named]
        self.quorum_extra = max(0, rule.quorum.min - len(self.needed)) if rule.quorum else 0
        self._grid = _Grid(scenario)

    def opening(self, ctx: Context) -> Turn[OpeningContent]:
        issues = _join([self._grid.dimension_label(k) for k in range(len(self._grid.sizes))])
        return _timed(lambda: OpeningContent(
            text=f"Welcome, {_join(self.voters)}. I will table full packages covering {issues}. "
                 "For each, tell me where you object and what you would need instead; I will "
                 "revise the package from what you say."))

    def respond(self, ctx: Context) -> Turn[ResponseContent]:
        # Never called on a mediator; a valid, neutral answer keeps the protocol total.
        stances = {d: IssueStance(stance="accept") for d in self._grid.dimension_ids}
        return _timed(lambda: ResponseContent(
            vote="accept", stances=stances if ctx.table is not None else {},
            statement="The mediator does not vote.",
            private_rationale="A mediator has no stake in the package."))

    def caucus_reply(self, ctx: Context, message: str) -> Turn[CaucusContent]:
        return _timed(lambda: CaucusContent(text="Noted; I will take it into the next package."))

    def propose(self, ctx: Context) -> Turn[ProposalContent]:
        def make() -> ProposalContent:
            package, rationale = self._table(ctx)
            caucus_with, message = self._caucus(ctx, package)
            return ProposalContent(package=package, rationale=rationale,
                                   caucus_with=caucus_with, caucus_message=message)
        return _timed(make)

    def _table(self, ctx: Context) -> tuple[Package, str]:
        raise NotImplementedError

    def _objections(self, ctx: Context, party: str) -> list[int]:
        stances = ctx.positions.get(party, {})
        return [k for k, d in enumerate(self._grid.dimension_ids)
                if (s := stances.get(d)) is not None and s.stance == "object"]

    def _caucus(self, ctx: Context, package: Package) -> tuple[str | None, str]:
        """Take aside the holdout when most voters accepted the last package but some did not."""
        votes = {p: v for p, v in ctx.last_votes.items() if p in self.voters}
        rejecters = [p for p in self.voters if votes.get(p) == "reject"]
        accepters = sum(v == "accept" for v in votes.values())
        if not rejecters or accepters <= len(votes) / 2:
            return None, ""
        # The holdout nearest to yes (fewest objections) is the likeliest to be won over.
        party = min(rejecters, key=lambda p: (len(self._objections(ctx, p)), rejecters.index(p)))
        objected = self._objections(ctx, party)
        if not objected:
            return party, (f"{party}, most parties accepted the last package and you rejected it "
                           "without naming an objection. Which issue stands between you and a "
                           "deal?")
        point = self._grid.point(package)
        stances = ctx.positions[party]
        parts = []
        for k in objected:
            wants = self._grid.wanted(k, stances[self._grid.dimension_ids[k]], None)
            asked = "" if wants is None else f"you asked for {self._grid.value_label(k, wants)}; "
            parts.append(f"{self._grid.dimension_label(k)} ({asked}the new package has "
                         f"{self._grid.value_label(k, float(point[k]))})")
        return party, (f"{party}, most parties accepted the last package, but you objected on "
                       f"{_join(parts)}. That is what stands between us and a deal: please weigh "
                       "the new package against what walking away would cost you.")


class NashMediator(_Mediator):
    """Tables the maximum of the Nash product of utilities estimated from stated positions.

    A party's estimated utility of a package is the mean over dimensions it spoke to of
    1 - (normalized distance to what it asked for): its `wants` where it objected, the tabled
    value where it accepted.
    """

    strategy = "nash"

    def estimated_utilities(self, ctx: Context, flat: np.ndarray) -> dict[str, np.ndarray]:
        """Each positioned voter's estimated utility (0-1) of the packages at `flat`."""
        points = self._grid.points(flat)
        out: dict[str, np.ndarray] = {}
        for party, row in self._grid.targets(ctx, self.voters).items():
            known = ~np.isnan(row)
            closeness = 1 - np.clip(
                np.abs(points[:, known] - row[known]) / self._grid.scales[known], 0.0, 1.0)
            out[party] = closeness.mean(axis=1)
        return out

    def estimated_products(self, ctx: Context, flat: np.ndarray) -> np.ndarray:
        """The estimated coalition product of the packages at `flat`.

        The same definition as the analysis's Nash product: the needed parties' estimates times
        the largest `quorum_extra` estimates of the others, over the parties that stated a
        position.
        """
        product = np.ones(flat.size)
        others: list[np.ndarray] = []
        for party, estimate in self.estimated_utilities(ctx, flat).items():
            if party in self.needed:
                product *= estimate + NASH_EPSILON
            else:
                others.append(estimate + NASH_EPSILON)
        if self.quorum_extra and others:
            top = -np.sort(-np.stack(others, axis=1), axis=1)[:, : self.quorum_extra]
            product *= top.prod(axis=1)
        return product

    def _table(self, ctx: Context) -> tuple[Package, str]:
        grid = self._grid
        middle = grid.middle_indices()
        middle_flat = int(np.ravel_multi_index(tuple(middle), grid.sizes))
        rejected = grid.flats_of(ctx.rejected)
        targets = grid.targets(ctx, self.voters)
        if not targets and middle_flat not in rejected:
            return grid.package_at(middle_flat), (
                "An opening package: the middle option of every issue and the middle of every "
                "range, to be revised from the parties' stated positions.")
        center = grid.points(np.array([middle_flat]))
        every = len(rejected) >= grid.total  # every package was rejected: nothing new remains

        def fresh(flat: np.ndarray) -> np.ndarray:
            return np.ones(flat.size, dtype=bool) if every else ~np.isin(flat, rejected)

        def to_middle(flat: np.ndarray) -> np.ndarray:
            # Ties (common with few positions) go to the package nearest the middle: the least
            # partisan of the equally good.
            return np.asarray((np.abs(grid.points(flat) - center) / grid.scales).sum(axis=1))

        # One pass computes both keys (16 bytes a package, for this turn only).
        products = np.empty(grid.total)
        nearness = np.empty(grid.total)
        for chunk in _flat_chunks(grid.total):
            products[chunk] = self.estimated_products(ctx, chunk)
            nearness[chunk] = to_middle(chunk)
        every_flat = np.arange(grid.total, dtype=np.int64)
        flat = _first_best(fresh(every_flat), -products, nearness)
        return grid.package_at(flat), self._rationale(ctx, grid.points(np.array([flat]))[0],
                                                      targets)

    def _rationale(self, ctx: Context, point: np.ndarray, targets: Mapping[str, np.ndarray]
                   ) -> str:
        text = ("This package maximizes the product of the parties' positions as they stated "
                "them.")
        if ctx.table is None:
            return text
        before = self._grid.point(ctx.table)
        moves: list[str] = []
        movers: set[str] = set()
        for k in range(len(point)):
            if abs(point[k] - before[k]) <= _TOL:
                continue
            toward = [p for p, row in targets.items() if not np.isnan(row[k])
                      and abs(point[k] - row[k]) < abs(before[k] - row[k]) - _TOL]
            movers.update(toward)
            label = (f"{self._grid.dimension_label(k)} to "
                     f"{self._grid.value_label(k, float(point[k]))}")
            moves.append(f"{label} (toward {_join(toward)})" if toward else label)
        if not moves:
            return text
        moved_by = (f" The positions of {_join([p for p in self.voters if p in movers])} moved "
                    "it." if movers else "")
        return f"{text} It changes {_join(moves)}.{moved_by}"


class SingleTextMediator(_Mediator):
    """Raiffa's single negotiating text: one text, revised step by step toward objections."""

    strategy = "snt"

    def _table(self, ctx: Context) -> tuple[Package, str]:
        grid = self._grid
        rejected = set(grid.flats_of(ctx.rejected).tolist())
        if not ctx.rejected:
            middle = grid.middle_indices()
            return grid.package_at_indices(middle), (
                "A first single negotiating text: the middle option of every issue and the "
                "middle of every range. Say where you object and what you need instead; the text "
                "will be revised from your objections.")
        last = grid.point(ctx.rejected[-1])
        # The last text as grid positions (an off-grid term snaps to the nearest step).
        base = [0 if np.isnan(v) else round(grid.grid_index(k, float(v)))
                for k, v in enumerate(last)]
        targets = grid.targets(ctx, self.voters)
        counts: list[int] = []
        medians: list[float | None] = []
        for k, dim in enumerate(grid.dimension_ids):
            objectors = [p for p in self.voters
                         if (s := ctx.positions.get(p, {}).get(dim)) is not None
                         and s.stance == "object"]
            wanted = [grid.grid_index(k, float(targets[p][k])) for p in objectors
                      if p in targets and not np.isnan(targets[p][k])]
            counts.append(len(objectors))
            medians.append(float(np.median(wanted)) if wanted else None)

        def step(index: list[int], k: int) -> list[int] | None:
            """`index` moved one step on k toward its objectors' median, if that gets closer."""
            median = medians[k]
            if median is None or abs(median - index[k]) <= 0.5:
                return None
            moved = list(index)
            moved[k] += 1 if median > index[k] else -1
            return moved

        revision = list(base)
        majority = len(self.voters) / 2
        for k in range(len(base)):
            if counts[k] > majority:
                revision = step(revision, k) or revision
        if self._flat(revision) in rejected:
            # Never re-table a rejected text: push the most contested dimension a step further.
            for k in sorted(range(len(base)), key=lambda k: (-counts[k], k)):
                further = step(revision, k) if counts[k] else None
                if further is not None and self._flat(further) not in rejected:
                    revision = further
                    break
            else:
                revision = self._nearest_fresh(revision, rejected)
        moves = [
            f"{grid.dimension_label(k)} from {grid.value_label(k, float(grid.axes[k][base[k]]))}"
            f" to {grid.value_label(k, float(grid.axes[k][revision[k]]))} "
            f"({counts[k]} of {len(self.voters)} objected)"
            for k in range(len(base)) if revision[k] != base[k]
        ]
        rationale = ("A revision of the last rejected text: it moves "
                     f"{_join(moves)}, and leaves everything else as it was." if moves
                     else "The last text, unchanged.")
        return grid.package_at_indices(revision), rationale

    def _flat(self, index: Sequence[int]) -> int:
        return int(np.ravel_multi_index(tuple(index), self._grid.sizes))

    def _nearest_fresh(self, index: list[int], rejected: set[int]) -> list[int]:
        """The unrejected grid package nearest `index` (normalized steps; ties: lowest index)."""
        grid = self._grid
        steps = np.array([max(s - 1, 1) for s in grid.sizes], dtype=np.float64)
        taken = np.array(sorted(rejected), dtype=np.int64)
        if len(taken) >= grid.total:
            return index

        def distance(flat: np.ndarray) -> np.ndarray:
            positions = np.stack(np.unravel_index(flat, grid.sizes), axis=1)
            return np.asarray((np.abs(positions - np.array(index)) / steps).sum(axis=1))

        flat = _first_best_chunked(grid.total, lambda f: ~np.isin(f, taken), distance)
        return [int(i) for i in np.unravel_index(flat, grid.sizes)]


class OracleMediator(_Mediator):
    """A reference mediator that knows every party's utilities, walk-aways and red lines.

    It tables the Nash package of the zone of agreement (the analysis's definition), and after a
    rejection the next unrejected package of the zone by the same coalition product. With an
    empty zone it tables the package that the most parties would accept. Its runs show what a
    mediator could reach with perfect information: an upper bound, never a negotiation result,
    so a user can tell "no deal was reachable" from "the agents missed it". A walk-away changed
    during the talks (a `walk_away` event) counts from its round on: the zone is ranked again.
    """

    strategy = ORACLE_STRATEGY
    NEAR_MISSES = 200

    def __init__(self, party: str, scenario: Scenario) -> None:
        super().__init__(party, scenario)
        missing = [p for p in scenario.voters if p not in scenario.preferences]
        if missing:
            raise ValueError("the oracle mediator needs every party's preferences; missing: "
                             f"{', '.join(missing)}")
        self._rankings: dict[tuple[float, ...], tuple[list[int], int, PackageSpace]] = {}
        self._ranked, self.zone_size, self._space = self._ranking(scenario)

    def _ranking(self, scenario: Scenario) -> tuple[list[int], int, PackageSpace]:
        """The packages to table in order, the zone's size and the space, for the walk-aways
        of `scenario` (computed once for each set of walk-aways)."""
        key = tuple(scenario.preferences[p].reservation_utility for p in scenario.voters)
        if key not in self._rankings:
            self._rankings[key] = self._rank(scenario)
        return self._rankings[key]

    def _rank(self, scenario: Scenario) -> tuple[list[int], int, PackageSpace]:
        space = PackageSpace(scenario)
        flats: list[np.ndarray] = []
        keys: list[np.ndarray] = []
        sums: list[np.ndarray] = []
        for flat, columns in space.chunks(_CHUNK):
            ev = space.evaluate(columns)
            zone = zone_of_agreement(space, ev.rational)
            if zone.any():
                flats.append(flat[zone])
                keys.append(nash_products(space, ev.utilities[zone], ev.rational[zone]))
                sums.append(ev.utilities[zone].sum(axis=1))
        zone_size = int(sum(len(f) for f in flats))
        if flats:
            nash = analyze(scenario, frontier=False).nash
            assert nash is not None
            first = self._grid.flat_of(nash.package)
            flat, key, total = (np.concatenate(x) for x in (flats, keys, sums))
            order = np.lexsort((flat, -total, -key))
            ranked = [int(f) for f in flat[order] if int(f) != first]
            return [int(first if first is not None else flat[order[0]]), *ranked], zone_size, \
                space
        return self._near_misses(space), zone_size, space

    def _near_misses(self, space: PackageSpace) -> list[int]:
        """With an empty zone: packages by how many parties would accept (needed ones first)."""
        best_flat: list[np.ndarray] = []
        best_key: list[np.ndarray] = []
        for flat, columns in space.chunks(_CHUNK):
            ev = space.evaluate(columns)
            needed = ev.rational[:, space.needed_mask].sum(axis=1)
            key = (needed * (len(space.voters) + 1) + ev.rational.sum(axis=1)) * 1e4 \
                + ev.utilities.sum(axis=1)
            keep = np.argsort(-key, kind="stable")[: self.NEAR_MISSES]
            best_flat.append(flat[keep])
            best_key.append(key[keep])
        flat, key = np.concatenate(best_flat), np.concatenate(best_key)
        order = np.lexsort((flat, -key))[: self.NEAR_MISSES]
        return [int(f) for f in flat[order]]

    def _table(self, ctx: Context) -> tuple[Package, str]:
        self._ranked, self.zone_size, self._space = self._ranking(
            self.scenario.at_round(ctx.round))
        rejected = set(self._grid.flats_of(ctx.rejected).tolist())
        rank, flat = next(((k, f) for k, f in enumerate(self._ranked) if f not in rejected),
                          (0, self._ranked[0]))
        package = self._grid.package_at(flat)
        head = ("Reference mediator (it knows every party's utilities and red lines: an upper "
                "bound, not a negotiation). ")
        if self.zone_size == 0:
            ev = self._space.evaluate(self._space.columns_for_packages([package]))
            accepting = int(ev.rational[0].sum())
            return package, head + (
                "No package lies in the zone of agreement: with every party voting on its own "
                "values and red lines, none would pass the rule. This one comes closest: "
                f"{accepting} of {len(self.voters)} parties would accept it.")
        if rank == 0:
            return package, head + (
                f"This is the Nash package of the zone of agreement ({self.zone_size} packages "
                "the rule would pass): it maximizes the product of the winning coalition's "
                "gains over walking away.")
        return package, head + (
            f"The {rank} better packages of the zone of agreement were rejected; this is the "
            f"next by the product of the winning coalition's gains ({rank + 1} of "
            f"{self.zone_size}).")


# =========================================================================== factory


def make_boulware(party: str, view: Scenario) -> Agent:
    return TimeDependentNegotiator(party, view, "boulware")


def make_linear(party: str, view: Scenario) -> Agent:
    return TimeDependentNegotiator(party, view, "linear")


def make_conceder(party: str, view: Scenario) -> Agent:
    return TimeDependentNegotiator(party, view, "conceder")


def make_saboteur(party: str, view: Scenario) -> Agent:
    return SaboteurNegotiator(party, view, "conceder")


def make_nash(party: str, view: Scenario) -> Agent:
    return NashMediator(party, view)


def make_snt(party: str, view: Scenario) -> Agent:
    return SingleTextMediator(party, view)


def make_oracle(party: str, scenario: Scenario) -> Agent:
    return OracleMediator(party, scenario)


def make_scripted(strategy: str, party: str, scenario: Scenario) -> Agent:
    """A scripted agent playing `party` from its private view of `scenario` (a mediator
    registered with `sees_all`, the oracle, is given the whole scenario). Strategies and
    mediators come from the registry, so a plug-in's are found by name too. The scenario's
    incentive for the party, if any, is played as `apply_incentive` says."""
    from detente.registry import MEDIATORS, STRATEGIES

    if strategy in STRATEGIES:
        if party == scenario.mediator:
            raise ValueError(f"'{strategy}' is a negotiator strategy; the mediator '{party}' "
                             f"needs one of: {', '.join(MEDIATORS.names())}")
        agent: Agent = STRATEGIES.get(strategy)(party, scenario)
        return apply_incentive(agent, party, scenario)
    if strategy in MEDIATORS:
        if party != scenario.mediator:
            raise ValueError(f"'{strategy}' is a mediator strategy; the voting party '{party}' "
                             f"needs one of: {', '.join(STRATEGIES.names())}")
        agent = MEDIATORS.get(strategy)(party, scenario)
        return apply_incentive(agent, party, scenario)
    raise ValueError(f"unknown scripted strategy '{strategy}'; expected one of: "
                     f"{', '.join([*STRATEGIES.names(), *MEDIATORS.names()])}")
