"""The LangGraph machinery every protocol shares: state, views, turns, and the round graph.

The run's event log (`EventLog`) is the single source of truth: every node appends its events to
it, in one batch, and every agent's bounded, filtered view is built from it. The graph state holds
only what the next step needs (the round, the package on the table, a caucus partner, the status),
so checkpoints stay small and a run's storage grows linearly with its events.

Agents, the log and everything else a node needs reach it through LangGraph's runtime context
(`RunContext`), not through closures: a compiled graph holds no run's objects.

What a turn may see does not depend on timing: each event has a stage (round, phase, slot), and a
turn sees only events of earlier stages that it may see (`visible_to`). Parties answering at once
never see each other's answers, and a resumed run rebuilds exactly the views of an uninterrupted
one. A turn already in the log is taken from it instead of asking the agent again, so resuming
never repeats (or changes) a model call.

Nodes are coroutines: an agent with async turns (`arespond`, ...) is awaited, any other runs in a
worker thread, so many runs share one event loop.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypedDict, cast

import numpy as np
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Send

from detente.agents.base import Agent, Context, InjectLine, Line, OwnPosition, Turn
from detente.analysis import passes_rule
from detente.events import (
    EVERYONE,
    EventLog,
    Inject,
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

if TYPE_CHECKING:
    from detente.protocols.base import Protocol

DEFAULT_CONTEXT = 6
"""How many recent public statements (and own positions, caucus lines) an agent sees."""
MAX_REFUSALS = 2
"""How many times a proposer that re-tables a rejected package is asked again."""

TurnSink = Callable[[str, Turn[Any]], None]
"""Receives every turn an agent took, by event id (the runner keeps its full exchanges)."""

Stage = tuple[int, int, int]
"""(round, phase, slot): phase 0 openings (round 0) and events during the talks (`inject`, at
the start of their round), 1 proposal and caucus, 2 caucus reply, 3 answers, 4 tally; slot
orders answers given one after another."""
OPENING, PROPOSAL, CAUCUS_REPLY, RESPONSE, TALLY = 0, 1, 2, 3, 4
INJECT = OPENING


@dataclass(frozen=True)
class RunContext:
    """What every node of a run needs, handed in by the runner as LangGraph's runtime context."""

    scenario: Scenario
    agents: Mapping[str, Agent]
    log: EventLog
    context_size: int = DEFAULT_CONTEXT
    quote_key: str = ""
    on_turn: TurnSink | None = None
    space: PackageSpace = field(init=False)
    writes: set[asyncio.Future[Any]] = field(init=False, default_factory=set)
    """Event writes under way (see `Turns.write`)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "space", PackageSpace(self.scenario))

    async def settle(self) -> None:
        """Wait for every event write under way: a turn cut short (a sibling's call failed, or
        Ctrl-C) may be writing an answer that arrived; the runner records the end after it."""
        while self.writes:
            await asyncio.gather(*list(self.writes), return_exceptions=True)


class NegotiationState(TypedDict, total=False):
    round: int
    max_rounds: int
    deadlock_after: int
    seed: int
    table: dict[str, Any] | None
    caucus_with: str | None
    status: str | None
    proposer: str | None
    """Alternating offers: who makes the next offer."""
    slot: int
    """Alternating offers: how many parties have answered the current offer."""


class TaskInput(TypedDict):
    """What a fanned-out task receives: its party and a snapshot of the state."""

    party: str
    state: NegotiationState


def initial_state(scenario: Scenario, seed: int, max_rounds: int) -> NegotiationState:
    return {
        "round": 0,
        "max_rounds": max_rounds,
        "deadlock_after": scenario.decision.deadlock_after,
        "seed": seed,
        "table": None,
        "caucus_with": None,
        "status": None,
        "proposer": None,
        "slot": 0,
    }


def package_key(package: Mapping[str, Any]) -> str:
    return json.dumps(package, sort_keys=True)


def snap(scenario: Scenario, package: Package) -> Package:
    """Numeric terms on their grid; issues as given (schemas already restrict them)."""
    return Package(
        options=dict(package.options),
        terms={t.id: t.snap(package.terms.get(t.id, (t.min + t.max) / 2)) for t in scenario.terms},
    )


# --------------------------------------------------------------------------- views


def stage_of(event: Mapping[str, Any]) -> Stage | None:
    """When an event happens in the protocol; None for records outside it (header, errors)."""
    kind = event["type"]
    round_ = event.get("round")
    if not isinstance(round_, int):
        return None
    if kind == "statement":
        phase = {"opening": OPENING, "caucus": PROPOSAL, "caucus_reply": CAUCUS_REPLY}
        return round_, phase[event["kind"]], 0
    if kind in ("proposal", "refused"):
        return round_, PROPOSAL, 0
    if kind == "response":
        return round_, RESPONSE, int(event.get("slot", 0))
    if kind == "tool_call":
        return round_, RESPONSE if "/response/" in event["id"] else PROPOSAL, 0
    if kind == "tally":
        return round_, TALLY, 0
    if kind == "inject":
        return round_, INJECT, 0
    return None


def before(
    events: Sequence[Mapping[str, Any]], stage: Stage, order: Sequence[str] = ()
) -> list[Mapping[str, Any]]:
    """The events a turn at `stage` may know of: those of earlier stages, in protocol order
    (stage, then the speaker's place in `order`, then id), never in the order parties happened
    to finish: two runs given the same answers build the same prompts."""
    rank = {party: k for k, party in enumerate(order)}
    found: list[tuple[tuple[int, int, int, int, str], Mapping[str, Any]]] = []
    for e in events:
        at = stage_of(e)
        if at is not None and at < stage:
            found.append(((*at, rank.get(e.get("speaker", ""), len(rank)), e["id"]), e))
    found.sort(key=lambda item: item[0])
    return [e for _, e in found]


def _sees(event: Mapping[str, Any], party: str) -> bool:
    visible = event.get("visible_to", EVERYONE)
    return visible == EVERYONE or party in visible


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
    talk: bool = True,
    logged: Callable[[str], Any] | None = None,
) -> Context:
    """What `party` may see now, from the events it may know of (see `before`): the public
    record (last k), its own answers, its caucuses, and the last round's votes with what each
    party asked for. Events private to others (a bilateral track it is not part of) are left
    out; without talk there are no statements to see. Events during the talks (`inject`) it
    may see are all shown, with its own new walk-away when one changes it."""
    round_ = state.get("round", 0)
    public: list[Line] = []
    caucus: list[Line] = []
    own: list[OwnPosition] = []
    positions: dict[str, dict[str, IssueStance]] = {}
    last_votes: dict[str, Any] = {}
    last_round = 0
    rejected: list[Package] = []
    rejected_rounds: list[int] = []
    injects: list[InjectLine] = []
    for e in events:
        if not _sees(e, party):
            continue
        kind = e["type"]
        if kind == "inject":
            change = e.get("change")
            mine = change["reservation_utility"] if change and change["party"] == party else None
            injects.append(InjectLine(e["round"], e["kind"], e["text"], mine))
        elif kind == "statement":
            line = Line(e["round"], e["speaker"], e["kind"], e["text"])
            if e["visible_to"] == EVERYONE:
                public.append(line)
            else:
                caucus.append(line)
        elif kind == "proposal":
            if talk:
                public.append(Line(e["round"], e["speaker"], "proposal", e["rationale"]))
        elif kind == "response":
            # `logged` gives the event validated once, when it was logged: validating every
            # event again at every turn made a run's views cost quadratic CPU.
            stances = (logged(e["id"]).stances if logged is not None else
                       {i: IssueStance.model_validate(s) for i, s in e["stances"].items()})
            if talk:
                public.append(Line(e["round"], e["speaker"], "response", e["statement"]))
            positions[e["speaker"]] = stances
            if e["speaker"] == party:
                own.append(OwnPosition(e["round"], e["vote"], stances))
        elif kind == "tally":
            last_votes = dict(e["votes"])
            last_round = e["round"]
            if not e["accepted"]:
                rejected.append(logged(e["id"]).package if logged is not None else
                                Package.model_validate(e["package"]))
                rejected_rounds.append(e["round"])
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
        talk=talk,
        injects=tuple(injects),
        rejected_rounds=tuple(rejected_rounds),
    )


def tool_events(turn_id: str, round_: int, party: str, turn: Turn[Any]) -> list[ToolCall]:
    """The turn's `evaluate_package` calls as private events, in order."""
    return [
        ToolCall(id=f"{turn_id}/tool/{k}", round=round_, speaker=party, visible_to=[party],
                 name=call.name, arguments=call.arguments, result=call.result,
                 error=call.error)
        for k, call in enumerate(turn.tool_calls, start=1)
    ]


# --------------------------------------------------------------------------- turns


class Turns:
    """Taking turns for one protocol: views, agents called, failures labelled, events written."""

    def __init__(self, protocol: Protocol) -> None:
        self.protocol = protocol

    @staticmethod
    def announce(party: str, turn: str, round_: int) -> None:
        get_stream_writer()({"speaking": party, "turn": turn, "round": round_})

    def view(self, run: RunContext, state: NegotiationState, party: str, turn_id: str,
             stage: Stage, feedback: tuple[str, ...] = ()) -> Context:
        events = before(run.log.raw(), stage, run.scenario.parties)
        return build_context(run.scenario, state, party, events, run.context_size,
                             turn_id=turn_id, quote_key=run.quote_key, feedback=feedback,
                             talk=self.protocol.talk, logged=run.log.event)

    @staticmethod
    async def take(run: RunContext, turn_id: str, party: str, kind: str,
                   *args: Any) -> Turn[Any]:
        """One turn of `party`'s agent: awaited if it has an async form (`a<kind>`), else run
        in a worker thread. A failure is labelled with the turn it broke."""
        agent = run.agents[party]
        if agent.settings.kind == "human":
            return Turns.human(run, party, kind, *args)
        try:
            method = getattr(agent, f"a{kind}", None)
            if method is not None:
                turn: Turn[Any] = await method(*args)
            else:
                turn = await asyncio.to_thread(getattr(agent, kind), *args)
        except Exception as exc:
            if not hasattr(exc, "turn_id"):
                exc.turn_id = turn_id  # type: ignore[attr-defined]
            raise
        if run.on_turn is not None:
            run.on_turn(turn_id, turn)
        return turn

    @staticmethod
    def human(run: RunContext, party: str, kind: str, *args: Any) -> Turn[Any]:
        """A person's turn: the graph pauses here (LangGraph's interrupt, checkpointed) until
        whoever drives the run answers, and the task runs again from its start with the answer
        (turns before it in the task are taken from the log; see `detente.runner`)."""
        from langgraph.types import interrupt

        from detente.agents.human import HumanAgent, parse_answer
        from detente.errors import InputError, Problem

        agent = run.agents[party]
        assert isinstance(agent, HumanAgent)
        request = agent.request(kind, *args)
        answer = interrupt(request.payload())
        try:
            content = parse_answer(run.scenario, request, answer)
        except ValueError as exc:  # the runner checks answers before it resumes with them
            raise InputError("a human answer", [Problem(party, str(exc))]) from None
        return Turn(content, human=True)

    @staticmethod
    async def write(run: RunContext, *events: Any) -> None:
        """Log events from a worker thread (an fsync must not stall the other turns). A write
        once started finishes even if the turn awaiting it is cancelled, and the runner
        settles it before it records how the run ended (`RunContext.settle`), so an answer
        that arrived is kept and the outcome stays the log's last event."""
        job = asyncio.ensure_future(asyncio.to_thread(run.log.write, *events))
        run.writes.add(job)
        job.add_done_callback(run.writes.discard)
        await asyncio.shield(job)

    @staticmethod
    async def injects(run: RunContext, round_: int) -> None:
        """Log the scenario's events due by round `round_` (scheduled at it, or at a round the
        protocol skipped) as `inject` events of this round, by round and then in the order the
        scenario lists them; events already logged are kept as they were."""
        due = [Inject(id=f"inject/{e.id}", round=round_, kind=e.kind, text=e.text,
                      visible_to=e.visible_to, change=e.change)
               for e in sorted(run.scenario.events, key=lambda e: e.round)
               if e.round <= round_ and f"inject/{e.id}" not in run.log]
        if due:
            await Turns.write(run, *due)

    # ------------------------------------------------------------------ shared steps

    async def opening(self, task: TaskInput, runtime: Runtime[RunContext]) -> dict[str, Any]:
        run = runtime.context
        party = task["party"]
        turn_id = f"opening/{party}"
        if run.log.get(turn_id) is not None:
            return {}
        self.announce(party, "opening", 0)
        ctx = self.view(run, task["state"], party, turn_id, (0, OPENING, 0))
        turn = await self.take(run, turn_id, party, "opening", ctx)
        await self.write(run, Statement(
            id=turn_id, kind="opening", round=0, speaker=party, text=turn.content.text,
            usage=turn.usage, latency=turn.latency, invalid=turn.invalid, llm=turn.llm,
            human=turn.human))
        return {}

    async def table(self, run: RunContext, state: NegotiationState, round_: int,
                    proposer: str) -> tuple[Package, str | None, list[Any]]:
        """Ask `proposer` for a package; a package already rejected is refused and asked again
        (at most MAX_REFUSALS times), then stands. Returns the package, the caucus partner and
        the events to log."""
        turn_id = f"r{round_}/proposal"
        protocol = self.protocol
        view: NegotiationState = {**state, "round": round_}
        rejected_in: dict[str, list[int]] = {}
        for e in before(run.log.raw(), (round_, PROPOSAL, 0), run.scenario.parties):
            if e["type"] == "tally" and not e["accepted"] and _sees(e, proposer):
                rejected_in.setdefault(package_key(e["package"]), []).append(e["round"])
        visible = protocol.visible_to(round_)
        events: list[Any] = []
        feedback: tuple[str, ...] = ()
        rounds: list[int] | None = None
        for attempt in range(MAX_REFUSALS + 1):
            ctx = self.view(run, view, proposer, turn_id, (round_, PROPOSAL, 0), feedback)
            turn = await self.take(run, turn_id, proposer, "propose", ctx)
            package = snap(run.scenario, turn.content.package)
            rounds = rejected_in.get(package_key(package.model_dump(mode="json")))
            if rounds is None or attempt == MAX_REFUSALS:
                break
            refused_id = f"{turn_id}/refused/{attempt + 1}"
            reason = (f"this package was already rejected (round {', '.join(map(str, rounds))});"
                      " table a package that differs from every rejected one on at least one "
                      "issue or term")
            events += tool_events(refused_id, round_, proposer, turn)
            events.append(RefusedProposal(
                id=refused_id, round=round_, speaker=proposer, package=package,
                rationale=turn.content.rationale if protocol.talk else "", reason=reason,
                usage=turn.usage, latency=turn.latency, llm=turn.llm, human=turn.human))
            feedback = (*feedback, f"Attempt {attempt + 1}: {package.describe()}: {reason}.")
        content = turn.content
        events += tool_events(turn_id, round_, proposer, turn)
        events.append(Proposal(
            id=turn_id, round=round_, speaker=proposer, package=package,
            rationale=content.rationale if protocol.talk else "", usage=turn.usage,
            latency=turn.latency, invalid=turn.invalid, llm=turn.llm, human=turn.human,
            repeats_rejected=rounds is not None, visible_to=visible,
            phase=protocol.phase(round_),
        ))
        caucus_with = content.caucus_with if protocol.caucus_allowed(round_) else None
        allowed = visible if visible != EVERYONE else run.scenario.parties
        if caucus_with not in allowed or caucus_with == proposer:
            caucus_with = None
        if caucus_with is not None:
            events.append(Statement(
                id=f"r{round_}/caucus", kind="caucus", round=round_, speaker=proposer,
                visible_to=[proposer, caucus_with], text=content.caucus_message))
        return package, caucus_with, events

    async def answer(self, run: RunContext, state: NegotiationState, party: str,
                     slot: int = 0) -> Response:
        """`party`'s answer to the package on the table (taken from the log if it is there)."""
        round_ = state["round"]
        turn_id = f"r{round_}/response/{party}"
        logged = run.log.get(turn_id)
        if logged is not None:
            return Response.model_validate(logged)
        self.announce(party, "response", round_)
        ctx = self.view(run, state, party, turn_id, (round_, RESPONSE, slot))
        turn = await self.take(run, turn_id, party, "respond", ctx)
        content = turn.content
        protocol = self.protocol
        response = Response(
            id=turn_id, round=round_, speaker=party, slot=slot,
            visible_to=protocol.visible_to(round_), phase=protocol.phase(round_),
            vote="reject" if turn.invalid else content.vote, stances=content.stances,
            statement=content.statement if protocol.talk else "",
            private_rationale=content.private_rationale,
            value_estimate=None if turn.invalid else content.value_estimate,
            usage=turn.usage, latency=turn.latency, invalid=turn.invalid, errors=turn.errors,
            llm=turn.llm, human=turn.human,
        )
        await self.write(run, *tool_events(turn_id, round_, party, turn), response)
        return response

    async def tally(self, run: RunContext, state: NegotiationState,
                    votes: Mapping[str, str], *, last_round: int) -> str | None:
        """Record the verdict on round `state["round"]`'s package; returns the run's status if
        it ends here."""
        round_ = state["round"]
        table = state["table"]
        assert table is not None
        protocol = self.protocol
        accepts = {p for p, v in votes.items() if v == "accept"}
        verdict = protocol.passes(round_, accepts)
        if verdict is None:
            row = np.array([[p in accepts for p in run.space.voters]], dtype=bool)
            verdict = bool(passes_rule(run.space, row)[0])
        earlier = before(run.log.raw(), (round_, TALLY, 0), run.scenario.parties)
        key = package_key(table)
        rejections = sum(
            1 for e in earlier
            if e["type"] == "tally" and not e["accepted"] and package_key(e["package"]) == key
            and e.get("phase", "plenary") == protocol.phase(round_)
        ) + (0 if verdict else 1)
        package = Package.model_validate(table)
        records: list[Any] = [Tally(
            id=f"r{round_}/tally", round=round_, package=package, votes=dict(votes),
            accepted=verdict, rejections_of_package=rejections,
            visible_to=protocol.visible_to(round_), phase=protocol.phase(round_),
        )]
        status: str | None = None
        plenary = protocol.phase(round_) == "plenary"
        if verdict and plenary:
            status, reason = "deal", f"the decision rule passed the package in round {round_}"
        elif plenary and rejections >= state.get("deadlock_after",
                                                  run.scenario.decision.deadlock_after):
            status, reason = "deadlock", f"the same package was rejected {rejections} times"
        elif round_ >= last_round:
            status, reason = "no_deal", f"no package passed within {round_} rounds"
        if status is not None:
            records.append(Outcome(
                id="outcome", status=status, package=package if status == "deal" else None,
                rounds=round_, votes=dict(votes), reason=reason))
        await self.write(run, *records)  # already logged ones (a resumed step) are skipped
        return status


# --------------------------------------------------------------------------- round protocols


def build_round_graph(
    protocol: Protocol,
) -> StateGraph[NegotiationState, RunContext, NegotiationState, NegotiationState]:
    """Rounds of table, caucus, answers at once and tally (`Protocol` says who and what)."""
    turns = Turns(protocol)

    async def propose(state: NegotiationState, runtime: Runtime[RunContext]) -> dict[str, Any]:
        run = runtime.context
        round_ = protocol.next_round(state.get("round", 0), run.log)
        proposer = protocol.proposer(round_)
        turn_id = f"r{round_}/proposal"
        await turns.injects(run, round_)
        logged = run.log.get(turn_id)
        if logged is not None:
            caucus = run.log.get(f"r{round_}/caucus")
            caucus_with = None
            if caucus is not None:
                caucus_with = next(p for p in caucus["visible_to"] if p != proposer)
            return {"round": round_, "table": logged["package"], "caucus_with": caucus_with}
        carried = protocol.carried(round_, run.log)
        if carried is not None:
            await turns.write(run, Proposal.model_validate(carried))
            return {"round": round_, "table": carried["package"], "caucus_with": None}
        turns.announce(proposer, "proposal", round_)
        package, caucus_with, events = await turns.table(run, state, round_, proposer)
        await turns.write(run, *events)
        return {"round": round_, "table": package.model_dump(mode="json"),
                "caucus_with": caucus_with}

    async def caucus_reply(state: NegotiationState,
                           runtime: Runtime[RunContext]) -> dict[str, Any]:
        run = runtime.context
        round_ = state["round"]
        turn_id = f"r{round_}/caucus_reply"
        if run.log.get(turn_id) is not None:
            return {}
        party = state.get("caucus_with")
        assert party is not None
        proposer = protocol.proposer(round_)
        caucus = run.log.get(f"r{round_}/caucus")
        message = caucus["text"] if caucus is not None else ""
        turns.announce(party, "caucus", round_)
        ctx = turns.view(run, state, party, turn_id, (round_, CAUCUS_REPLY, 0))
        turn = await turns.take(run, turn_id, party, "caucus_reply", ctx, message)
        await turns.write(run, Statement(
            id=turn_id, kind="caucus_reply", round=round_, speaker=party,
            visible_to=[proposer, party], text=turn.content.text, usage=turn.usage,
            latency=turn.latency, invalid=turn.invalid, llm=turn.llm, human=turn.human))
        return {}

    async def respond(task: TaskInput, runtime: Runtime[RunContext]) -> dict[str, Any]:
        await turns.answer(runtime.context, task["state"], task["party"])
        return {}

    async def tally(state: NegotiationState, runtime: Runtime[RunContext]) -> dict[str, Any]:
        run = runtime.context
        round_ = state["round"]
        answers = [e for e in before(run.log.raw(), (round_, TALLY, 0), run.scenario.parties)
                   if e["type"] == "response" and e["round"] == round_]
        votes = {e["speaker"]: e["vote"] for e in answers}
        last = protocol.total_rounds(state.get("max_rounds", run.scenario.decision.max_rounds))
        return {"status": await turns.tally(run, state, votes, last_round=last)}

    def to_openings(state: NegotiationState) -> list[Send] | str:
        openers = protocol.openers()
        if not openers:
            return "propose"
        return [Send("opening", TaskInput(party=p, state=state)) for p in openers]

    def to_responses(state: NegotiationState) -> list[Send]:
        return [Send("respond", TaskInput(party=p, state=state))
                for p in protocol.answerers(state["round"])]

    def after_proposal(state: NegotiationState) -> list[Send] | str:
        return "caucus_reply" if state.get("caucus_with") else to_responses(state)

    def after_tally(state: NegotiationState) -> str:
        return END if state.get("status") else "propose"

    graph = StateGraph(NegotiationState, context_schema=RunContext)
    graph.add_node("opening", cast(Any, turns.opening), input_schema=TaskInput)
    graph.add_node("propose", cast(Any, propose))
    graph.add_node("caucus_reply", cast(Any, caucus_reply))
    graph.add_node("respond", cast(Any, respond), input_schema=TaskInput)
    graph.add_node("tally", cast(Any, tally))
    graph.add_conditional_edges(START, to_openings, ["opening", "propose"])
    graph.add_edge("opening", "propose")
    graph.add_conditional_edges("propose", after_proposal, ["caucus_reply", "respond"])
    graph.add_conditional_edges("caucus_reply", to_responses, ["respond"])
    graph.add_edge("respond", "tally")
    graph.add_conditional_edges("tally", after_tally, ["propose", END])
    return graph
