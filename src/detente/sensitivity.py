"""Which assumed numbers carry the result: the zone of agreement as one number moves.

For each voting party, one number at a time, every other number fixed:

- its walk-away (reservation) utility r: the zone of agreement (`analysis.zone_of_agreement`:
  the packages the decision rule passes when every party accepts exactly when it accepts
  rationally) as a function of r;
- each of its weights w_d: the same as a function of w_d, the party's other weights rescaled
  proportionally so that they still sum to 1 (w_j -> w_j (1 - w_d') / (1 - w_d)); a weight that
  is the party's only one (w_d = 1) shares the rest equally among the others.

Both are exact. A package's membership depends on the party only through its own rational
acceptance, and the rule is monotone in acceptances, so the zone splits into the packages the
rule passes even if the party rejects ("always"), the packages it passes only if the party
accepts and that break none of the party's red lines ("pivotal"), and the rest. A pivotal
package is in the zone when the party's utility u clears r. Under a weight change u is linear
in the new weight, u(w) = a + b w, so a pivotal package is in the zone on a half-line of w:
the zone is non-empty on at most two intervals of [0, 1], found from the half-lines' ends.
The whole space is evaluated once, in bounded chunks, with the code the analysis uses.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel

from detente.analysis import DEFAULT_CHUNK, passes_rule
from detente.scenario import Preferences, Scenario
from detente.space import PackageSpace

TOLERANCE = 1e-9
"""A utility this far below a walk-away value still clears it (as in `PackageSpace.evaluate`)."""

RESERVATION_GRID = [float(r) for r in range(101)]
WEIGHT_GRID = [round(k / 20, 2) for k in range(21)]
OFFSETS = (-10.0, -5.0, -2.0, 2.0, 5.0, 10.0)
"""Walk-away values around the current one at which `ReservationSensitivity.around` reports."""


class SizeAt(BaseModel):
    value: float
    zopa: int


class ReservationSensitivity(BaseModel):
    """The zone of agreement as one party's walk-away utility moves."""

    party: str
    current: float
    zopa: int
    """Size at the current walk-away value (the analysis's ZOPA)."""
    always: int
    """Zone packages that do not depend on this party's vote (the rule passes them anyway)."""
    nonempty_up_to: float | None
    """The zone is non-empty exactly while the walk-away value is at or below this (None: for
    every value when `always` > 0, or for none when there is no pivotal package either)."""
    largest: int
    """The most the zone can hold, at walk-away values at or below `largest_below`."""
    largest_below: float | None
    sizes: list[SizeAt]
    """Zone size at the walk-away values of `RESERVATION_GRID` (0, 1, ..., 100)."""
    around: list[SizeAt]
    """Zone size at the current value plus each of `OFFSETS` (those within 0-100)."""

    def size_at(self, value: float) -> int:
        for point in self.sizes:
            if point.value == value:
                return point.zopa
        raise KeyError(value)


class WeightSensitivity(BaseModel):
    """The zone of agreement as one weight of one party moves (its other weights rescaled)."""

    party: str
    dimension: str
    current: float
    zopa: int
    nonempty: list[tuple[float, float]]
    """Closed intervals of the weight, within [0, 1], on which the zone is non-empty."""
    sizes: list[SizeAt]
    """Zone size at the weights of `WEIGHT_GRID` (0, 0.05, ..., 1)."""


class Sensitivity(BaseModel):
    scenario: str
    zopa: int
    reservation: list[ReservationSensitivity]
    weights: list[WeightSensitivity]


def _raw_tables(scenario: Scenario, party: str) -> list[np.ndarray]:
    """Per issue, the party's unweighted utility of each option (in option order)."""
    prefs = scenario.preferences[party]
    return [np.array([prefs.utilities[i.id][o] for o in i.option_ids()], dtype=np.float64)
            for i in scenario.issues]


