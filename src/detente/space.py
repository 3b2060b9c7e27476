"""The package space, vectorized: utilities and red lines of many packages at once.

A scenario compiles into one lookup per dimension (issue or numeric term); a batch of packages
is a list of columns, one per dimension (option indices for issues, values for terms). The scorer
and the outcome-space analysis both evaluate packages through `PackageSpace.evaluate`, so a single
package and a million packages are judged by the same code.
"""

from __future__ import annotations

from collections.abc import Container, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from detente.scenario import (
    BoundRedLine,
    Condition,
    ConditionalRedLine,
    ForbidRedLine,
    Package,
    RedLine,
    Scenario,
)

_BOUND_TOLERANCE = 1e-9
"""Relative slack when comparing a term's value with a red line's bound."""

Columns = list[np.ndarray]
"""One array per dimension: int option indices for an issue, float values for a term."""


@dataclass(frozen=True)
class _Predicate:
    """`dimension` satisfies a condition: a lookup table for issues, bounds for terms."""

    dimension: int
    table: np.ndarray | None = None
    low: float = -np.inf
    high: float = np.inf

    def holds(self, columns: Columns) -> np.ndarray:
        column = columns[self.dimension]
        if self.table is not None:
            result: np.ndarray = self.table[column]
            return result
        return (column >= self.low) & (column <= self.high)


@dataclass(frozen=True)
class _CompiledRedLine:
    """Broken where `trigger` holds (always, if None) and `requirement` fails (always, if None)."""

    party: str
    rule: RedLine
    trigger: _Predicate | None
    requirement: _Predicate | None

    @property
    def dimensions(self) -> set[int]:
        return {p.dimension for p in (self.trigger, self.requirement) if p is not None}

    def broken(self, columns: Columns, n: int) -> np.ndarray:
        hit = self.trigger.holds(columns) if self.trigger else np.ones(n, dtype=bool)
        if self.requirement is not None:
            hit = hit & ~self.requirement.holds(columns)
        return hit


@dataclass(frozen=True)
class Block:
    """A contiguous run of the grid, flat indices `start` to `stop`: `rows` consecutive
    positions of the leading dimensions, each with every combination of the trailing ones
    (see `PackageSpace.blocks`). Package `r * combinations + c` is row r with combination c."""

    start: int
    stop: int
    utilities: np.ndarray
    """(n, voters), the same floats `PackageSpace.evaluate` gives."""
    rational: np.ndarray
    """(n, voters), as `Evaluation.rational`."""
    admissible: np.ndarray
    """(n,), as `Evaluation.admissible`."""
    lead: list[np.ndarray]
    """Grid index of each leading dimension, per row."""
    trail: list[np.ndarray]
    """Grid index of each trailing dimension, per combination."""

    @property
    def rows(self) -> int:
        return len(self.lead[0]) if self.lead else 1

    @property
    def combinations(self) -> int:
        return len(self.trail[0]) if self.trail else 1

    def flat(self, where: np.ndarray | None = None) -> np.ndarray:
        """Flat indices of the block's packages (of those where `where` holds)."""
        if where is None:
            return np.arange(self.start, self.stop, dtype=np.int64)
        return self.start + np.flatnonzero(where)

    def index(self, k: int) -> np.ndarray:
        """(n,) grid index of dimension `k` (the option index for an issue) of each package."""
        if k < len(self.lead):
            return np.repeat(self.lead[k], self.combinations)
        return np.tile(self.trail[k - len(self.lead)], self.rows)


@dataclass(frozen=True)
class _Trailing:
    """The trailing dimensions of `PackageSpace.blocks`: their grid, each one's utility table
    shaped to broadcast over it, and their red-line predicates evaluated once on it."""

    first: int
    """The first trailing dimension."""
    index: list[np.ndarray]
    """Grid index of each trailing dimension, per combination (C order)."""
    tables: list[np.ndarray]
    """Per trailing dimension, (1, ..., size, ..., 1, voters): broadcasts over the block."""
    holds: dict[int, np.ndarray]
    """id() of a predicate on a trailing dimension -> (combinations,) where it holds."""

    @property
    def size(self) -> int:
        return len(self.index[0]) if self.index else 1


@dataclass(frozen=True)
class Evaluation:
    """Utilities and red-line verdicts of a batch of n packages."""

    utilities: np.ndarray
    """(n, voters) utility of each package for each voting party."""
    broken: np.ndarray
    """(n, red lines) whether each package breaks each red line (`PackageSpace.red_lines` order)."""
    rational: np.ndarray
    """(n, voters) whether accepting is rational: at/above reservation, no own red line broken."""
    admissible: np.ndarray
    """(n,) no red line broken of a party whose acceptance the rule always needs."""


