"""From a run's events to `result.json` and `transcript.md`: nothing here calls a model.

`detente replay` uses the same functions, so a scorer change can be applied to old runs.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Literal

from pydantic import BaseModel

from detente.analysis import analyze
from detente.events import (
    ErrorEvent,
    Event,
    Outcome,
    Proposal,
    Response,
    RunHeader,
    RunStatus,
    Statement,
    Tally,
    Usage,
)
from detente.scenario import Package, Scenario
from detente.scoring import Score, score

RESULT_FORMAT_VERSION = 1


class PartyTokens(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    calls: int
    invalid_responses: int


class RedLineVote(BaseModel):
    round: int
    party: str
    red_lines: list[str]


class RunResult(BaseModel):
    format_version: int = RESULT_FORMAT_VERSION
    run_id: str
    scenario_id: str
    scenario_hash: str
    status: RunStatus | Literal["running"]
    reason: str
    rounds: int
    package: Package | None
    """The agreed package (None: no deal)."""
    last_table: Package | None
    """The last package put to a vote."""
    votes: dict[str, Literal["accept", "reject"]]
    scores: Score
    red_lines_broken: dict[str, list[str]]
    """Ids of red lines the outcome breaks, per party."""
    tokens: dict[str, PartyTokens]
    total_tokens: int
    wall_time_seconds: float
    """From the header to the last event."""
    votes_against_own_red_lines: list[RedLineVote] = []
    """Every accept vote, in any round, for a package that broke the voter's own red line."""


def header_of(events: list[Event]) -> RunHeader:
    for e in events:
        if isinstance(e, RunHeader):
            return e
    raise ValueError("the log has no header")


def final_outcome(events: list[Event]) -> Outcome | None:
    outcomes = [e for e in events if isinstance(e, Outcome)]
    return outcomes[-1] if outcomes else None


def build_result(scenario: Scenario, events: list[Event]) -> RunResult:
    header = header_of(events)
    outcome = final_outcome(events)
    tallies = [e for e in events if isinstance(e, Tally)]
    rounds = max((t.round for t in tallies), default=0)
    package = outcome.package if outcome and outcome.status == "deal" else None
    votes = outcome.votes if outcome else (tallies[-1].votes if tallies else {})
    analysis = analyze(scenario, frontier=False)
    scores = score(scenario, package, votes, analysis=analysis)
    against: list[RedLineVote] = []
    for tally in tallies:
        tabled = score(scenario, tally.package, tally.votes, analysis=analysis)
        against += [
            RedLineVote(round=tally.round, party=party,
                        red_lines=[b.id for b in s.red_lines_broken])
            for party, s in tabled.parties.items() if s.voted_against_own_red_line
        ]

    usage: dict[str, Usage] = defaultdict(Usage)
    calls: dict[str, int] = defaultdict(int)
    invalid: dict[str, int] = defaultdict(int)
    for e in events:
        if isinstance(e, Statement | Proposal | Response):
            if e.usage.total:  # a model call; scripted turns cost no tokens
                calls[e.speaker] += 1
            usage[e.speaker] = usage[e.speaker] + e.usage
            invalid[e.speaker] += int(e.invalid)
    tokens = {
        party: PartyTokens(
            prompt_tokens=usage[party].prompt_tokens,
            completion_tokens=usage[party].completion_tokens,
            total_tokens=usage[party].total,
            calls=calls[party],
            invalid_responses=invalid[party],
        )
        for party in scenario.parties
    }
    return RunResult(
        run_id=header.run_id,
        scenario_id=header.scenario_id,
        scenario_hash=header.scenario_hash,
        status=outcome.status if outcome else "running",
        reason=outcome.reason if outcome else "the run has not finished",
        rounds=rounds,
        package=package,
        last_table=tallies[-1].package if tallies else None,
        votes=votes,
        scores=scores,
        red_lines_broken={
            party: [b.id for b in s.red_lines_broken] for party, s in scores.parties.items()
        },
        tokens=tokens,
        total_tokens=sum(t.total_tokens for t in tokens.values()),
        wall_time_seconds=_seconds_between(events[0].time, events[-1].time),
        votes_against_own_red_lines=against,
    )


def _seconds_between(a: str, b: str) -> float:
    def parse(stamp: str) -> datetime:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00"))

    return round((parse(b) - parse(a)).total_seconds(), 3)


# --------------------------------------------------------------------------- markdown


def describe_package(scenario: Scenario, package: Package) -> list[str]:
    """One line per issue and term, with labels."""
    lines = []
    for issue in scenario.issues:
        opt = next((o for o in issue.options if o.id == package.options.get(issue.id)), None)
        label = f"{opt.label} (`{opt.id}`)" if opt else f"`{package.options.get(issue.id)}`"
        lines.append(f"**{issue.label}**: {label}")
    for term in scenario.terms:
        lines.append(f"**{term.label}**: {package.terms.get(term.id, 0):g} {term.unit}")
    return lines


