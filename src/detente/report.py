"""From a run's events to `result.json` and `transcript.md`: nothing here calls a model.

`detente replay` uses the same functions, so a scorer change can be applied to old runs.
"""

from __future__ import annotations

import html
from collections import defaultdict
from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, model_validator

from detente.costs import RunCost, format_usd
from detente.events import (
    AgentSettings,
    ErrorEvent,
    Event,
    Inject,
    Outcome,
    Proposal,
    RefusedProposal,
    Response,
    RunHeader,
    RunStatus,
    Statement,
    Tally,
    ToolCall,
    Usage,
)
from detente.scenario import INCENTIVES, Incentive, Package, Scenario, describe_rule
from detente.scoring import Score

# Scoring a run needs numpy (detente.analysis, detente.space): imported where a result is built,
# so reading a stored result and rendering it (detente show) never loads it.

RESULT_FORMAT_VERSION = 3
"""2: per-round measures (`rounds`), the best round, run metrics and the upper-bound flag.
3: what the model calls cost (`cost`: in all, per party and per round, with the prices used);
`tokens` count refused proposals and turns cut short too."""

FLAG_TEXT = {
    "accepted_below_walk_away": "accepted below its walk-away",
    "accepted_across_red_line": "accepted across its own red line",
    "accepted_objecting_to_all": "accepted while objecting to every issue",
    "rejected_accepting_all": "rejected while accepting every issue",
    "invalid_answer": "gave no valid answer",
}
"""Inconsistent answers, flagged per party and round."""


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


class PartyRound(BaseModel):
    """One party in one round: what the table was worth to it and how it answered."""

    vote: Literal["accept", "reject"] | None
    utility: float
    surplus: float
    """Utility minus the party's walk-away utility."""
    red_lines_broken: list[str]
    value_estimate: float | None = None
    """The party's own estimate of the table's worth to it (LLM parties)."""
    estimate_error: float | None = None
    """Estimate minus the true utility."""
    flags: list[str] = []
    """Inconsistent answers: keys of `FLAG_TEXT`."""


class RoundMeasures(BaseModel):
    round: int
    proposer: str
    package: Package
    refused: int = 0
    """Re-tablings of rejected packages refused before this package was tabled."""
    repeats_rejected: bool = False
    """The package itself had been rejected before (it stood after every refusal)."""
    accepts: int
    passed: bool
    """The votes passed the decision rule."""
    in_zone: bool
    """The rule would pass the package if every party voted by its own values and red lines."""
    nash_product: float
    """The coalition product of the package (0 outside the zone of agreement)."""
    breaks_needed_red_line: bool
    """The package breaks a red line of a party whose acceptance the rule needs."""
    parties: dict[str, PartyRound]


class Rate(BaseModel):
    count: int
    n: int
    rate: float | None
    """count / n; None when n is 0."""


def rate(count: int, n: int) -> Rate:
    return Rate(count=count, n=n, rate=count / n if n else None)


class RunMetrics(BaseModel):
    """The standard measures of multi-party negotiation benchmarks, for one run."""

    deal: bool
    """The votes passed a package (the run's outcome)."""
    deal_any_round: bool
    """Some tabled package lay in the zone of agreement: with every party voting by its own
    values and red lines, the rule would have passed it (LLM-Deliberation's "any deal")."""
    deal_final_round: bool
    """The last tabled package lay in the zone of agreement ("final deal")."""
    red_line_proposals: Rate
    """Proposals (tabled packages) that break a red line of a party the rule needs."""
    invalid_answers: dict[str, Rate]
    """Per party: turns without a valid answer after every retry (format failures)."""
    estimation_error: dict[str, float | None]
    """Per party: mean absolute error of its value estimates (None: it gave none)."""
    inconsistent_votes: dict[str, int]
    """Per party: rounds flagged for an inconsistent answer."""


