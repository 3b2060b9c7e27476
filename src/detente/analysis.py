"""Outcome-space analysis: every package of a scenario, enumerated in bounded chunks.

Reports the zone of possible agreement (ZOPA), the Pareto frontier, the Nash bargaining and
Kalai-Smorodinsky packages, and how many packages each decision rule would pass.

Definitions (also in the README):
- a package is *admissible* when it breaks no red line of a required party;
- the *ZOPA* is the admissible packages at or above every required party's reservation utility;
- the *Pareto frontier* is the admissible packages that no admissible package dominates in the
  utilities of all voting parties;
- the *Nash package* maximizes the product of the required parties' surpluses over the ZOPA
  (ties: the larger sum of all voting parties' utilities), so it is always Pareto-optimal;
- the *Kalai-Smorodinsky package* maximizes the smallest share of each required party's best
  ZOPA surplus (ties: the larger sum of utilities).
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel

from detente.scenario import Package, Scenario
from detente.space import PackageSpace

DEFAULT_CHUNK = 1 << 16
_EPS = 1e-9


class PackageReport(BaseModel):
    package: Package
    utilities: dict[str, float]
    """Utility of the package for every voting party."""
    nash_product: float


class DecisionCounts(BaseModel):
    required: int
    """Packages every required party would rationally accept (= the ZOPA)."""
    decision_rule: int
    """Packages the scenario's full rule passes: required, vetoes and quorum."""
    unanimous: int
    """Packages every voting party would rationally accept."""


class Analysis(BaseModel):
    scenario: str
    voters: list[str]
    required: list[str]
    reservation_utilities: dict[str, float]
    packages: int
    admissible: int
    zopa: int
    zopa_share: float
    counts: DecisionCounts
    pareto_frontier: int | None
    """Size of the Pareto frontier; None when not computed."""
    nash: PackageReport | None
    kalai_smorodinsky: PackageReport | None
    best_for: dict[str, float]
    """Each voting party's highest utility over the ZOPA (its ideal point), if the ZOPA is set."""


class _Best:
    """Running lexicographic argmax over chunks."""

    def __init__(self) -> None:
        self.key: tuple[float, float] = (-np.inf, -np.inf)
        self.flat = -1

    def offer(self, primary: np.ndarray, secondary: np.ndarray, flat: np.ndarray) -> None:
        if primary.size == 0:
            return
        top = primary.max()
        candidates = np.flatnonzero(primary >= top - _EPS * max(1.0, abs(top)))
        pick = candidates[np.argmax(secondary[candidates])]
        key = (float(primary[pick]), float(secondary[pick]))
        if key[0] > self.key[0] + _EPS * max(1.0, abs(key[0])) or (
            abs(key[0] - self.key[0]) <= _EPS * max(1.0, abs(key[0])) and key[1] > self.key[1]
        ):
            self.key, self.flat = key, int(flat[pick])


def nash_products(space: PackageSpace, utilities: np.ndarray) -> np.ndarray:
    """Product of required parties' surpluses (0 where any is negative)."""
    surplus = utilities[:, space.required_mask] - space.reservation[space.required_mask]
    return np.where((surplus >= -_EPS).all(axis=1), np.clip(surplus, 0, None).prod(axis=1), 0.0)


def analyze(
    scenario: Scenario, *, chunk_size: int = DEFAULT_CHUNK, frontier: bool = True
) -> Analysis:
    space = PackageSpace(scenario)
    required = space.required_mask
    counts = {"admissible": 0, "zopa": 0, "rule": 0, "unanimous": 0}
    nash = _Best()
    ideal = np.full(len(space.voters), -np.inf)

    for flat, columns in space.chunks(chunk_size):
        ev = space.evaluate(columns)
        zopa = ev.rational[:, required].all(axis=1) & ev.admissible
        counts["admissible"] += int(ev.admissible.sum())
        counts["zopa"] += int(zopa.sum())
        counts["rule"] += int(passes_rule(space, ev.rational).sum())
        counts["unanimous"] += int(ev.rational.all(axis=1).sum())
        if zopa.any():
            u = ev.utilities[zopa]
            nash.offer(nash_products(space, u), u.sum(axis=1), flat[zopa])
            ideal = np.maximum(ideal, u.max(axis=0))

    ks = _Best()
    if counts["zopa"]:
        span = np.where(ideal - space.reservation > _EPS, ideal - space.reservation, 1.0)
        for flat, columns in space.chunks(chunk_size):
            ev = space.evaluate(columns)
            zopa = ev.rational[:, required].all(axis=1) & ev.admissible
            if zopa.any():
                u = ev.utilities[zopa]
                # With no required party (a quorum-only rule) every share ties: sum decides.
                shares = ((u - space.reservation) / span)[:, required].min(
                    axis=1, initial=np.inf) if required.any() else np.zeros(len(u))
                ks.offer(shares, u.sum(axis=1), flat[zopa])

    return Analysis(
        scenario=scenario.id,
        voters=space.voters,
        required=list(scenario.decision.required),
        reservation_utilities=dict(zip(space.voters, space.reservation.tolist(), strict=True)),
        packages=space.total,
        admissible=counts["admissible"],
        zopa=counts["zopa"],
        zopa_share=counts["zopa"] / space.total,
        counts=DecisionCounts(
            required=counts["zopa"], decision_rule=counts["rule"], unanimous=counts["unanimous"]
        ),
        pareto_frontier=len(pareto_frontier(space)[1]) if frontier else None,
        nash=_report(space, nash.flat),
        kalai_smorodinsky=_report(space, ks.flat),
        best_for=(
            dict(zip(space.voters, ideal.tolist(), strict=True)) if counts["zopa"] else {}
        ),
    )