def sensitivity(scenario: Scenario, *, chunk_size: int = DEFAULT_CHUNK) -> Sensitivity:
    space = PackageSpace(scenario)
    voters = space.voters
    n_issues = len(space.issue_ids)
    owner = np.array([voters.index(line.party) for line in space.red_lines], dtype=np.int64)
    tables = {p: _raw_tables(scenario, p) for p in voters}
    curves = {
        p: [(np.array([x for x, _ in scenario.preferences[p].term_utilities[t]]),
             np.array([u for _, u in scenario.preferences[p].term_utilities[t]]))
            for t in space.term_ids]
        for p in voters
    }
    always = np.zeros(len(voters), dtype=np.int64)
    pivotal_u: list[list[np.ndarray]] = [[] for _ in voters]
    pivotal_raw: list[list[np.ndarray]] = [[] for _ in voters]
    zopa = 0

    for _, columns in space.chunks(chunk_size):
        ev = space.evaluate(columns)
        zopa += int(passes_rule(space, ev.rational).sum())
        for v, party in enumerate(voters):
            accepts = ev.rational.copy()
            accepts[:, v] = True
            with_v = passes_rule(space, accepts)
            accepts[:, v] = False
            without_v = passes_rule(space, accepts)
            own = owner == v
            clean = ~ev.broken[:, own].any(axis=1) if own.any() else np.ones(len(with_v), bool)
            pivotal = with_v & ~without_v & clean
            always[v] += int(without_v.sum())
            if not pivotal.any():
                continue
            pivotal_u[v].append(ev.utilities[pivotal, v])
            parts = [tables[party][k][columns[k][pivotal]] for k in range(n_issues)]
            parts += [np.interp(columns[n_issues + t][pivotal], xs, us)
                      for t, (xs, us) in enumerate(curves[party])]
            pivotal_raw[v].append(np.stack(parts, axis=1))

    reservations: list[ReservationSensitivity] = []
    weights: list[WeightSensitivity] = []
    for v, party in enumerate(voters):
        prefs = scenario.preferences[party]
        u = np.sort(np.concatenate(pivotal_u[v])) if pivotal_u[v] else np.zeros(0)
        raw = (np.concatenate(pivotal_raw[v]) if pivotal_raw[v]
               else np.zeros((0, len(space.dimension_ids))))
        base = int(always[v])
        r_now = prefs.reservation_utility
        reservations.append(ReservationSensitivity(
            party=party, current=r_now, zopa=base + _clearing(u, r_now), always=base,
            nonempty_up_to=float(u[-1]) if base == 0 and u.size else None,
            largest=base + int(u.size), largest_below=float(u[0]) if u.size else None,
            sizes=[SizeAt(value=r, zopa=base + _clearing(u, r)) for r in RESERVATION_GRID],
            around=[SizeAt(value=r_now + k, zopa=base + _clearing(u, r_now + k))
                    for k in OFFSETS if 0 <= r_now + k <= 100],
        ))
        utility = _utilities_from_raw(raw, [prefs.weights[d] for d in space.dimension_ids])
        for d, dim in enumerate(space.dimension_ids):
            a, b = _linear_in_weight(raw, utility, prefs, space.dimension_ids, d)
            w_now = prefs.weights[dim]
            weights.append(WeightSensitivity(
                party=party, dimension=dim, current=w_now,
                zopa=base + _count_at(a, b, w_now, r_now),
                nonempty=[(0.0, 1.0)] if base else _nonempty(a, b, r_now),
                sizes=[SizeAt(value=w, zopa=base + _count_at(a, b, w, r_now))
                       for w in WEIGHT_GRID],
            ))
    return Sensitivity(scenario=scenario.id, zopa=zopa, reservation=reservations,
                       weights=weights)


def _clearing(sorted_u: np.ndarray, r: float) -> int:
    """How many utilities are at or above r (within the tolerance)."""
    return int(sorted_u.size - np.searchsorted(sorted_u, r - TOLERANCE, side="left"))


def _utilities_from_raw(raw: np.ndarray, weights: list[float]) -> np.ndarray:
    return np.asarray(raw @ np.array(weights, dtype=np.float64))


def _linear_in_weight(
    raw: np.ndarray, utility: np.ndarray, prefs: Preferences, dims: list[str], d: int
) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) with u(w) = a + b w: each pivotal package's utility when weight d is w."""
    w_d = prefs.weights[dims[d]]
    c_d = raw[:, d]
    rest = 1.0 - w_d
    if rest > TOLERANCE:
        # Other weights scale by (1 - w) / (1 - w_d): their part of u scales the same way.
        others = (utility - w_d * c_d) / rest
    else:
        # The party weighs only this dimension: the rest is shared equally by the others.
        mask = np.ones(len(dims), dtype=bool)
        mask[d] = False
        others = raw[:, mask].mean(axis=1) if mask.any() else np.zeros(len(raw))
    return others, c_d - others


def _count_at(a: np.ndarray, b: np.ndarray, w: float, r: float) -> int:
    return int((a + b * w >= r - TOLERANCE).sum())


def _nonempty(a: np.ndarray, b: np.ndarray, r: float) -> list[tuple[float, float]]:
    """The weights in [0, 1] at which some package has a + b w >= r: a union of half-lines.

    The ends are where a package's utility meets r, less half the tolerance: inside the
    tolerance the counts use, and clear of the rounding in recomputing a utility there.
    """
    if a.size == 0:
        return []
    target = r - TOLERANCE / 2
    flat = np.abs(b) <= 1e-12
    if (flat & (a >= target - TOLERANCE)).any():
        return [(0.0, 1.0)]
    rising, falling = b > 1e-12, b < -1e-12
    pieces: list[tuple[float, float]] = []
    if falling.any():
        hi = float(((target - a[falling]) / b[falling]).max())
        if hi >= 0:
            pieces.append((0.0, min(hi, 1.0)))
    if rising.any():
        lo = float(((target - a[rising]) / b[rising]).min())
        if lo <= 1:
            pieces.append((max(lo, 0.0), 1.0))
    if len(pieces) == 2 and pieces[1][0] <= pieces[0][1]:
        return [(0.0, 1.0)]
    return pieces
