"""The negotiation protocol as a LangGraph `StateGraph`.

opening statements (all parties at once) -> [proposal -> optional caucus -> responses (all voting
parties at once) -> tally] repeated until the decision rule passes a package, the round limit is
reached, or the same package is rejected `deadlock_after` times.

A proposer that tables a package already rejected is refused with feedback and asked again, at
most `MAX_REFUSALS` times; scripted and LLM proposers alike. If it still repeats one, the package
stands (marked `repeats_rejected`) and counts toward deadlock.

The run's event log (`EventLog`) is the single source of truth: every node appends its events to
it, in one batch, and every agent's bounded, filtered view is built from it. The graph state
holds only what the next step needs (the round, the package on the table, a caucus partner, the
status), so checkpoints stay small and a run's storage grows linearly with its events.

What a turn may see does not depend on timing: each event has a stage (round, phase), and a turn
sees only events of earlier stages. Parties answering at once never see each other's answers,
and a resumed run rebuilds exactly the views of an uninterrupted one. A turn already in the log
is taken from it instead of asking the agent again, so resuming never repeats (or changes) a
model call.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypedDict, cast

import numpy as np
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph
from langgraph.types import Send

from detente.agents.base import Agent, Context, Line, OwnPosition, Turn
from detente.analysis import passes_rule
from detente.events import (
    EVERYONE,
    EventLog,
    IssueStance,
    Outcome,
    Proposal,
    RefusedProposal,
    Response,
    Statement,
    Tally,
    ToolCall,
)
from detente.scenario import Package, Scenario
from detente.space import PackageSpace

DEFAULT_CONTEXT = 6
"""How many recent public statements (and own positions, caucus lines) an agent sees."""
MAX_REFUSALS = 2
"""How many times a proposer that re-tables a rejected package is asked again."""

TurnSink = Callable[[str, Turn[Any]], None]
"""Receives every turn an agent took, by event id (the runner keeps its full exchanges)."""

Stage = tuple[int, int]
"""(round, phase): 0 openings; 1 proposal and caucus; 2 caucus reply; 3 responses; 4 tally."""
OPENING, PROPOSAL, CAUCUS_REPLY, RESPONSE, TALLY = 0, 1, 2, 3, 4


class NegotiationState(TypedDict, total=False):
    round: int
    max_rounds: int
    deadlock_after: int
    seed: int
    table: dict[str, Any] | None
    caucus_with: str | None
    status: str | None


class TaskInput(TypedDict):
    """What a fanned-out task receives: its party and a snapshot of the state."""

    party: str
    state: NegotiationState


def package_key(package: Mapping[str, Any]) -> str:
    return json.dumps(package, sort_keys=True)


def proposer_for(scenario: Scenario, round_: int) -> str:
    """The mediator, or without one the voting parties in turn."""
    if scenario.mediator is not None:
        return scenario.mediator
    voters = scenario.voters
    return voters[(round_ - 1) % len(voters)]


def stage_of(event: Mapping[str, Any]) -> Stage | None:
    """When an event happens in the protocol; None for records outside it (header, errors)."""
    kind = event["type"]
    round_ = event.get("round")
    if not isinstance(round_, int):
        return None
    if kind == "statement":
        phase = {"opening": OPENING, "caucus": PROPOSAL, "caucus_reply": CAUCUS_REPLY}
        return round_, phase[event["kind"]]
    if kind in ("proposal", "refused"):
        return round_, PROPOSAL
    if kind == "response":
        return round_, RESPONSE
    if kind == "tool_call":
        return round_, RESPONSE if "/response/" in event["id"] else PROPOSAL
    if kind == "tally":
        return round_, TALLY
    return None


def before(
    events: Sequence[Mapping[str, Any]], stage: Stage, order: Sequence[str] = ()
) -> list[Mapping[str, Any]]:
    """The events a turn at `stage` may know of: those of earlier stages, in protocol order
    (stage, then the speaker's place in `order`, then id), never in the order parties happened
    to finish: two runs given the same answers build the same prompts."""
    rank = {party: k for k, party in enumerate(order)}
    found: list[tuple[tuple[int, int, int, str], Mapping[str, Any]]] = []
    for e in events:
        at = stage_of(e)
        if at is not None and at < stage:
            found.append(((*at, rank.get(e.get("speaker", ""), len(rank)), e["id"]), e))
    found.sort(key=lambda item: item[0])
    return [e for _, e in found]


def build_context(
    scenario: Scenario,
    state: NegotiationState,
    party: str,
    events: Sequence[Mapping[str, Any]],
    k: int = DEFAULT_CONTEXT,
    *,
    turn_id: str = "",
    quote_key: str = "",
    feedback: tuple[str, ...] = (),
) -> Context:
    """What `party` may see now, from the events it may know of (see `before`): the public
    record (last k), its own answers, its caucuses, and the last round's votes with what each
    party asked for."""
    round_ = state.get("round", 0)
    public: list[Line] = []
    caucus: list[Line] = []
    own: list[OwnPosition] = []
    positions: dict[str, dict[str, IssueStance]] = {}
    last_votes: dict[str, Any] = {}
    last_round = 0
    rejected: list[Package] = []
    for e in events:
        kind = e["type"]
        if kind == "statement":
            line = Line(e["round"], e["speaker"], e["kind"], e["text"])
            if e["visible_to"] == EVERYONE:
                public.append(line)
            elif party in e["visible_to"]:
                caucus.append(line)
        elif kind == "proposal":
            public.append(Line(e["round"], e["speaker"], "proposal", e["rationale"]))
        elif kind == "response":
            stances = {i: IssueStance.model_validate(s) for i, s in e["stances"].items()}
            public.append(Line(e["round"], e["speaker"], "response", e["statement"]))
            positions[e["speaker"]] = stances
            if e["speaker"] == party:
                own.append(OwnPosition(e["round"], e["vote"], stances))
        elif kind == "tally":
            last_votes = dict(e["votes"])
            last_round = e["round"]
            if not e["accepted"]:
                rejected.append(Package.model_validate(e["package"]))
    table = state.get("table")
    return Context(
        party=party,
        round=round_,
        max_rounds=state.get("max_rounds", scenario.decision.max_rounds),
        table=Package.model_validate(table) if table else None,
        statements=public[-k:],
        own_positions=own[-k:],
        caucus=caucus[-k:],
        positions=positions,
        last_votes=last_votes,
        rejected=rejected,
        seed=state.get("seed", 0),
        turn_id=turn_id,
        feedback=feedback,
        quote_key=quote_key,
        last_round=last_round,
    )


def tool_events(turn_id: str, round_: int, party: str, turn: Turn[Any]) -> list[ToolCall]:
    """The turn's `evaluate_package` calls as private events, in order."""
    return [
        ToolCall(id=f"{turn_id}/tool/{k}", round=round_, speaker=party, visible_to=[party],
                 name=call.name, arguments=call.arguments, result=call.result,
                 error=call.error)
        for k, call in enumerate(turn.tool_calls, start=1)
    ]


def build_graph(
    scenario: Scenario,
    agents: Mapping[str, Agent],
    log: EventLog,
    *,
    context_size: int = DEFAULT_CONTEXT,
    quote_key: str = "",
    on_turn: TurnSink | None = None,
) -> StateGraph[NegotiationState]:
    """The protocol graph for `scenario` played by `agents` (one per party), recording to `log`.

    A turn whose event is already in `log` is taken from it instead of asking the agent again:
    a crash between logging an event and checkpointing it must not cost (or change) a model call
    on resume. `on_turn` receives every turn taken (not those from the log), e.g. to keep its
    requests and responses.
    """
    space = PackageSpace(scenario)
    voters = scenario.voters
    parties = scenario.parties

    def announce(party: str, turn: str, round_: int) -> None:
        get_stream_writer()({"speaking": party, "turn": turn, "round": round_})

    def ctx_for(state: NegotiationState, party: str, turn_id: str, stage: Stage,
                feedback: tuple[str, ...] = ()) -> Context:
        return build_context(scenario, state, party, before(log.raw(), stage, parties),
                             context_size,
                             turn_id=turn_id, quote_key=quote_key, feedback=feedback)

    def taken(turn_id: str, turn: Turn[Any]) -> None:
        if on_turn is not None:
            on_turn(turn_id, turn)

    def ask(turn_id: str, call: Callable[[], Turn[Any]]) -> Turn[Any]:
        """Take a turn; a failure is labelled with the turn it broke (for the run's records)."""
        try:
            return call()
        except Exception as exc:
            if not hasattr(exc, "turn_id"):
                exc.turn_id = turn_id  # type: ignore[attr-defined]
            raise

    # ------------------------------------------------------------------ nodes

    def opening(task: TaskInput) -> dict[str, Any]:
        party = task["party"]
        turn_id = f"opening/{party}"
        if log.get(turn_id) is not None:
            return {}
        announce(party, "opening", 0)
        ctx = ctx_for(task["state"], party, turn_id, (0, OPENING))
        turn = ask(turn_id, lambda: agents[party].opening(ctx))
        taken(turn_id, turn)
        log.write(Statement(
            id=turn_id, kind="opening", round=0, speaker=party,
            text=turn.content.text, usage=turn.usage, latency=turn.latency,
            invalid=turn.invalid, llm=turn.llm,
        ))
        return {}

    def propose(state: NegotiationState) -> dict[str, Any]:
        round_ = state.get("round", 0) + 1
        proposer = proposer_for(scenario, round_)
        turn_id = f"r{round_}/proposal"
        logged = log.get(turn_id)
        if logged is not None:
            caucus = log.get(f"r{round_}/caucus")
            caucus_with = None
            if caucus is not None:
                caucus_with = next(p for p in caucus["visible_to"] if p != proposer)
            return {"round": round_, "table": logged["package"], "caucus_with": caucus_with}
        announce(proposer, "proposal", round_)
        view: NegotiationState = {**state, "round": round_}
        rejected_in: dict[str, list[int]] = {}
        for e in before(log.raw(), (round_, PROPOSAL), parties):
            if e["type"] == "tally" and not e["accepted"]:
                rejected_in.setdefault(package_key(e["package"]), []).append(e["round"])
        events: list[Any] = []
        feedback: tuple[str, ...] = ()
        for attempt in range(MAX_REFUSALS + 1):
            ctx = ctx_for(view, proposer, turn_id, (round_, PROPOSAL), feedback)
            turn = ask(turn_id, lambda ctx=ctx: agents[proposer].propose(ctx))  # type: ignore[misc]
            package = _snap(scenario, turn.content.package)
            rounds = rejected_in.get(package_key(package.model_dump(mode="json")))
            if rounds is None or attempt == MAX_REFUSALS:
                break
            refused_id = f"{turn_id}/refused/{attempt + 1}"
            taken(refused_id, turn)
            reason = (f"this package was already rejected (round {', '.join(map(str, rounds))});"
                      " table a package that differs from every rejected one on at least one "
                      "issue or term")
            events += tool_events(refused_id, round_, proposer, turn)
            events.append(RefusedProposal(
                id=refused_id, round=round_, speaker=proposer, package=package,
                rationale=turn.content.rationale, reason=reason, usage=turn.usage,
                latency=turn.latency, llm=turn.llm))
            feedback = (*feedback, f"Attempt {attempt + 1}: {package.describe()}: {reason}.")
        taken(turn_id, turn)
        content = turn.content
        events += tool_events(turn_id, round_, proposer, turn)
        events.append(Proposal(
            id=turn_id, round=round_, speaker=proposer, package=package,
            rationale=content.rationale, usage=turn.usage, latency=turn.latency,
            invalid=turn.invalid, llm=turn.llm, repeats_rejected=rounds is not None,
        ))
        caucus_with = content.caucus_with
        if caucus_with not in parties or caucus_with == proposer:
            caucus_with = None
        if caucus_with is not None:
            events.append(Statement(
                id=f"r{round_}/caucus", kind="caucus", round=round_, speaker=proposer,
                visible_to=[proposer, caucus_with], text=content.caucus_message,
            ))
        log.write(*events)
        return {"round": round_, "table": package.model_dump(mode="json"),
                "caucus_with": caucus_with}

    def caucus_reply(state: NegotiationState) -> dict[str, Any]:
        round_ = state["round"]
        turn_id = f"r{round_}/caucus_reply"
        if log.get(turn_id) is not None:
            return {}
        party = state.get("caucus_with")
        assert party is not None
        proposer = proposer_for(scenario, round_)
        caucus = log.get(f"r{round_}/caucus")
        message = caucus["text"] if caucus is not None else ""
        announce(party, "caucus", round_)
        ctx = ctx_for(state, party, turn_id, (round_, CAUCUS_REPLY))
        turn = ask(turn_id, lambda: agents[party].caucus_reply(ctx, message))
        taken(turn_id, turn)
        log.write(Statement(
            id=turn_id, kind="caucus_reply", round=round_, speaker=party,
            visible_to=[proposer, party], text=turn.content.text, usage=turn.usage,
            latency=turn.latency, invalid=turn.invalid, llm=turn.llm,
        ))
        return {}

    def respond(task: TaskInput) -> dict[str, Any]:
        party = task["party"]
        state = task["state"]
        round_ = state["round"]
        turn_id = f"r{round_}/response/{party}"
        if log.get(turn_id) is not None:
            return {}
        announce(party, "response", round_)
        ctx = ctx_for(state, party, turn_id, (round_, RESPONSE))
        turn = ask(turn_id, lambda: agents[party].respond(ctx))
        taken(turn_id, turn)
        content = turn.content
        log.write(*tool_events(turn_id, round_, party, turn), Response(
            id=turn_id, round=round_, speaker=party,
            vote="reject" if turn.invalid else content.vote, stances=content.stances,
            statement=content.statement, private_rationale=content.private_rationale,
            value_estimate=None if turn.invalid else content.value_estimate,
            usage=turn.usage, latency=turn.latency, invalid=turn.invalid, errors=turn.errors,
            llm=turn.llm,
        ))
        return {}

    def tally(state: NegotiationState) -> dict[str, Any]:
        round_ = state["round"]
        table = state["table"]
        assert table is not None
        events = before(log.raw(), (round_, TALLY), parties)
        votes = {e["speaker"]: e["vote"] for e in events
                 if e["type"] == "response" and e["round"] == round_}
        accepts = np.array([[votes.get(p) == "accept" for p in voters]], dtype=bool)
        accepted = bool(passes_rule(space, accepts)[0])
        key = package_key(table)
        rejections = sum(
            1 for e in events
            if e["type"] == "tally" and not e["accepted"] and package_key(e["package"]) == key
        ) + (0 if accepted else 1)
        package = Package.model_validate(table)
        records: list[Any] = [Tally(
            id=f"r{round_}/tally", round=round_, package=package, votes=votes,
            accepted=accepted, rejections_of_package=rejections,
        )]
        status: str | None = None
        if accepted:
            status, reason = "deal", f"the decision rule passed the package in round {round_}"
        elif rejections >= state.get("deadlock_after", scenario.decision.deadlock_after):
            status, reason = "deadlock", f"the same package was rejected {rejections} times"
        elif round_ >= state.get("max_rounds", scenario.decision.max_rounds):
            status, reason = "no_deal", f"no package passed within {round_} rounds"
        if status is not None:
            records.append(Outcome(
                id="outcome", status=status, package=package if accepted else None,
                rounds=round_, votes=votes, reason=reason,
            ))
        log.write(*records)  # already logged ones (a resumed step) are skipped
        return {"status": status}

    # ------------------------------------------------------------------ routing

    def to_openings(state: NegotiationState) -> list[Send]:
        return [Send("opening", TaskInput(party=p, state=state)) for p in parties]

    def to_responses(state: NegotiationState) -> list[Send]:
        return [Send("respond", TaskInput(party=p, state=state)) for p in voters]

    def after_proposal(state: NegotiationState) -> list[Send] | str:
        return "caucus_reply" if state.get("caucus_with") else to_responses(state)

    def after_tally(state: NegotiationState) -> str:
        return END if state.get("status") else "propose"

    graph = StateGraph(NegotiationState)
    graph.add_node("opening", cast(Any, opening), input_schema=TaskInput)
    graph.add_node("propose", propose)
    graph.add_node("caucus_reply", caucus_reply)
    graph.add_node("respond", cast(Any, respond), input_schema=TaskInput)
    graph.add_node("tally", tally)
    graph.add_conditional_edges(START, to_openings, ["opening"])
    graph.add_edge("opening", "propose")
    graph.add_conditional_edges("propose", after_proposal, ["caucus_reply", "respond"])
    graph.add_conditional_edges("caucus_reply", to_responses, ["respond"])
    graph.add_edge("respond", "tally")
    graph.add_conditional_edges("tally", after_tally, ["propose", END])
    return graph


def initial_state(scenario: Scenario, seed: int, max_rounds: int) -> NegotiationState:
    return {
        "round": 0,
        "max_rounds": max_rounds,
        "deadlock_after": scenario.decision.deadlock_after,
        "seed": seed,
        "table": None,
        "caucus_with": None,
        "status": None,
    }


def recursion_limit(max_rounds: int) -> int:
    """Supersteps a run can take: openings, then up to four steps a round, plus slack."""
    return 4 * max_rounds + 10


def _snap(scenario: Scenario, package: Package) -> Package:
    """Numeric terms on their grid; issues as given (schemas already restrict them)."""
    return Package(
        options=dict(package.options),
        terms={t.id: t.snap(package.terms.get(t.id, (t.min + t.max) / 2)) for t in scenario.terms},
    )