class RunResult(BaseModel):
    format_version: int = RESULT_FORMAT_VERSION

    @model_validator(mode="before")
    @classmethod
    def _from_format_1(cls, data: Any) -> Any:
        """Format 1 kept the number of rounds in `rounds`; it is `rounds_played` now."""
        if isinstance(data, dict) and isinstance(data.get("rounds"), int):
            data = {**data, "rounds_played": data["rounds"]}
            data.pop("rounds")
        return data

    run_id: str
    scenario_id: str
    scenario_hash: str
    status: RunStatus | Literal["running"]
    reason: str
    rounds_played: int
    """How many rounds were tallied."""
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
    upper_bound: bool = False
    """The mediator was the oracle: a reference run, an upper bound on what agents reach."""
    rounds: list[RoundMeasures] = []
    """Every round's table measured for every party (see `RoundMeasures`)."""
    best_round: int | None = None
    """The round with the most accepts (then the highest coalition product)."""
    incentives: dict[str, Incentive] = {}
    """The private incentives the scenario overlaid on parties' briefs (none: {}); the
    scorer ignores them, `detente compare` reports whether a saboteur succeeded."""
    metrics: RunMetrics | None = None
    cost: RunCost | None = None
    """What the run's model calls cost, priced with the table in effect when this result was
    written (see `detente.costs`); None in results written before format 3."""


def header_of(events: list[Event]) -> RunHeader:
    for e in events:
        if isinstance(e, RunHeader):
            return e
    raise ValueError("the log has no header")


def final_outcome(events: list[Event]) -> Outcome | None:
    outcomes = [e for e in events if isinstance(e, Outcome)]
    return outcomes[-1] if outcomes else None


def build_result(scenario: Scenario, events: list[Event]) -> RunResult:
    from detente.analysis import analyze
    from detente.costs import run_cost
    from detente.scoring import score

    header = header_of(events)
    outcome = final_outcome(events)
    tallies = [e for e in events if isinstance(e, Tally)]
    rounds = max((t.round for t in tallies), default=0)
    package = outcome.package if outcome and outcome.status == "deal" else None
    votes = outcome.votes if outcome else (tallies[-1].votes if tallies else {})
    # Scored against the walk-aways in force in the last round played (a `walk_away` event
    # during the talks changes one from its round on).
    final = scenario.at_round(rounds)
    analysis = analyze(final, frontier=False)
    scores = score(final, package, votes, analysis=analysis)
    against = votes_against_own_red_lines(scenario, tallies)

    usage: dict[str, Usage] = defaultdict(Usage)
    calls: dict[str, int] = defaultdict(int)
    invalid: dict[str, int] = defaultdict(int)
    for e in events:
        if isinstance(e, Statement | Proposal | Response | RefusedProposal):
            if e.usage.total:  # a model call; scripted turns cost no tokens
                calls[e.speaker] += 1
            usage[e.speaker] = usage[e.speaker] + e.usage
            invalid[e.speaker] += int(getattr(e, "invalid", False))
        elif isinstance(e, ErrorEvent) and e.speaker is not None:
            usage[e.speaker] = usage[e.speaker] + e.usage  # a turn cut short
    measured = measure_rounds(scenario, events)
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
        rounds_played=rounds,
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
        upper_bound=any(a.upper_bound for a in header.agents.values()),
        rounds=measured,
        best_round=best_round(measured),
        incentives=dict(scenario.incentives),
        metrics=run_metrics(scenario, events, measured, package is not None),
        cost=run_cost(header, events),
    )


def votes_against_own_red_lines(scenario: Scenario, tallies: list[Tally]) -> list[RedLineVote]:
    """Every accept of a tabled package that breaks the voter's own red lines, in round order
    (one evaluation of all the tables, not a full score per round)."""
    if not tallies:
        return []
    import numpy as np

    from detente.space import PackageSpace

    space = PackageSpace(scenario)
    ev = space.evaluate(space.columns_for_packages([t.package for t in tallies]))
    against: list[RedLineVote] = []
    for i, tally in enumerate(tallies):
        broken = [space.red_lines[r] for r in np.flatnonzero(ev.broken[i])]
        for party in space.voters:
            own = [b.rule.id for b in broken if b.party == party]
            if own and tally.votes.get(party) == "accept":
                against.append(RedLineVote(round=tally.round, party=party, red_lines=own))
    return against