def render_markdown(scenario: Scenario, events: list[Event], result: RunResult) -> str:
    header = header_of(events)
    out: list[str] = [f"# {scenario.title}: run {header.run_id}", ""]
    out += [
        f"- Scenario: `{header.scenario_id}` ({header.scenario_path}), content hash "
        f"`{header.scenario_hash[:12]}`",
        f"- Started: {header.time}; seed {header.seed}; at most {header.max_rounds} rounds; "
        f"detente {header.package_version}",
        "- Agents: " + ", ".join(f"{p} = {a.label()}" for p, a in header.agents.items()),
        f"- Outcome: **{result.status}**: {result.reason}",
        "",
    ]
    names = {p: p for p in scenario.parties}

    openings = [e for e in events if isinstance(e, Statement) and e.kind == "opening"]
    if openings:
        out += ["## Opening statements", ""]
        for opening in openings:
            out += [f"**{names[opening.speaker]}**{_flag(opening.invalid)}:", "",
                    _quote(opening.text), ""]

    by_round: dict[int, list[Event]] = defaultdict(list)
    for event in events:
        r = getattr(event, "round", None)
        if isinstance(r, int) and r > 0:
            by_round[r].append(event)
    for r in sorted(by_round):
        out += [f"## Round {r}", ""]
        for item in by_round[r]:
            if isinstance(item, Proposal):
                out += [f"**{item.speaker}** tables{_flag(item.invalid)}:", ""]
                out += [f"- {line}" for line in describe_package(scenario, item.package)]
                out += ["", _quote(item.rationale), ""]
            elif isinstance(item, Statement):
                who = " and ".join(item.visible_to) if isinstance(item.visible_to, list) else "all"
                out += [f"*Private caucus ({who})*, **{item.speaker}**{_flag(item.invalid)}:",
                        "", _quote(item.text), ""]
        order = {p: k for k, p in enumerate(scenario.parties)}
        responses = sorted((e for e in by_round[r] if isinstance(e, Response)),
                           key=lambda e: order.get(e.speaker, len(order)))
        if responses:
            out += ["| party | vote | objects to (wants instead) |", "|---|---|---|"]
            for e in responses:
                objections = ", ".join(
                    f"{issue} ({s.wants})" if s.wants is not None else issue
                    for issue, s in e.stances.items() if s.stance == "object"
                ) or "none"
                vote = "invalid response (counted as reject)" if e.invalid else e.vote
                out.append(f"| {e.speaker} | {vote} | {objections} |")
            out.append("")
            for e in responses:
                out += [f"**{e.speaker}** (public):", "", _quote(e.statement), ""]
            out += ["<details><summary>Private rationales (never shown to other agents)"
                    "</summary>", ""]
            for e in responses:
                text = "; ".join(e.errors) if e.invalid else e.private_rationale
                out += [f"**{e.speaker}**:", "", _quote(text), ""]
            out += ["</details>", ""]
        for item in by_round[r]:
            if isinstance(item, Tally):
                verdict = "passes" if item.accepted else "fails"
                accepts = sum(v == "accept" for v in item.votes.values())
                out += [f"Tally: the package **{verdict}** the decision rule "
                        f"({accepts} of {len(item.votes)} accept).", ""]
    errors = [item for item in events if isinstance(item, ErrorEvent)]
    if errors:
        out += ["## Errors", ""] + [f"- {item.message}" for item in errors] + [""]

    out += ["## Outcome", "", f"**{result.status}**: {result.reason}", ""]
    if result.package is not None:
        out += [f"- {line}" for line in describe_package(scenario, result.package)] + [""]
    out += ["| party | utility | reservation | surplus | red lines broken | vote |",
            "|---|---|---|---|---|---|"]
    for party, s in result.scores.parties.items():
        broken = ", ".join(b.id for b in s.red_lines_broken) or "none"
        out.append(f"| {party} | {s.utility:.1f} | {s.reservation_utility:.1f} | "
                   f"{s.surplus:+.1f} | {broken} | {s.vote or ''} |")
    if result.votes_against_own_red_lines:
        out += ["", "Votes for a package that broke the voter's own red line: " + "; ".join(
            f"round {v.round}, {v.party} ({', '.join(v.red_lines)})"
            for v in result.votes_against_own_red_lines) + "."]
    deal = result.scores.deal
    out += ["", f"Pareto-optimal: {'yes' if deal.pareto_optimal else 'no'}; Nash product "
            f"{deal.nash_product:,.1f}; distance to the Nash package "
            f"{'n/a' if deal.distance_to_nash is None else f'{deal.distance_to_nash:.1f}'}; "
            f"Gini {deal.gini:.3f}. Tokens: {result.total_tokens:,}; wall time "
            f"{result.wall_time_seconds:.1f} s.", ""]
    return "\n".join(out)


def _quote(text: str) -> str:
    return "\n".join("> " + line for line in (text.strip() or "(nothing said)").splitlines())


def _flag(invalid: bool) -> str:
    return " *(invalid response)*" if invalid else ""
