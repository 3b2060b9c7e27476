"""Outcome-space analysis: every package of a scenario, enumerated in bounded chunks.

Reports the zone of possible agreement (ZOPA), the Pareto frontier, the Nash bargaining and
Kalai-Smorodinsky packages, and how many packages each decision rule would pass.

Definitions (also in the README). A party *accepts rationally* when the package is worth at least
its walk-away (reservation) utility and breaks none of its red lines. The parties the rule
*needs* are the required ones, the veto holders and those a quorum must include.
- the *ZOPA* (zone of agreement) is the packages the scenario's decision rule would pass if every
  voting party accepted exactly when it accepts rationally;
- a *winning coalition* of a ZOPA package is the needed parties plus, under a quorum, the fewest
  further rational accepters the quorum asks for; the package's *coalition product* is the
  product of that coalition's surpluses over their walk-away utilities, taking the further
  accepters with the largest surpluses (under unanimity of the required parties it is the usual
  Nash product of the required parties);
- the *Nash package* maximizes the coalition product over the ZOPA (ties: the larger sum of every
  voting party's utility); the *Kalai-Smorodinsky package* maximizes the smallest share of each
  coalition member's best surplus over the ZOPA, in the package's most favourable winning
  coalition (ties: the larger sum). Both lie in the ZOPA, so both pass the rule;
- a package is *admissible* when it breaks no red line of a party the rule needs; the *Pareto
  frontier* is the admissible packages that no admissible package dominates in the utilities of
  all voting parties. Under unanimity of the required parties the Nash package is on it.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel

from detente.scenario import Package, Scenario
from detente.scenario import describe_rule as describe_rule  # its home before scenario.py
from detente.space import PackageSpace

DEFAULT_CHUNK = 1 << 16
_EPS = 1e-9


class PackageReport(BaseModel):
    package: Package
    utilities: dict[str, float]
    """Utility of the package for every voting party."""
    nash_product: float
    """The coalition product (see the module's definitions)."""
    coalition: list[str] = []
    """The winning coalition whose surpluses make the product."""


class DecisionCounts(BaseModel):
    required: int
    """Packages every required party would rationally accept with none of their red lines
    broken (the rule's `required` list alone)."""
    decision_rule: int
    """Packages the scenario's full rule passes with rational votes (= the ZOPA)."""
    unanimous: int
    """Packages every voting party would rationally accept."""


class Analysis(BaseModel):
    scenario: str
    voters: list[str]
    required: list[str]
    needed: list[str] = []
    """Parties the rule always needs: required, veto holders, quorum's named members."""
    rule: str = ""
    """The decision rule in words."""
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
    """Each voting party's highest utility over the ZOPA packages it accepts rationally, if the
    ZOPA is set."""


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


def passes_rule(space: PackageSpace, accepts: np.ndarray) -> np.ndarray:
    """Which rows of an (n, voters) acceptance matrix pass the scenario's decision rule."""
    rule = space.scenario.decision
    ok: np.ndarray = np.asarray(accepts[:, space.needed_mask].all(axis=1))
    if rule.quorum is not None:
        ok &= accepts.sum(axis=1) >= rule.quorum.min
    return ok


def coalition_values(
    space: PackageSpace, values: np.ndarray, rational: np.ndarray
) -> np.ndarray:
    """(n, m): per package, the values of its winning coalition's m members.

    The coalition is the needed parties plus the `quorum_extra` rational others with the largest
    values. A package outside the ZOPA gets -inf where a member is missing.
    """
    extra = space.quorum_extra
    if extra == 0 and space.needed_mask.all():
        return values
    needed = values[:, space.needed_mask]
    if extra == 0:
        return needed
    others = np.where(rational[:, ~space.needed_mask], values[:, ~space.needed_mask], -np.inf)
    top = -np.sort(-others, axis=1)[:, :extra]
    return np.concatenate([needed, top], axis=1)


def coalition_members(space: PackageSpace, values: np.ndarray, rational: np.ndarray) -> list[str]:
    """The winning coalition of one package (values and rational are (voters,) rows)."""
    members = [p for p, needed in zip(space.voters, space.needed_mask, strict=True) if needed]
    others = [(float(values[v]), -v) for v in range(len(space.voters))
              if not space.needed_mask[v] and rational[v]]
    for _, neg in sorted(others, reverse=True)[: space.quorum_extra]:
        members.append(space.voters[-neg])
    return [p for p in space.voters if p in members]


def nash_products(
    space: PackageSpace, utilities: np.ndarray, rational: np.ndarray | None = None
) -> np.ndarray:
    """The coalition product of each package (0 outside the ZOPA).

    `rational` is the (n, voters) rational-acceptance matrix; it defaults to "at or above the
    walk-away" (red lines then count as held).
    """
    surplus = utilities - space.reservation
    if rational is None:
        rational = surplus >= -_EPS
    zone = passes_rule(space, rational)
    members = coalition_values(space, surplus, rational)
    product = np.clip(members, 0, None).prod(axis=1)
    return np.where(zone, product, 0.0)


def zone_of_agreement(space: PackageSpace, rational: np.ndarray) -> np.ndarray:
    """(n,) whether each package lies in the ZOPA: the rule passes it with rational votes."""
    return passes_rule(space, rational)


def analyze(
    scenario: Scenario, *, chunk_size: int = DEFAULT_CHUNK, frontier: bool = True
) -> Analysis:
    space = PackageSpace(scenario)
    required = space.required_mask
    counts = {"admissible": 0, "zopa": 0, "required": 0, "unanimous": 0}
    nash = _Best()
    best = np.full(len(space.voters), -np.inf)
    ideal = np.full(len(space.voters), -np.inf)
    """Best utility of each party over the ZOPA packages it accepts rationally."""

    zoned: list[int] = []
    """The blocks that hold ZOPA packages: the second pass visits only these."""
    for number, block in enumerate(space.blocks(chunk_size)):
        zone = zone_of_agreement(space, block.rational)
        counts["admissible"] += int(np.count_nonzero(block.admissible))
        counts["required"] += int(np.count_nonzero(block.rational[:, required].all(axis=1)))
        counts["unanimous"] += int(np.count_nonzero(block.rational.all(axis=1)))
        in_zone = int(np.count_nonzero(zone))
        if in_zone:
            counts["zopa"] += in_zone
            zoned.append(number)
            u = _rows(block.utilities, zone)
            rational = _rows(block.rational, zone)
            nash.offer(nash_products(space, u, rational), u.sum(axis=1), block.flat(zone))
            best = np.maximum(best, np.where(rational, u, -np.inf).max(axis=0))
            ideal = np.maximum(ideal, u.max(axis=0))

    ks = _Best()
    if counts["zopa"]:
        gain = best - space.reservation
        span = np.where(gain > _EPS, gain, 1.0)
        for block in space.blocks(chunk_size, which=set(zoned)):
            zone = zone_of_agreement(space, block.rational)
            u = _rows(block.utilities, zone)
            shares = (u - space.reservation) / span
            members = coalition_values(space, shares, _rows(block.rational, zone))
            ks.offer(members.min(axis=1), u.sum(axis=1), block.flat(zone))

    rule = scenario.decision
    return Analysis(
        scenario=scenario.id,
        voters=space.voters,
        required=list(rule.required),
        needed=[p for p, n in zip(space.voters, space.needed_mask, strict=True) if n],
        rule=describe_rule(scenario),
        reservation_utilities=dict(zip(space.voters, space.reservation.tolist(), strict=True)),
        packages=space.total,
        admissible=counts["admissible"],
        zopa=counts["zopa"],
        zopa_share=counts["zopa"] / space.total,
        counts=DecisionCounts(
            required=counts["required"], decision_rule=counts["zopa"],
            unanimous=counts["unanimous"],
        ),
        pareto_frontier=len(pareto_frontier(space)[1]) if frontier else None,
        nash=_report(space, nash.flat),
        kalai_smorodinsky=_report(space, ks.flat),
        best_for=(
            dict(zip(space.voters, np.where(np.isfinite(best), best, ideal).tolist(),
                     strict=True)) if counts["zopa"] else {}
        ),
    )


def _rows(values: np.ndarray, where: np.ndarray) -> np.ndarray:
    """`values[where]` for a block's voter-major (n, voters) array, kept voter-major: the
    reductions over voters that follow then run along contiguous rows (the same floats)."""
    result: np.ndarray = np.compress(where, values.T, axis=1).T
    return result


def _report(space: PackageSpace, flat: int) -> PackageReport | None:
    if flat < 0:
        return None
    ev = space.evaluate(space.columns_for_flat(np.array([flat])))
    surplus = ev.utilities[0] - space.reservation
    return PackageReport(
        package=space.package_at(flat),
        utilities=dict(zip(space.voters, ev.utilities[0].tolist(), strict=True)),
        nash_product=float(nash_products(space, ev.utilities, ev.rational)[0]),
        coalition=coalition_members(space, surplus, ev.rational[0]),
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

    needed = {p for p, n in zip(space.voters, space.needed_mask, strict=True) if n}
    lines = [line for line in space.red_lines if line.party in needed]
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
    points: np.ndarray, ids: np.ndarray, block: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    """Rows of `points` that no other row dominates (sort-filter-skyline, in blocks).

    A point can only be dominated by one with a larger coordinate sum: after sorting, each
    block needs checking only against the frontier found so far and itself. Those checks are
    orthant queries (`_Orthants`): a few bit operations per candidate and frontier word,
    where comparing every pair costs two float comparisons per pair and dimension.
    """
    if len(points) == 0:
        return points, ids
    order = np.argsort(-points.sum(axis=1), kind="stable")
    points, ids = points[order], ids[order]
    sealed: list[_Orthants] = []
    """The frontier so far, in groups of `_SEGMENT` points."""
    front: list[np.ndarray] = []
    front_ids: list[np.ndarray] = []
    growing = points[:0]
    """The last group's points, until it is full."""
    for start in range(0, len(points), block):
        chunk, chunk_ids = points[start:start + block], ids[start:start + block]
        groups = [*sealed, _Orthants(growing)] if len(growing) else sealed
        for group in groups:
            keep = ~group.dominated(chunk)
            chunk, chunk_ids = chunk[keep], chunk_ids[keep]
            if not len(chunk):
                break
        if len(chunk):
            keep = ~_Orthants(chunk).dominated(chunk)
            chunk, chunk_ids = chunk[keep], chunk_ids[keep]
            front.append(chunk)
            front_ids.append(chunk_ids)
            growing = np.concatenate([growing, chunk])
            while len(growing) >= _SEGMENT:
                sealed.append(_Orthants(growing[:_SEGMENT]))
                growing = growing[_SEGMENT:]
    if not front:
        return points[:0], ids[:0]
    return np.concatenate(front), np.concatenate(front_ids)


_SEGMENT = 1024
"""Frontier points per `_Orthants` group: its tables take dims x SEGMENT^2 / 8 bytes."""


class _Orthants:
    """Which of a few points lie in the dominating orthant of a query point, as bitsets.

    For each dimension d the points are sorted by coordinate d, and row r of table d is the
    set (one bit per point) of the points of rank r or more. The points weakly above a query
    in dimension d (coordinate >= q_d - eps) are then the row at the rank of q_d - eps, and
    the points strictly above it (> q_d + eps) the row at the rank of q_d + eps: a point is
    dominated when some point is in every "weakly above" set and in one "strictly above" set:
    the comparisons of every pair, with the same tolerance, answered for many pairs at once.
    """

    def __init__(self, points: np.ndarray) -> None:
        m, dims = points.shape
        words = (m + 63) // 64
        bits = np.left_shift(np.uint64(1), np.arange(m, dtype=np.uint64) % np.uint64(64))
        self.sorted = np.empty((dims, m))
        self.tables = np.zeros((dims, m + 1, words), dtype=np.uint64)
        for d in range(dims):
            order = np.argsort(points[:, d], kind="stable")
            self.sorted[d] = points[order, d]
            rows = self.tables[d]
            rows[np.arange(m), order // 64] = bits[order]
            # Row r = the points of rank r or more: a cumulative OR from the last rank.
            np.bitwise_or.accumulate(rows[::-1], axis=0, out=rows[::-1])

    def dominated(self, queries: np.ndarray) -> np.ndarray:
        """For each row of `queries`, whether one of the points dominates it."""
        weakly: np.ndarray | None = None
        strictly: np.ndarray | None = None
        for d in range(self.sorted.shape[0]):
            q = queries[:, d]
            above = self.tables[d][np.searchsorted(self.sorted[d], q - _EPS, side="left")]
            beyond = self.tables[d][np.searchsorted(self.sorted[d], q + _EPS, side="right")]
            if weakly is None or strictly is None:
                weakly, strictly = above, beyond
            else:
                weakly &= above
                strictly |= beyond
        if weakly is None or strictly is None:
            return np.zeros(len(queries), dtype=bool)
        result: np.ndarray = (weakly & strictly).any(axis=1)
        return result