def measure_rounds(scenario: Scenario, events: list[Event]) -> list[RoundMeasures]:
    """Every tallied round's table, valued for every party, with its answers and flags;
    surpluses, rational acceptance and the zone of agreement against the walk-aways in force
    in that round."""
    tallies = [e for e in events if isinstance(e, Tally)]
    if not tallies:
        return []
    import numpy as np

    from detente.analysis import nash_products, zone_of_agreement
    from detente.space import PackageSpace

    space = PackageSpace(scenario)
    ev = space.evaluate(space.columns_for_packages([t.package for t in tallies]))
    zone = zone_of_agreement(space, ev.rational)
    products = nash_products(space, ev.utilities, ev.rational)
    reservations = np.tile(space.reservation, (len(tallies), 1))
    spaces: dict[tuple[float, ...], PackageSpace] = {}
    for k, tally in enumerate(tallies):
        at = scenario.at_round(tally.round)
        if at is scenario:
            continue
        key = tuple(at.preferences[p].reservation_utility for p in at.voters)
        moved = spaces.setdefault(key, PackageSpace(at))
        row = moved.evaluate(moved.columns_for_packages([tally.package]))
        zone[k] = zone_of_agreement(moved, row.rational)[0]
        products[k] = nash_products(moved, row.utilities, row.rational)[0]
        reservations[k] = moved.reservation
    needed = {p for p, n in zip(space.voters, space.needed_mask, strict=True) if n}
    proposals = {e.round: e for e in events if isinstance(e, Proposal)}
    refused: dict[int, int] = defaultdict(int)
    for e in events:
        if isinstance(e, RefusedProposal):
            refused[e.round] += 1
    responses = {(e.round, e.speaker): e for e in events if isinstance(e, Response)}
    out: list[RoundMeasures] = []
    for k, tally in enumerate(tallies):
        broken: dict[str, list[str]] = defaultdict(list)
        for r in np.flatnonzero(ev.broken[k]):
            line = space.red_lines[r]
            broken[line.party].append(line.rule.id)
        parties: dict[str, PartyRound] = {}
        for v, party in enumerate(space.voters):
            utility = float(ev.utilities[k, v])
            surplus = utility - float(reservations[k, v])
            response = responses.get((tally.round, party))
            vote = tally.votes.get(party)
            estimate = response.value_estimate if response is not None else None
            parties[party] = PartyRound(
                vote=vote, utility=utility, surplus=surplus,
                red_lines_broken=broken.get(party, []),
                value_estimate=estimate,
                estimate_error=None if estimate is None else estimate - utility,
                flags=_flags(vote, surplus, bool(broken.get(party)), response),
            )
        proposal = proposals.get(tally.round)
        out.append(RoundMeasures(
            round=tally.round,
            proposer=proposal.speaker if proposal is not None else "",
            package=tally.package,
            refused=refused[tally.round],
            repeats_rejected=proposal.repeats_rejected if proposal is not None else False,
            accepts=sum(v == "accept" for v in tally.votes.values()),
            passed=tally.accepted,
            in_zone=bool(zone[k]),
            nash_product=float(products[k]),
            breaks_needed_red_line=any(broken.get(p) for p in needed),
            parties=parties,
        ))
    return out


def _flags(vote: str | None, surplus: float, broken: bool, response: Response | None) -> list[str]:
    if response is not None and response.invalid:
        return ["invalid_answer"]
    flags: list[str] = []
    if vote == "accept":
        if surplus < -1e-9:
            flags.append("accepted_below_walk_away")
        if broken:
            flags.append("accepted_across_red_line")
    if response is not None and response.stances:
        stances = [s.stance for s in response.stances.values()]
        if vote == "accept" and all(s == "object" for s in stances):
            flags.append("accepted_objecting_to_all")
        if vote == "reject" and all(s == "accept" for s in stances):
            flags.append("rejected_accepting_all")
    return flags