def passes_rule(space: PackageSpace, accepts: np.ndarray) -> np.ndarray:
    """Which rows of an (n, voters) acceptance matrix pass the scenario's decision rule."""
    rule = space.scenario.decision
    ok: np.ndarray = np.asarray(accepts[:, space.required_mask].all(axis=1))
    veto = np.array([p in rule.veto for p in space.voters])
    if veto.any():
        ok &= accepts[:, veto].all(axis=1)
    if rule.quorum is not None:
        ok &= accepts.sum(axis=1) >= rule.quorum.min
        including = np.array([p in rule.quorum.including for p in space.voters])
        if including.any():
            ok &= accepts[:, including].all(axis=1)
    return ok


def _report(space: PackageSpace, flat: int) -> PackageReport | None:
    if flat < 0:
        return None
    ev = space.evaluate(space.columns_for_flat(np.array([flat])))
    return PackageReport(
        package=space.package_at(flat),
        utilities=dict(zip(space.voters, ev.utilities[0].tolist(), strict=True)),
        nash_product=float(nash_products(space, ev.utilities)[0]),
    )


def pareto_frontier(space: PackageSpace) -> tuple[np.ndarray, np.ndarray]:
    """The admissible Pareto frontier: (utility points, flat package indices).

    Utilities add up over dimensions, so a package on the frontier of a product set picks a
    frontier value in every factor: the frontier of A x B lies within frontier(A) + frontier(B).
    Dimensions that a required party's red line couples (a conditional rule) are merged into one
    factor so admissibility stays a product. The frontier is then built one factor at a time,
    never enumerating the whole space.
    """
    n_dims = len(space.sizes)
    parent = list(range(n_dims))

    def root(d: int) -> int:
        while parent[d] != d:
            d = parent[d]
        return d

    required = set(space.scenario.decision.required)
    lines = [line for line in space.red_lines if line.party in required]
    for line in lines:
        dims = sorted(line.dimensions)
        for d in dims[1:]:
            parent[root(d)] = root(dims[0])
    groups: dict[int, list[int]] = {}
    for d in range(n_dims):
        groups.setdefault(root(d), []).append(d)

    strides = np.array([int(np.prod(space.sizes[d + 1:])) for d in range(n_dims)], dtype=np.int64)
    points = np.zeros((1, len(space.voters)))
    ids = np.zeros(1, dtype=np.int64)
    for dims in groups.values():
        grid = np.indices([space.sizes[d] for d in dims]).reshape(len(dims), -1)
        m = grid.shape[1]
        columns = [space.dimension_values(d, np.zeros(m, dtype=np.int64)) for d in range(n_dims)]
        contrib = np.zeros((m, len(space.voters)))
        for row, d in enumerate(dims):
            columns[d] = space.dimension_values(d, grid[row])
            contrib += space.contributions(d)[grid[row]]
        ok = np.ones(m, dtype=bool)
        for line in lines:
            if line.dimensions <= set(dims):
                ok &= ~line.broken(columns, m)
        factor_ids = (grid[:, ok] * strides[dims][:, None]).sum(axis=0)
        factor, factor_ids = _skyline(contrib[ok], factor_ids)
        points, ids = _skyline(
            (points[:, None, :] + factor[None, :, :]).reshape(-1, len(space.voters)),
            (ids[:, None] + factor_ids[None, :]).reshape(-1),
        )
    return points, ids


def _skyline(
    points: np.ndarray, ids: np.ndarray, block: int = 512
) -> tuple[np.ndarray, np.ndarray]:
    """Rows of `points` that no other row dominates (sort-filter-skyline, in blocks)."""
    if len(points) == 0:
        return points, ids
    # A point can only be dominated by one with a larger coordinate sum: after sorting,
    # each block needs checking only against the frontier found so far and itself.
    order = np.argsort(-points.sum(axis=1), kind="stable")
    points, ids = points[order], ids[order]
    front = points[:0]
    front_ids = ids[:0]
    for start in range(0, len(points), block):
        chunk, chunk_ids = points[start:start + block], ids[start:start + block]
        if len(front):
            keep = ~_dominated_mask(chunk, front)
            chunk, chunk_ids = chunk[keep], chunk_ids[keep]
        if len(chunk):
            keep = ~_dominated_mask(chunk, chunk)
            front = np.concatenate([front, chunk[keep]])
            front_ids = np.concatenate([front_ids, chunk_ids[keep]])
    return front, front_ids


def _dominated_mask(points: np.ndarray, by: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """For each row of `points`, whether some row of `by` dominates it."""
    out = np.zeros(len(points), dtype=bool)
    for start in range(0, len(by), chunk):
        other = by[start:start + chunk]
        weakly = np.ones((len(points), len(other)), dtype=bool)
        strictly = np.zeros((len(points), len(other)), dtype=bool)
        for d in range(points.shape[1]):
            a = points[:, d][:, None]
            b = other[:, d][None, :]
            weakly &= b >= a - _EPS
            strictly |= b > a + _EPS
        out |= (weakly & strictly).any(axis=1)
    return out
