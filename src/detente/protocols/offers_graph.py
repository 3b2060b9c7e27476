"""The graph of the stacked alternating offers protocol (see `alternating_offers`)."""

from __future__ import annotations

from typing import Any, cast

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Send

from detente.events import Proposal, Response
from detente.protocols.alternating_offers import AlternatingOffers
from detente.protocols.engine import (
    NegotiationState,
    RunContext,
    TaskInput,
    Turns,
    snap,
)
from detente.scenario import Package


def counter_offer(table: Package, response: Response) -> Package:
    """The package a rejection asks for: the table with each objection's wanted option."""
    options = dict(table.options)
    terms = dict(table.terms)
    for dim, stance in response.stances.items():
        if stance.stance != "object" or stance.wants is None:
            continue
        if dim in options and isinstance(stance.wants, str):
            options[dim] = stance.wants
        elif dim in terms:
            try:
                terms[dim] = float(stance.wants)
            except (TypeError, ValueError):
                continue
    return Package(options=options, terms=terms)


def build_offers_graph(
    protocol: AlternatingOffers,
) -> StateGraph[NegotiationState, RunContext, NegotiationState, NegotiationState]:
    turns = Turns(protocol)
    voters = protocol.voters

    async def offer(state: NegotiationState, runtime: Runtime[RunContext]) -> dict[str, Any]:
        """The next offer: the rejecting party's counter, or (first) the first party's."""
        run = runtime.context
        round_ = state.get("round", 0) + 1
        proposer = state.get("proposer") or voters[0]
        turn_id = f"r{round_}/proposal"
        await turns.injects(run, round_)
        logged = run.log.get(turn_id)
        if logged is not None:
            return {"round": round_, "table": logged["package"], "proposer": proposer, "slot": 0}
        rejection = run.log.get(f"r{round_ - 1}/response/{proposer}") if round_ > 1 else None
        if rejection is not None and state.get("table"):
            answer = Response.model_validate(rejection)
            package = snap(run.scenario, counter_offer(Package.model_validate(state["table"]),
                                                       answer))
            if package.model_dump(mode="json") != state["table"]:
                await turns.write(run, Proposal(
                    id=turn_id, round=round_, speaker=proposer, package=package,
                    rationale=answer.statement if protocol.talk else ""))
                return {"round": round_, "table": package.model_dump(mode="json"),
                        "proposer": proposer, "slot": 0}
        # The first offer, or a rejection that named nothing to change: ask for a package.
        turns.announce(proposer, "proposal", round_)
        package, _, events = await turns.table(run, {**state, "round": round_ - 1}, round_,
                                               proposer)
        await turns.write(run, *events)
        return {"round": round_, "table": package.model_dump(mode="json"),
                "proposer": proposer, "slot": 0}

    async def answer(state: NegotiationState, runtime: Runtime[RunContext]) -> dict[str, Any]:
        """The next party in the circle answers; a rejection ends the offer."""
        run = runtime.context
        proposer = state.get("proposer") or voters[0]
        order = protocol.circle_after(proposer)
        slot = state.get("slot", 0)
        party = order[slot]
        response = await turns.answer(run, state, party, slot=slot + 1)
        last = protocol.total_rounds(state.get("max_rounds",
                                               run.scenario.decision.max_rounds))
        votes = {proposer: "accept"}
        for earlier in order[: slot + 1]:
            logged = run.log.get(f"r{state['round']}/response/{earlier}")
            if logged is not None:
                votes[earlier] = logged["vote"]
        if response.vote == "reject" or slot + 1 == len(order):
            status = await turns.tally(run, state, votes, last_round=last)
            return {"status": status, "proposer": party if response.vote == "reject"
                    else proposer, "slot": 0, "round": state["round"]}
        return {"slot": slot + 1}

    def to_openings(state: NegotiationState) -> list[Send] | str:
        openers = protocol.openers()
        if not openers:
            return "offer"
        return [Send("opening", TaskInput(party=p, state=state)) for p in openers]

    def after_answer(state: NegotiationState) -> str:
        if state.get("status"):
            return END
        return "offer" if state.get("slot", 0) == 0 else "answer"

    graph = StateGraph(NegotiationState, context_schema=RunContext)
    graph.add_node("opening", cast(Any, turns.opening), input_schema=TaskInput)
    graph.add_node("offer", cast(Any, offer))
    graph.add_node("answer", cast(Any, answer))
    graph.add_conditional_edges(START, to_openings, ["opening", "offer"])
    graph.add_edge("opening", "offer")
    graph.add_edge("offer", "answer")
    graph.add_conditional_edges("answer", after_answer, ["answer", "offer", END])
    return graph