class PackageSpace:
    """A compiled scenario: the grid of every package and vectorized evaluation of batches."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.voters = scenario.voters
        self.issue_ids = [i.id for i in scenario.issues]
        self.term_ids = [t.id for t in scenario.terms]
        self.dimension_ids = self.issue_ids + self.term_ids
        self.option_ids = [i.option_ids() for i in scenario.issues]
        self.term_values = [t.values() for t in scenario.terms]
        self.sizes = tuple(len(o) for o in self.option_ids) + tuple(
            len(v) for v in self.term_values
        )
        self.total = int(np.prod(np.array(self.sizes, dtype=np.float64)))
        self.reservation = np.array(
            [scenario.preferences[p].reservation_utility for p in self.voters]
        )
        rule = scenario.decision
        self.required_mask = np.array([p in rule.required for p in self.voters])
        """Parties the rule names in `required`."""
        needed = {*rule.required, *rule.veto, *(rule.quorum.including if rule.quorum else [])}
        self.needed_mask = np.array([p in needed for p in self.voters])
        """Parties whose acceptance the rule always needs: required, veto holders and the
        parties a quorum must include."""
        self.quorum_extra = (
            max(0, rule.quorum.min - int(self.needed_mask.sum())) if rule.quorum else 0
        )
        """How many more parties, beyond the needed ones, must accept for a quorum."""
        self._issue_tables: list[np.ndarray] = []  # per issue: (options, voters) weighted
        for k, issue_id in enumerate(self.issue_ids):
            table = np.array(
                [
                    [
                        scenario.preferences[p].weights[issue_id]
                        * scenario.preferences[p].utilities[issue_id][opt]
                        for p in self.voters
                    ]
                    for opt in self.option_ids[k]
                ]
            )
            self._issue_tables.append(table.reshape(len(self.option_ids[k]), len(self.voters)))
        self._term_curves = [
            [
                (
                    scenario.preferences[p].weights[term_id],
                    np.array([x for x, _ in scenario.preferences[p].term_utilities[term_id]]),
                    np.array([u for _, u in scenario.preferences[p].term_utilities[term_id]]),
                )
                for p in self.voters
            ]
            for term_id in self.term_ids
        ]
        self.red_lines: list[_CompiledRedLine] = [
            self._compile(party, line)
            for party in self.voters
            for line in scenario.preferences[party].red_lines
        ]
        self._red_line_owner = np.array(
            [self.voters.index(r.party) for r in self.red_lines], dtype=np.int64
        )
        self._trailing_for: dict[int, _Trailing] = {}

    # ------------------------------------------------------------------ compilation

    def _predicate(self, cond: Condition) -> _Predicate:
        if cond.issue is not None:
            k = self.issue_ids.index(cond.issue)
            wanted = set(cond.options or [])
            table = np.array([opt in wanted for opt in self.option_ids[k]])
            return _Predicate(dimension=k, table=table)
        assert cond.term is not None
        k = len(self.issue_ids) + self.term_ids.index(cond.term)
        # Grid values are min + k * step in floats (0.2 + 0.1 = 0.30000000000000004): a value
        # a hair past a bound is on it.
        low = -np.inf if cond.min is None else cond.min - _BOUND_TOLERANCE * max(1, abs(cond.min))
        high = np.inf if cond.max is None else cond.max + _BOUND_TOLERANCE * max(1, abs(cond.max))
        return _Predicate(dimension=k, low=low, high=high)

    def _compile(self, party: str, line: RedLine) -> _CompiledRedLine:
        if isinstance(line, ForbidRedLine):
            trigger = self._predicate(Condition(issue=line.issue, options=line.options))
            return _CompiledRedLine(party, line, trigger, None)
        if isinstance(line, BoundRedLine):
            bound = Condition(term=line.term, min=line.min, max=line.max)
            return _CompiledRedLine(party, line, None, self._predicate(bound))
        assert isinstance(line, ConditionalRedLine)
        return _CompiledRedLine(
            party, line, self._predicate(line.if_), self._predicate(line.then)
        )

    # ------------------------------------------------------------------ packages <-> columns

    def columns_for_flat(self, flat: np.ndarray) -> Columns:
        """Columns of the packages at the given flat indices of the grid (C order)."""
        indices = np.unravel_index(flat, self.sizes)
        n_issues = len(self.issue_ids)
        columns: Columns = [np.asarray(ix) for ix in indices[:n_issues]]
        columns += [
            self.term_values[k][indices[n_issues + k]] for k in range(len(self.term_ids))
        ]
        return columns

    def columns_for_packages(self, packages: Sequence[Package]) -> Columns:
        columns: Columns = [
            np.array([self.option_ids[k].index(p.options[i]) for p in packages], dtype=np.int64)
            for k, i in enumerate(self.issue_ids)
        ]
        columns += [np.array([p.terms[t] for p in packages], dtype=np.float64)
                    for t in self.term_ids]
        return columns

    def package_at(self, flat: int) -> Package:
        columns = self.columns_for_flat(np.array([flat]))
        n_issues = len(self.issue_ids)
        return Package(
            options={
                issue_id: self.option_ids[k][int(columns[k][0])]
                for k, issue_id in enumerate(self.issue_ids)
            },
            terms={
                term_id: float(columns[n_issues + k][0])
                for k, term_id in enumerate(self.term_ids)
            },
        )

    def dimension_values(self, k: int, index: np.ndarray) -> np.ndarray:
        """Column entries of dimension `k` for grid positions `index`."""
        n_issues = len(self.issue_ids)
        return index if k < n_issues else self.term_values[k - n_issues][index]

    def contributions(self, k: int) -> np.ndarray:
        """(size of dimension k, voters): weighted utility each value adds for each voter."""
        n_issues = len(self.issue_ids)
        if k < n_issues:
            return self._issue_tables[k]
        values = self.term_values[k - n_issues]
        return np.stack(
            [w * np.interp(values, xs, us) for w, xs, us in self._term_curves[k - n_issues]],
            axis=1,
        )

    def chunks(self, chunk_size: int) -> Iterator[tuple[np.ndarray, Columns]]:
        """The whole grid in batches of at most `chunk_size` packages: (flat indices, columns)."""
        for start in range(0, self.total, chunk_size):
            flat = np.arange(start, min(start + chunk_size, self.total), dtype=np.int64)
            yield flat, self.columns_for_flat(flat)

    def blocks(self, chunk_size: int, which: Container[int] | None = None) -> Iterator[Block]:
        """The whole grid, evaluated in blocks of at most `chunk_size` packages, in flat order.

        A block is some rows of the leading dimensions times every combination of the
        trailing ones (the longest run of last dimensions with at most `chunk_size`
        combinations), so its utilities are one small gather per row and one broadcast
        addition per trailing dimension: no per-package index arithmetic. They are summed
        dimension by dimension in the order `evaluate` uses, so every float is the same.
        `which` keeps only the blocks of those numbers (0 is the first block).
        """
        trailing = self._trailing(chunk_size)
        total_rows = self.total // trailing.size
        step = max(1, chunk_size // trailing.size)
        for number, row in enumerate(range(0, total_rows, step)):
            if which is None or number in which:
                yield self._block(trailing, row, min(row + step, total_rows))

    def _trailing(self, chunk_size: int) -> _Trailing:
        found = self._trailing_for.get(chunk_size)
        if found is not None:
            return found
        first, size = len(self.sizes), 1
        while first > 0 and size * self.sizes[first - 1] <= chunk_size:
            first -= 1
            size *= self.sizes[first]
        sizes = self.sizes[first:]
        index = [np.asarray(ix) for ix in np.unravel_index(np.arange(size), sizes)] \
            if sizes else []
        tables = []
        for j, k in enumerate(range(first, len(self.sizes))):
            shape = [1] * (len(sizes) + 2)
            shape[0], shape[2 + j] = len(self.voters), sizes[j]
            tables.append(np.ascontiguousarray(self.contributions(k).T).reshape(shape))
        columns: Columns = [np.empty(0)] * first + [
            self.dimension_values(k, index[k - first]) for k in range(first, len(self.sizes))
        ]
        holds = {
            id(p): p.holds(columns)
            for line in self.red_lines for p in (line.trigger, line.requirement)
            if p is not None and p.dimension >= first
        }
        found = _Trailing(first, index, tables, holds)
        self._trailing_for[chunk_size] = found
        return found

    def _block(self, trailing: _Trailing, row: int, stop: int) -> Block:
        first, rows, n_voters = trailing.first, stop - row, len(self.voters)
        lead = [np.asarray(ix) for ix in np.unravel_index(np.arange(row, stop),
                                                            self.sizes[:first])] \
            if first else []
        lead_columns = [self.dimension_values(k, lead[k]) for k in range(first)]
        head = np.zeros((rows, n_voters))
        n_issues = len(self.issue_ids)
        for k in range(first):  # the leading dimensions, in evaluate's order
            if k < n_issues:
                head += self._issue_tables[k][lead[k]]
            else:
                head += np.stack([w * np.interp(lead_columns[k], xs, us)
                                  for w, xs, us in self._term_curves[k - n_issues]], axis=1)
        # then the trailing ones, one broadcast addition each (the same floats, same order).
        # Voter-major in memory: per-voter work and reductions over voters run on contiguous
        # rows; `utilities` is the (n, voters) view of it.
        grid = (n_voters, rows, *self.sizes[first:])
        combinations = trailing.size
        if trailing.tables:
            summed = np.empty(grid)
            np.add(head.T.reshape(n_voters, rows, *[1] * (len(grid) - 2)),
                   trailing.tables[0], out=summed)
            for table in trailing.tables[1:]:
                summed += table
        else:
            summed = np.ascontiguousarray(head.T)
        utilities = summed.reshape(n_voters, rows * combinations).T

        rational = utilities >= self.reservation - 1e-9  # voter-major too (numpy keeps order)
        by_row = rational.T.reshape(n_voters, rows, combinations)
        admissible = np.ones((rows, combinations), dtype=bool)
        broken: dict[int, np.ndarray] = {}
        for line, owner in zip(self.red_lines, self._red_line_owner.tolist(), strict=True):
            hit = self._block_hit(line, trailing, lead_columns)
            broken[owner] = hit if owner not in broken else broken[owner] | hit
        for owner, hit in broken.items():
            by_row[owner] &= ~hit
            if self.needed_mask[owner]:
                admissible &= ~hit
        return Block(row * combinations, stop * combinations, utilities, rational,
                     admissible.reshape(-1), lead, trailing.index)

    @staticmethod
    def _block_hit(line: _CompiledRedLine, trailing: _Trailing, lead: Columns) -> np.ndarray:
        """Where `line` is broken in a block: (rows, 1), (1, combinations) or (rows, c)."""

        def holds(p: _Predicate) -> np.ndarray:
            if p.dimension >= trailing.first:
                return trailing.holds[id(p)][None, :]
            return p.holds(lead)[:, None]

        if line.requirement is None:
            assert line.trigger is not None
            return holds(line.trigger)
        missed = ~holds(line.requirement)
        return missed if line.trigger is None else holds(line.trigger) & missed

    # ------------------------------------------------------------------ evaluation

    def evaluate(self, columns: Columns) -> Evaluation:
        n = len(columns[0]) if columns else 1
        utilities = np.zeros((n, len(self.voters)))
        for k, table in enumerate(self._issue_tables):
            utilities += table[columns[k]]
        n_issues = len(self.issue_ids)
        for k, curves in enumerate(self._term_curves):
            values = columns[n_issues + k]
            for v, (weight, xs, us) in enumerate(curves):
                utilities[:, v] += weight * np.interp(values, xs, us)
        broken = np.zeros((n, len(self.red_lines)), dtype=bool)
        for r, line in enumerate(self.red_lines):
            broken[:, r] = line.broken(columns, n)
        broken_by_party = np.zeros((n, len(self.voters)), dtype=bool)
        for v in range(len(self.voters)):
            own = self._red_line_owner == v
            if own.any():
                broken_by_party[:, v] = broken[:, own].any(axis=1)
        # Utilities are sums of floats; a hair below the reservation is still at it.
        at_least_reservation = utilities >= self.reservation - 1e-9
        rational = at_least_reservation & ~broken_by_party
        admissible = np.asarray(~broken_by_party[:, self.needed_mask].any(axis=1))
        return Evaluation(utilities, broken, rational, admissible)


def gini(values: np.ndarray) -> float:
    """Gini coefficient of non-negative values (0 = equal, towards 1 = concentrated)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0 or values.sum() <= 0:
        return 0.0
    diffs = np.abs(values[:, None] - values[None, :]).sum()
    return float(diffs / (2 * values.size**2 * values.mean()))


def dominated_by_any(point: np.ndarray, others: np.ndarray) -> bool:
    """Whether some row of `others` is at least as good as `point` everywhere and better once."""
    if others.size == 0:
        return False
    weakly = (others >= point - 1e-9).all(axis=1)
    strictly = (others > point + 1e-9).any(axis=1)
    return bool((weakly & strictly).any())
