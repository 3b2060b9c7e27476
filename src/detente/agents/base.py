"""What an agent is: the turns it takes, what it sees of the negotiation, and what it returns.

An agent only ever holds a `private_view` of the scenario: the public parts plus its own
preferences. Everything else it learns arrives through a `Context`, built by the protocol from
the record of the run, holding only what that party may see and only a bounded slice of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, Literal, Protocol, TypeVar

from detente.events import AgentSettings, IssueStance, LLMCall, Usage
from detente.scenario import Package, Scenario

if TYPE_CHECKING:  # the transport (openai) loads only for LLM agents
    from detente.llm import Exchange, ToolCallRecord

Vote = Literal["accept", "reject"]


def private_view(scenario: Scenario, party: str) -> Scenario:
    """The scenario as `party` may know it: every other party's preferences and incentive
    removed, and of the events during the talks only the changes of its own walk-away (its
    valuation applies each from its round on; every event reaches agents through the record
    when it happens, never ahead of time)."""
    own = {party: scenario.preferences[party]} if party in scenario.preferences else {}
    incentive = {party: scenario.incentives[party]} if party in scenario.incentives else {}
    changes = [e for e in scenario.events if e.change is not None and e.change.party == party]
    return scenario.model_copy(update={"preferences": own, "incentives": incentive,
                                       "events": changes})


@dataclass(frozen=True)
class Line:
    """One public or caucus utterance as another agent sees it."""

    round: int
    speaker: str
    kind: str
    text: str


@dataclass(frozen=True)
class InjectLine:
    """An event during the talks, as a party that may see it sees it."""

    round: int
    kind: str
    text: str
    walk_away: float | None = None
    """The party's own new walk-away utility, when the event changes it (another party's
    new walk-away is never shown, only the event's text)."""


@dataclass(frozen=True)
class OwnPosition:
    """One of the party's own earlier answers."""

    round: int
    vote: Vote
    stances: dict[str, IssueStance]


@dataclass(frozen=True)
class Context:
    """Everything an agent may see when it takes a turn (bounded in size)."""

    party: str
    round: int
    max_rounds: int
    table: Package | None
    """The package on the table (None before the first proposal)."""
    statements: list[Line]
    """The last K public statements by anyone, oldest first."""
    own_positions: list[OwnPosition]
    """The party's own last K answers, oldest first."""
    caucus: list[Line]
    """Caucus messages this party took part in (last K)."""
    positions: dict[str, dict[str, IssueStance]]
    """Each voting party's latest public stances, for whoever tables the next package."""
    last_votes: dict[str, Vote]
    """How each party voted on the last package."""
    rejected: list[Package]
    """Packages rejected so far, oldest first (at most max_rounds)."""
    seed: int = 0
    turn_id: str = ""
    """The id of the event this turn will write (e.g. `r2/response/us`)."""
    feedback: tuple[str, ...] = ()
    """Why the harness refused this turn's earlier answers (e.g. a re-tabled package)."""
    quote_key: str = ""
    """The run's secret from which quote delimiters are derived."""
    last_round: int = 0
    """The round of `last_votes` (0: no vote yet)."""
    talk: bool = True
    """False under a protocol without talk (`no_talk`): packages and votes only, no text."""
    injects: tuple[InjectLine, ...] = ()
    """Events during the talks this party may see, up to this round, oldest first (a scenario
    schedules few: all are shown)."""
    rejected_rounds: tuple[int, ...] = ()
    """The round each of `rejected` was voted down in (same order; empty where unknown)."""


@dataclass(frozen=True)
class OpeningContent:
    text: str


@dataclass(frozen=True)
class ProposalContent:
    package: Package
    rationale: str
    caucus_with: str | None = None
    """A party the proposer takes aside this round (one at most)."""
    caucus_message: str = ""


@dataclass(frozen=True)
class ResponseContent:
    vote: Vote
    stances: dict[str, IssueStance]
    statement: str
    private_rationale: str
    value_estimate: float | None = None
    """The party's own estimate of the package's worth to it (LLM parties)."""


@dataclass(frozen=True)
class CaucusContent:
    text: str


C = TypeVar("C")


@dataclass(frozen=True)
class Turn(Generic[C]):
    """What a turn produced, with its cost. `invalid` turns carry a fallback `content`."""

    content: C
    usage: Usage = field(default_factory=Usage)
    latency: float = 0.0
    invalid: bool = False
    errors: list[str] = field(default_factory=list)
    llm: LLMCall | None = None
    """Request hashes and settings of an LLM turn."""
    exchanges: list[Exchange] = field(default_factory=list)
    """The full requests and raw responses (for the run's `prompts.jsonl`)."""
    tool_calls: list[ToolCallRecord] = field(default_factory=list)
    human: bool = False
    """A person answered (see `detente.agents.human`)."""


class Agent(Protocol):
    """A party or mediator. Implementations: scripted strategies, LLM agents and a person
    (whose turns the engine asks for through LangGraph's interrupt, not through these)."""

    party: str
    settings: AgentSettings

    def opening(self, ctx: Context) -> Turn[OpeningContent]: ...

    def propose(self, ctx: Context) -> Turn[ProposalContent]: ...

    def respond(self, ctx: Context) -> Turn[ResponseContent]: ...

    def caucus_reply(self, ctx: Context, message: str) -> Turn[CaucusContent]: ...
