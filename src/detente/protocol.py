"""The negotiation protocol as a LangGraph `StateGraph`.

opening statements (all parties at once) -> [proposal -> optional caucus -> responses (all voting
parties at once) -> tally] repeated until the decision rule passes a package, the round limit is
reached, or the same package is rejected `deadlock_after` times.

The state holds plain values only: the round, the package on the table, and the list of events
(dicts), which is the single source of truth from which every agent's bounded, filtered view is
built. Agents live outside the state, in the nodes' closures.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Mapping
from typing import Annotated, Any, TypedDict, cast

import numpy as np
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph
from langgraph.types import Send

from detente.agents.base import Agent, Context, Line, OwnPosition, Turn
from detente.analysis import passes_rule
from detente.events import (
    EVERYONE,
    IssueStance,
    Outcome,
    Proposal,
    Response,
    Statement,
    Tally,
)
from detente.scenario import Package, Scenario
from detente.space import PackageSpace

DEFAULT_CONTEXT = 6
"""How many recent public statements (and own positions, caucus lines) an agent sees."""


class NegotiationState(TypedDict, total=False):
    round: int
    max_rounds: int
    deadlock_after: int
    seed: int
    table: dict[str, Any] | None
    caucus_with: str | None
    status: str | None
    events: Annotated[list[dict[str, Any]], operator.add]


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


def build_context(
    scenario: Scenario, state: NegotiationState, party: str, k: int = DEFAULT_CONTEXT
) -> Context:
    """What `party` may see now: public record (last k), its own answers, its caucuses."""
    events = state.get("events", [])
    round_ = state.get("round", 0)
    public: list[Line] = []
    caucus: list[Line] = []
    own: list[OwnPosition] = []
    positions: dict[str, dict[str, IssueStance]] = {}
    last_votes: dict[str, Any] = {}
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
    )


def build_graph(
    scenario: Scenario,
    agents: Mapping[str, Agent],
    *,
    context_size: int = DEFAULT_CONTEXT,
    journal: Mapping[str, dict[str, Any]] | None = None,
) -> StateGraph[NegotiationState]:
    """The protocol graph for `scenario` played by `agents` (one per party).

    `journal` holds events already in the run's log, by id. A turn whose event is there is
    taken from it instead of asking the agent again: a crash between logging an event and
    checkpointing it must not cost (or change) a model call on resume.
    """
    logged = journal or {}
    space = PackageSpace(scenario)
    voters = scenario.voters
    parties = scenario.parties

    def announce(party: str, turn: str, round_: int) -> None:
        get_stream_writer()({"speaking": party, "turn": turn, "round": round_})

    def ctx_for(state: NegotiationState, party: str) -> Context:
        return build_context(scenario, state, party, context_size)

    # ------------------------------------------------------------------ nodes

    def opening(task: TaskInput) -> dict[str, Any]:
        party = task["party"]
        if f"opening/{party}" in logged:
            return {"events": [logged[f"opening/{party}"]]}
        announce(party, "opening", 0)
        turn = agents[party].opening(ctx_for(task["state"], party))
        event = Statement(
            id=f"opening/{party}", kind="opening", round=0, speaker=party,
            text=turn.content.text, usage=turn.usage, latency=turn.latency,
            invalid=turn.invalid,
        )
        return {"events": [event.model_dump(mode="json")]}

    def propose(state: NegotiationState) -> dict[str, Any]:
        round_ = state.get("round", 0) + 1
        proposer = proposer_for(scenario, round_)
        if f"r{round_}/proposal" in logged:
            return _from_journal(round_, proposer)
        announce(proposer, "proposal", round_)
        view: NegotiationState = {**state, "round": round_}
        turn = agents[proposer].propose(ctx_for(view, proposer))
        content = turn.content
        package = _snap(scenario, content.package)
        events = [
            Proposal(
                id=f"r{round_}/proposal", round=round_, speaker=proposer, package=package,
                rationale=content.rationale, usage=turn.usage, latency=turn.latency,
                invalid=turn.invalid,
            ).model_dump(mode="json")
        ]
        caucus_with = content.caucus_with
        if caucus_with not in parties or caucus_with == proposer:
            caucus_with = None
        if caucus_with is not None:
            events.append(
                Statement(
                    id=f"r{round_}/caucus", kind="caucus", round=round_, speaker=proposer,
                    visible_to=[proposer, caucus_with], text=content.caucus_message,
                ).model_dump(mode="json")
            )
        return {
            "round": round_,
            "table": package.model_dump(mode="json"),
            "caucus_with": caucus_with,
            "events": events,
        }

    def _from_journal(round_: int, proposer: str) -> dict[str, Any]:
        proposal = logged[f"r{round_}/proposal"]
        caucus = logged.get(f"r{round_}/caucus")
        caucus_with = None
        if caucus is not None:
            caucus_with = next(p for p in caucus["visible_to"] if p != proposer)
        return {
            "round": round_,
            "table": proposal["package"],
            "caucus_with": caucus_with,
            "events": [proposal] + ([caucus] if caucus is not None else []),
        }

    def caucus_reply(state: NegotiationState) -> dict[str, Any]:
        round_ = state["round"]
        if f"r{round_}/caucus_reply" in logged:
            return {"events": [logged[f"r{round_}/caucus_reply"]]}
        party = state.get("caucus_with")
        assert party is not None
        proposer = proposer_for(scenario, round_)
        message = next(
            e["text"] for e in reversed(state["events"]) if e["id"] == f"r{round_}/caucus"
        )
        announce(party, "caucus", round_)
        turn = agents[party].caucus_reply(ctx_for(state, party), message)
        event = Statement(
            id=f"r{round_}/caucus_reply", kind="caucus_reply", round=round_, speaker=party,
            visible_to=[proposer, party], text=turn.content.text, usage=turn.usage,
            latency=turn.latency, invalid=turn.invalid,
        )
        return {"events": [event.model_dump(mode="json")]}

    def respond(task: TaskInput) -> dict[str, Any]:
        party = task["party"]
        state = task["state"]
        round_ = state["round"]
        if f"r{round_}/response/{party}" in logged:
            return {"events": [logged[f"r{round_}/response/{party}"]]}
        announce(party, "response", round_)
        turn: Turn[Any] = agents[party].respond(ctx_for(state, party))
        content = turn.content
        event = Response(
            id=f"r{round_}/response/{party}", round=round_, speaker=party,
            vote="reject" if turn.invalid else content.vote, stances=content.stances,
            statement=content.statement, private_rationale=content.private_rationale,
            usage=turn.usage, latency=turn.latency, invalid=turn.invalid, errors=turn.errors,
        )
        return {"events": [event.model_dump(mode="json")]}

    def tally(state: NegotiationState) -> dict[str, Any]:
        round_ = state["round"]
        table = state["table"]
        assert table is not None
        votes = {
            e["speaker"]: e["vote"]
            for e in state["events"]
            if e["type"] == "response" and e["round"] == round_
        }
        accepts = np.array([[votes.get(p) == "accept" for p in voters]], dtype=bool)
        accepted = bool(passes_rule(space, accepts)[0])
        key = package_key(table)
        rejections = sum(
            1 for e in state["events"]
            if e["type"] == "tally" and not e["accepted"] and package_key(e["package"]) == key
        ) + (0 if accepted else 1)
        package = Package.model_validate(table)
        events = [
            Tally(
                id=f"r{round_}/tally", round=round_, package=package, votes=votes,
                accepted=accepted, rejections_of_package=rejections,
            ).model_dump(mode="json")
        ]
        status: str | None = None
        if accepted:
            status, reason = "deal", f"the decision rule passed the package in round {round_}"
        elif rejections >= state.get("deadlock_after", scenario.decision.deadlock_after):
            status, reason = "deadlock", f"the same package was rejected {rejections} times"
        elif round_ >= state.get("max_rounds", scenario.decision.max_rounds):
            status, reason = "no_deal", f"no package passed within {round_} rounds"
        if status is not None:
            events.append(
                Outcome(
                    id="outcome", status=status,
                    package=package if accepted else None, rounds=round_, votes=votes,
                    reason=reason,
                ).model_dump(mode="json")
            )
        return {"status": status, "events": events}

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
        "events": [],
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
