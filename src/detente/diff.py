"""Two runs side by side, round by round: where their tables, votes and outcomes part ways.

`diff_runs(run_a, run_b)` reads both run folders (`detente.runs.RunFolder`: the events by round
and `result.json`) and aligns them by round and by issue (and numeric term): for every round
either run reached, the package on the table in each run, which issues differ between the runs,
which issues each run's proposer changed since that run's previous table, and which parties voted
or objected differently. Then the outcomes per party: utilities, their difference (B minus A) and
the red lines broken.

Runs of different scenarios can be diffed when their packages share issue ids (issues only one
run has show as missing on the other side). Nothing here prints.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from pydantic import BaseModel

from detente.comparison import agents_label
from detente.errors import InputError, Problem
from detente.events import Proposal, Response, Tally
from detente.report import RunResult
from detente.runs import RunFolder
from detente.scenario import Package

Value = str | float | None
"""An option id (issues), a number (terms), or None (not on that run's table)."""


class RunRef(BaseModel):
    run_dir: str
    run_id: str
    scenario_id: str
    seed: int
    agents: str
    status: str
    reason: str
    rounds: int


class IssueCell(BaseModel):
    """One issue (or term) of one round: what each run's table says."""

    issue: str
    a: Value
    b: Value
    same: bool
    changed_in_a: bool = False
    """A's proposer changed this issue since A's previous table (never in a run's first round)."""
    changed_in_b: bool = False


class PartyMove(BaseModel):
    """One party's answer to the table in one round, in each run."""

    party: str
    vote_a: str | None
    """accept, reject, invalid (no valid answer; counted as a rejection) or None (no answer)."""
    vote_b: str | None
    objects_a: dict[str, Value]
    """Issues the party objected to, with what it wanted instead (None: nothing named)."""
    objects_b: dict[str, Value]
    differs: bool
    """The vote or the objections differ between the runs."""


class RoundDiff(BaseModel):
    round: int
    reached_a: bool
    """Run A reached this round."""
    reached_b: bool
    proposer_a: str | None
    proposer_b: str | None
    issues: list[IssueCell]
    tables_differ: bool
    passed_a: bool | None
    passed_b: bool | None
    parties: list[PartyMove]
    moved: list[str]
    """Parties whose vote or objections differ between A and B in this round."""
    changed_a: list[str]
    """Issues A's proposer changed since A's previous round."""
    changed_b: list[str]

    @property
    def diverges(self) -> bool:
        return (self.tables_differ or bool(self.moved) or self.passed_a != self.passed_b
                or self.reached_a != self.reached_b or self.proposer_a != self.proposer_b)


class PartyOutcome(BaseModel):
    party: str
    utility_a: float | None
    utility_b: float | None
    delta: float | None
    """utility_b - utility_a."""
    red_lines_a: list[str]
    red_lines_b: list[str]


class OutcomeDiff(BaseModel):
    status_a: str
    status_b: str
    reason_a: str
    reason_b: str
    rounds_a: int
    rounds_b: int
    package: list[IssueCell]
    """The agreed packages issue by issue (None on a side without a deal)."""
    parties: list[PartyOutcome]
    distance_to_nash_a: float | None
    distance_to_nash_b: float | None


class RunDiff(BaseModel):
    a: RunRef
    b: RunRef
    same_scenario: bool
    issues: list[str]
    """Issue and term ids in table order: A's first, then any only B has."""
    rounds: list[RoundDiff]
    first_divergence: int | None
    """The first round whose tables, votes, objections or tally differ, or that only one run
    reached; None if the runs never differ round by round."""
    summary: list[str]
    """Sentences saying where and how the runs diverge, and how their outcomes differ."""
    outcome: OutcomeDiff


class _Run:
    """A run folder's proposals, tallies and answers indexed by round; its `result.json` is
    needed (a run without one is rebuilt by `detente replay`, which needs the scenario)."""

    def __init__(self, run_dir: Path) -> None:
        folder = RunFolder(run_dir)
        self.dir = folder.path
        self.header = folder.header
        self.result: RunResult = folder.stored_result
        self.proposals: dict[int, Proposal] = {}
        self.tallies: dict[int, Tally] = {}
        self.responses: dict[int, dict[str, Response]] = {}
        for round_, events in folder.by_round().items():
            for e in events:
                if isinstance(e, Proposal):
                    self.proposals[round_] = e
                elif isinstance(e, Tally):
                    self.tallies[round_] = e
                elif isinstance(e, Response):
                    self.responses.setdefault(round_, {})[e.speaker] = e
        self.rounds = sorted(set(self.proposals) | set(self.tallies) | set(self.responses))

    def table(self, round_: int) -> Package | None:
        if round_ in self.proposals:
            return self.proposals[round_].package
        tally = self.tallies.get(round_)
        return tally.package if tally else None

    def issue_ids(self) -> list[str]:
        packages: list[Package] = [p for p in (self.table(r) for r in self.rounds) if p]
        packages += [p for p in (self.result.package, self.result.last_table) if p]
        return _ordered(k for p in packages for k in [*p.options, *p.terms])

    def ref(self) -> RunRef:
        return RunRef(run_dir=str(self.dir), run_id=self.header.run_id,
                      scenario_id=self.header.scenario_id, seed=self.header.seed,
                      agents=agents_label(self.header.agents), status=self.result.status,
                      reason=self.result.reason, rounds=self.result.rounds_played)


def _ordered(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _value(package: Package | None, issue: str) -> Value:
    if package is None:
        return None
    if issue in package.options:
        return package.options[issue]
    return package.terms.get(issue)


def _cells(issues: Sequence[str], a: Package | None, b: Package | None) -> list[IssueCell]:
    return [IssueCell(issue=i, a=_value(a, i), b=_value(b, i), same=_value(a, i) == _value(b, i))
            for i in issues]


def _changed(issues: Sequence[str], before: Package | None, now: Package | None) -> list[str]:
    if before is None or now is None:
        return []
    return [i for i in issues if _value(before, i) != _value(now, i)]


def _vote(response: Response | None) -> str | None:
    if response is None:
        return None
    return "invalid" if response.invalid else response.vote


def _objections(response: Response | None) -> dict[str, Value]:
    if response is None or response.invalid:
        return {}
    return {issue: s.wants for issue, s in response.stances.items() if s.stance == "object"}


def format_value(value: Value) -> str:
    """An option id, a number formatted with `g`, or `-` for a missing value."""
    if value is None:
        return "-"
    return f"{value:g}" if isinstance(value, float | int) else str(value)


def diff_runs(run_a: Path | str, run_b: Path | str) -> RunDiff:
    """Align two run folders by round and issue. Raises InputError for a path that is not a run
    folder, or for runs of different scenarios whose packages share no issue id."""
    a, b = _Run(Path(run_a)), _Run(Path(run_b))
    same_scenario = a.header.scenario_id == b.header.scenario_id
    ids_a, ids_b = a.issue_ids(), b.issue_ids()
    if not same_scenario and not set(ids_a) & set(ids_b):
        raise InputError(f"{run_a} vs {run_b}", [Problem(
            "", f"runs of different scenarios ('{a.header.scenario_id}' and "
                f"'{b.header.scenario_id}') share no issue ids: nothing to align")])
    issues = _ordered([*ids_a, *ids_b])
    party_order = _ordered([*a.header.agents, *b.header.agents])

    rounds: list[RoundDiff] = []
    for r in sorted(set(a.rounds) | set(b.rounds)):
        table_a, table_b = a.table(r), b.table(r)
        cells = _cells(issues, table_a, table_b)
        changed_a = _changed(issues, a.table(r - 1), table_a)
        changed_b = _changed(issues, b.table(r - 1), table_b)
        for cell in cells:
            cell.changed_in_a = cell.issue in changed_a
            cell.changed_in_b = cell.issue in changed_b
        resp_a, resp_b = a.responses.get(r, {}), b.responses.get(r, {})
        moves = []
        for party in party_order:
            if party not in resp_a and party not in resp_b:
                continue
            ra, rb = resp_a.get(party), resp_b.get(party)
            va, vb = _vote(ra), _vote(rb)
            oa, ob = _objections(ra), _objections(rb)
            moves.append(PartyMove(party=party, vote_a=va, vote_b=vb, objects_a=oa,
                                   objects_b=ob, differs=(va, oa) != (vb, ob)))
        tally_a, tally_b = a.tallies.get(r), b.tallies.get(r)
        proposer_a = a.proposals[r].speaker if r in a.proposals else None
        proposer_b = b.proposals[r].speaker if r in b.proposals else None
        rounds.append(RoundDiff(
            round=r,
            reached_a=r in a.rounds,
            reached_b=r in b.rounds,
            proposer_a=proposer_a,
            proposer_b=proposer_b,
            issues=cells,
            tables_differ=any(not c.same for c in cells),
            passed_a=tally_a.accepted if tally_a else None,
            passed_b=tally_b.accepted if tally_b else None,
            parties=moves,
            moved=[m.party for m in moves if m.differs],
            changed_a=changed_a,
            changed_b=changed_b,
        ))

    outcome = _outcome(issues, a.result, b.result, party_order)
    first = next((rd for rd in rounds if rd.diverges), None)
    return RunDiff(
        a=a.ref(), b=b.ref(), same_scenario=same_scenario, issues=issues, rounds=rounds,
        first_divergence=first.round if first else None,
        summary=_summary(rounds, outcome),
        outcome=outcome,
    )


def _outcome(issues: Sequence[str], a: RunResult, b: RunResult,
             party_order: Sequence[str]) -> OutcomeDiff:
    parties = []
    scored = _ordered([p for p in party_order
                       if p in a.scores.parties or p in b.scores.parties])
    for party in scored:
        sa, sb = a.scores.parties.get(party), b.scores.parties.get(party)
        ua = sa.utility if sa else None
        ub = sb.utility if sb else None
        parties.append(PartyOutcome(
            party=party, utility_a=ua, utility_b=ub,
            delta=ub - ua if ua is not None and ub is not None else None,
            red_lines_a=[x.id for x in sa.red_lines_broken] if sa else [],
            red_lines_b=[x.id for x in sb.red_lines_broken] if sb else [],
        ))
    return OutcomeDiff(
        status_a=a.status, status_b=b.status, reason_a=a.reason, reason_b=b.reason,
        rounds_a=a.rounds_played, rounds_b=b.rounds_played,
        package=_cells(issues, a.package, b.package),
        parties=parties,
        distance_to_nash_a=a.scores.deal.distance_to_nash,
        distance_to_nash_b=b.scores.deal.distance_to_nash,
    )


def _describe_votes(moves: Sequence[PartyMove]) -> list[str]:
    out = []
    for m in moves:
        if m.vote_a != m.vote_b:
            out.append(f"{m.party} votes {m.vote_a or 'nothing'} in A, {m.vote_b or 'nothing'} "
                       "in B")
        else:
            only_a = sorted(set(m.objects_a) - set(m.objects_b))
            only_b = sorted(set(m.objects_b) - set(m.objects_a))
            other = sorted(i for i in set(m.objects_a) & set(m.objects_b)
                           if m.objects_a[i] != m.objects_b[i])
            bits = []
            if only_a:
                bits.append(f"objects to {', '.join(only_a)} only in A")
            if only_b:
                bits.append(f"objects to {', '.join(only_b)} only in B")
            if other:
                bits.append(f"wants something else on {', '.join(other)}")
            out.append(f"{m.party} votes {m.vote_a} in both but " + "; ".join(bits))
    return out


def _summary(rounds: Sequence[RoundDiff], outcome: OutcomeDiff) -> list[str]:
    first = next((rd for rd in rounds if rd.diverges), None)
    out: list[str] = []
    if first is None:
        out.append("The runs go the same way in every round: same tables, votes and tallies.")
    else:
        r = first.round
        if not (first.reached_a and first.reached_b):
            only, other = ("A", "B") if first.reached_a else ("B", "A")
            out.append(f"Round {r}: only {only} reaches this round; {other} ended after "
                       f"{r - 1}.")
        else:
            if first.proposer_a != first.proposer_b:
                out.append(f"Round {r}: {first.proposer_a} tables in A, {first.proposer_b} "
                           "in B.")
            differing = [c for c in first.issues if not c.same]
            if differing:
                what = ", ".join(f"{c.issue} (A {format_value(c.a)}, B {format_value(c.b)})"
                                 for c in differing)
                out.append(f"Round {r}: the tables first differ, on {what}.")
            moved = [m for m in first.parties if m.differs]
            if moved:
                out.append(f"Round {r}: " + "; ".join(_describe_votes(moved)) + ".")
            if first.passed_a != first.passed_b:
                out.append(f"Round {r}: the package {_passes(first.passed_a)} in A and "
                           f"{_passes(first.passed_b)} in B.")
        if not first.tables_differ:
            later = next((rd for rd in rounds if rd.round > r and rd.tables_differ), None)
            if later is not None:
                what = ", ".join(f"{c.issue} (A {format_value(c.a)}, B {format_value(c.b)})"
                                 for c in later.issues if not c.same)
                out.append(f"Round {later.round}: the tables first differ, on {what}.")
    out.append(f"Outcome: A {outcome.status_a} after {outcome.rounds_a} rounds, B "
               f"{outcome.status_b} after {outcome.rounds_b} rounds.")
    deltas = [p for p in outcome.parties if p.delta]
    if deltas:
        out.append("Utility B - A: " + ", ".join(f"{p.party} {p.delta:+.1f}" for p in deltas)
                   + ".")
    for p in outcome.parties:
        if p.red_lines_a != p.red_lines_b:
            out.append(f"{p.party}'s red lines broken: A {', '.join(p.red_lines_a) or 'none'}; "
                       f"B {', '.join(p.red_lines_b) or 'none'}.")
    return out


def _passes(passed: bool | None) -> str:
    return "passes" if passed else ("fails" if passed is False else "is not voted on")