def best_round(rounds: list[RoundMeasures]) -> int | None:
    """Most accepts, then the highest coalition product; the earliest on a tie."""
    if not rounds:
        return None
    best = max(rounds, key=lambda m: (m.accepts, m.nash_product, -m.round))
    return best.round


def run_metrics(
    scenario: Scenario, events: list[Event], rounds: list[RoundMeasures], deal: bool
) -> RunMetrics:
    turns: dict[str, int] = defaultdict(int)
    invalid: dict[str, int] = defaultdict(int)
    for e in events:
        if isinstance(e, Statement | Proposal | Response | RefusedProposal) and (
            not isinstance(e, Statement) or e.kind != "caucus"
        ):
            turns[e.speaker] += 1
            invalid[e.speaker] += int(getattr(e, "invalid", False))
    import numpy as np

    errors: dict[str, list[float]] = defaultdict(list)
    inconsistent: dict[str, int] = defaultdict(int)
    for m in rounds:
        for party, pr in m.parties.items():
            if pr.estimate_error is not None:
                errors[party].append(abs(pr.estimate_error))
            if any(f != "invalid_answer" for f in pr.flags):
                inconsistent[party] += 1
    return RunMetrics(
        deal=deal,
        deal_any_round=any(m.in_zone for m in rounds),
        deal_final_round=bool(rounds) and rounds[-1].in_zone,
        red_line_proposals=rate(sum(m.breaks_needed_red_line for m in rounds), len(rounds)),
        invalid_answers={p: rate(invalid[p], turns[p]) for p in scenario.parties},
        estimation_error={p: (float(np.mean(errors[p])) if errors[p] else None)
                          for p in scenario.voters},
        inconsistent_votes={p: inconsistent[p] for p in scenario.voters},
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


UPPER_BOUND_NOTE = ("**Reference run: an upper bound.** The mediator is the oracle, which knows "
                    "every party's utilities, walk-aways and red lines and tables the Nash "
                    "package of the zone of agreement. Its outcome shows what was reachable, "
                    "not what negotiating agents reach.")


def endpoint_host(settings: AgentSettings) -> str:
    """Where an LLM agent's requests went: host and port only, never credentials or paths."""
    if settings.kind != "llm":
        return ""
    if not settings.base_url:
        return "api.openai.com"
    parts = urlsplit(settings.base_url)
    host = parts.hostname or settings.base_url
    host = f"{host}:{parts.port}" if parts.port else host
    return f"{host} (embedded)" if settings.local_model else host


def settings_table(header: RunHeader) -> list[str]:
    """Who played each party with which settings, as a Markdown table."""
    out = ["| party | plays | model | endpoint | temperature | max tokens | prompt | structured "
           "| assist | seed |", "|---|---|---|---|---|---|---|---|---|---|"]
    for party, a in header.agents.items():
        if a.kind == "scripted":
            out.append(f"| {party} | {a.label()} | | | | | | | | |")
            continue
        def cell(value: object) -> str:
            return "" if value is None else str(value)
        out.append(f"| {party} | LLM | {cell(a.model)} | {endpoint_host(a)} | "
                   f"{cell(a.temperature)} | {cell(a.max_tokens)} | {cell(a.prompt or 'full')} | "
                   f"{cell(a.structured_mode or 'json_schema')} | {a.effective_assist()} | "
                   f"{cell(a.seed)} |")
    return out


def round_table(m: RoundMeasures, responses: dict[str, Response], order: list[str]) -> list[str]:
    """One round's answers and what the table was worth to each party."""
    out = ["| party | vote | value | vs walk-away | own estimate | red lines broken | objects to "
           "(wants instead) | flags |", "|---|---|---|---|---|---|---|---|"]
    for party in order:
        pr = m.parties.get(party)
        if pr is None:
            continue
        e = responses.get(party)
        objections = "none"
        if e is not None:
            objections = ", ".join(
                f"{issue} ({s.wants})" if s.wants is not None else issue
                for issue, s in e.stances.items() if s.stance == "object") or "none"
        invalid = e is not None and e.invalid
        vote = "invalid response (counted as reject)" if invalid else (pr.vote or "-")
        estimate = "" if pr.value_estimate is None else (
            f"{pr.value_estimate:g} ({pr.estimate_error:+.1f})" if pr.estimate_error is not None
            else f"{pr.value_estimate:g}")
        flags = "; ".join(FLAG_TEXT.get(f, f) for f in pr.flags)
        out.append(f"| {party} | {vote} | {pr.utility:.1f} | {pr.surplus:+.1f} | {estimate} | "
                   f"{', '.join(pr.red_lines_broken) or 'none'} | {objections} | "
                   f"{f'**{flags}**' if flags else ''} |")
    return out


def _protocol_line(scenario: Scenario, header: RunHeader) -> str:
    from detente.protocols import PROTOCOLS

    name = header.protocol or scenario.protocol_spec().name
    try:
        description = PROTOCOLS.get(name).description
    except KeyError:
        description = "not installed here"
    params = f" {header.protocol_params}" if header.protocol_params else ""
    return f"`{name}`{params}: {description}"


def render_markdown(scenario: Scenario, events: list[Event], result: RunResult) -> str:
    header = header_of(events)
    out: list[str] = [f"# {scenario.title}: run {header.run_id}", ""]
    if result.upper_bound:
        out += [UPPER_BOUND_NOTE, ""]
    out += [
        f"- Scenario: `{header.scenario_id}` ({header.scenario_path}), content hash "
        f"`{header.scenario_hash[:12]}` (scenario and briefs)",
        f"- Started: {header.time}; seed {header.seed}; at most {header.max_rounds} rounds; "
        f"each agent sees the last {header.bounded_context} public statements; "
        f"detente {header.package_version}",
        f"- Protocol: {_protocol_line(scenario, header)}",
        f"- Decision rule: {describe_rule(scenario)}",
        *incentive_lines(scenario),
        f"- Outcome: **{result.status}**: {result.reason}",
        "",
        *settings_table(header),
        "",
    ]
    if header.log_prompts and any(a.kind == "llm" for a in header.agents.values()):
        out += ["Every model request and raw response is in `prompts.jsonl`, under the request "
                "hashes the events record.", ""]

    rank = {p: k for k, p in enumerate(scenario.parties)}
    openings = sorted((e for e in events if isinstance(e, Statement) and e.kind == "opening"),
                      key=lambda e: rank.get(e.speaker, len(rank)))
    if openings:
        out += ["## Opening statements", ""]
        for opening in openings:
            out += [f"**{opening.speaker}**{_flag(opening.invalid)}:", "",
                    _quote(opening.text), ""]

    by_round: dict[int, list[Event]] = defaultdict(list)
    for event in events:
        r = getattr(event, "round", None)
        if isinstance(r, int) and r > 0:
            by_round[r].append(event)
    measures = {m.round: m for m in result.rounds}
    order = list(scenario.parties)
    for r in sorted(by_round):
        private = next((e.visible_to for e in by_round[r] if isinstance(e, Proposal | Tally)
                        and isinstance(e.visible_to, list)), None)
        track = f" (private track: {' and '.join(private)} only)" if private else ""
        out += [f"## Round {r}{track}", ""]
        for item in by_round[r]:
            if isinstance(item, Inject):
                out += [inject_line(item), ""]
            elif isinstance(item, RefusedProposal):
                out += [f"*Refused:* **{item.speaker}** tabled `{item.package.describe()}` "
                        f"again: {item.reason}. Asked again.", ""]
            elif isinstance(item, Proposal):
                again = " (a package rejected before: it stands after every refusal)" \
                    if item.repeats_rejected else ""
                out += [f"**{item.speaker}** tables{_flag(item.invalid)}{again}:", ""]
                out += [f"- {line}" for line in describe_package(scenario, item.package)]
                out += ["", _quote(item.rationale), ""]
            elif isinstance(item, Statement):
                who = " and ".join(item.visible_to) if isinstance(item.visible_to, list) else "all"
                out += [f"*Private caucus ({who})*, **{item.speaker}**{_flag(item.invalid)}:",
                        "", _quote(item.text), ""]
        responses = {e.speaker: e for e in by_round[r] if isinstance(e, Response)}
        tools = [e for e in by_round[r] if isinstance(e, ToolCall)]
        m = measures.get(r)
        if m is not None:
            zone = "inside" if m.in_zone else "outside"
            out += round_table(m, responses, order)
            out += ["", f"The table lies {zone} the zone of agreement; coalition product "
                    f"{m.nash_product:,.1f}" + ("; it breaks a red line of a party the rule "
                                                "needs" if m.breaks_needed_red_line else "")
                    + ".", ""]
        elif responses:
            out += [f"- {p}: {e.vote}" for p, e in responses.items()] + [""]
        for party in order:
            e = responses.get(party)
            if e is not None:
                out += [f"**{e.speaker}** (public):", "", _quote(e.statement), ""]
        if responses or tools:
            out += ["<details><summary>Private rationales and tool calls (never shown to other "
                    "agents)</summary>", ""]
            for party in order:
                e = responses.get(party)
                if e is not None:
                    text = "; ".join(e.errors) if e.invalid else e.private_rationale
                    out += [f"**{e.speaker}**:", "", _quote(text), ""]
            for call in tools:
                shown = call.result if call.error is None else {"error": call.error}
                arguments = ", ".join(f"{k}={v}" for k, v in call.arguments.items())
                out += [f"- {call.speaker} called {md_text(call.name)}({md_text(arguments)}): "
                        f"{md_text(str(shown))}"]
            out += ["", "</details>", ""]
        for item in by_round[r]:
            if isinstance(item, Tally):
                verdict = "passes" if item.accepted else "fails"
                accepts = sum(v == "accept" for v in item.votes.values())
                out += [f"Tally: the package **{verdict}** the decision rule "
                        f"({accepts} of {len(item.votes)} accept).", ""]
    errors = [item for item in events if isinstance(item, ErrorEvent)]
    if errors:
        out += ["## Errors", ""] + [f"- {md_text(item.message)}" for item in errors] + [""]

    out += ["## Outcome", ""]
    if result.upper_bound:
        out += [UPPER_BOUND_NOTE, ""]
    out += [f"**{result.status}**: {result.reason}", ""]
    if result.package is not None:
        out += [f"- {line}" for line in describe_package(scenario, result.package)] + [""]
    out += ["| party | utility | reservation | surplus | red lines broken | vote |",
            "|---|---|---|---|---|---|"]
    for party, s in result.scores.parties.items():
        broken = ", ".join(b.id for b in s.red_lines_broken) or "none"
        out.append(f"| {party} | {s.utility:.1f} | {s.reservation_utility:.1f} | "
                   f"{s.surplus:+.1f} | {broken} | {s.vote or ''} |")
    if result.package is None and result.rounds:
        best = measures.get(result.best_round) if result.best_round is not None else None
        last = result.rounds[-1]
        if best is not None:
            out += ["", f"No deal. The nearest miss was round {best.round}: {best.accepts} of "
                    f"{len(best.parties)} accepted `{best.package.describe()}` (it lies "
                    f"{'inside' if best.in_zone else 'outside'} the zone of agreement). The last "
                    "table would have given: " + "; ".join(
                        f"{p} {pr.utility:.1f} ({pr.surplus:+.1f})"
                        for p, pr in last.parties.items()) + "."]
    if result.votes_against_own_red_lines:
        out += ["", "Votes for a package that broke the voter's own red line: " + "; ".join(
            f"round {v.round}, {v.party} ({', '.join(v.red_lines)})"
            for v in result.votes_against_own_red_lines) + "."]
    if result.metrics is not None:
        mx = result.metrics
        share = mx.red_line_proposals
        invalid = ", ".join(f"{p} {r.count}/{r.n}" for p, r in mx.invalid_answers.items()
                            if r.count)
        errors_by = ", ".join(f"{p} {v:.1f}" for p, v in mx.estimation_error.items()
                              if v is not None)
        out += ["", f"Measures: a table in the zone of agreement in any round: "
                f"{'yes' if mx.deal_any_round else 'no'}; in the final round: "
                f"{'yes' if mx.deal_final_round else 'no'}; proposals breaking a needed party's "
                f"red line: {share.count} of {share.n}; invalid answers: {invalid or 'none'}; "
                f"mean absolute error of the parties' value estimates: {errors_by or 'n/a'}."]
    deal = result.scores.deal
    out += ["", f"Pareto-optimal: {'yes' if deal.pareto_optimal else 'no'}; Nash product "
            f"{deal.nash_product:,.1f}; distance to the Nash package "
            f"{'n/a' if deal.distance_to_nash is None else f'{deal.distance_to_nash:.1f}'}; "
            f"Gini {deal.gini:.3f}. Tokens: {result.total_tokens:,}; wall time "
            f"{result.wall_time_seconds:.1f} s.", ""]
    out += cost_section(result.cost)
    return "\n".join(out)


def cost_section(cost: RunCost | None) -> list[str]:
    """The run's model calls and their cost, per party and in all (Markdown), if it made any."""
    if cost is None or not cost.total.requests:
        return []
    cached = cost.total.cached_requests
    out = ["## Cost", "", "| party | requests | from the cache | prompt tokens | completion "
           "tokens | cost |", "|---|---|---|---|---|---|"]
    for party, line in [*cost.parties.items(), ("all", cost.total)]:
        if not line.requests:
            continue
        name = "**all**" if party == "all" else party
        out.append(f"| {name} | {line.requests} | {line.cached_requests} | "
                   f"{line.prompt_tokens:,} | {line.completion_tokens:,} | {format_usd(line)} |")
    out += ["", "| round | requests | from the cache | prompt tokens | completion tokens | "
            "cost |", "|---|---|---|---|---|---|"]
    for r in cost.rounds:
        name = "0 (openings)" if r.round == 0 else str(r.round)
        out.append(f"| {name} | {r.requests} | {r.cached_requests} | {r.prompt_tokens:,} | "
                   f"{r.completion_tokens:,} | {format_usd(r)} |")
    prices = "; ".join(
        f"{model}: free (the embedded model)" if p.embedded else
        f"{model}: ${p.input:g} / ${p.output:g} per million prompt / completion tokens"
        if p.input is not None and p.output is not None else f"{model}: no price (unknown)"
        for model, p in cost.prices.items())
    out += ["", f"Prices: {prices or 'none'} (from {cost.price_source})."
            + (f" {cached} request(s) came from the response cache and cost nothing."
               if cached else ""), ""]
    return out


def incentive_lines(scenario: Scenario) -> list[str]:
    """The transcript's line on the scenario's incentives (none: no line)."""
    if not scenario.incentives:
        return []
    each = "; ".join(f"{party} **{incentive.describe()}** ({INCENTIVES[incentive.kind]})"
                     for party, incentive in scenario.incentives.items())
    return [f"- Private incentives (each told to its own party only; the scorer ignores them): "
            f"{each}"]


def inject_line(event: Inject) -> str:
    """An event during the talks as the transcript shows it."""
    audience = ("seen by every party" if event.visible_to == "all" else
                f"private: seen by {' and '.join(event.visible_to)} only")
    line = (f"*Event ({event.kind.replace('_', '-')}, {audience}):* "
            f"{md_text(' '.join(event.text.split()))}")
    if event.change is not None:
        line += (f" *{event.change.party}'s walk-away utility is now "
                 f"{event.change.reservation_utility:g} (only {event.change.party}'s agent is "
                 "told the number).*")
    return line


def md_text(text: str) -> str:
    """Agent or endpoint text as Markdown shows it literally: HTML markup escaped, so a viewer
    renders the text, never the markup."""
    return html.escape(text, quote=False)


def _quote(text: str) -> str:
    body = md_text(text.strip() or "(nothing said)")
    return "\n".join("> " + line for line in body.split("\n"))


def _flag(invalid: bool) -> str:
    return " *(invalid response)*" if invalid else ""
