"""What a negotiation protocol is: who proposes, who answers, what each may see.

A `Protocol` is a small object built from a scenario and the protocol's settings
(`protocol: {name, params}` in the scenario). It answers the questions the engine asks (the
proposer of a round, who answers it, who may see it, whether the parties talk) and builds the
LangGraph graph (`build`). Nothing here imports LangGraph: `detente validate` checks a protocol
without paying for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from detente.errors import Problem
from detente.scenario import ProtocolSpec, Scenario

if TYPE_CHECKING:
    from langgraph.graph import StateGraph

Phase = Literal["plenary", "bilateral"]


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Protocol:
    """The base of every protocol: the mediated single-text procedure of rounds.

    Round r: `proposer(r)` tables a package, may take one party aside (caucus), every party in
    `answerers(r)` answers at once, and the tally applies `passes(r, ...)`. Subclasses change
    those answers, or build another graph altogether (`build`).
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    talk: ClassVar[bool] = True
    """Whether parties speak (openings, statements, rationales, caucuses) or only table and
    vote."""
    Params: ClassVar[type[BaseModel]] = NoParams

    def __init__(self, scenario: Scenario, params: BaseModel) -> None:
        self.scenario = scenario
        self.params = params

    @classmethod
    def create(cls, scenario: Scenario, spec: ProtocolSpec) -> Protocol:
        """Raises ValueError with the problems of the settings."""
        try:
            params = cls.Params.model_validate(spec.params)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ValueError(f"{where}: {first['msg']}" if where else first["msg"]) from None
        return cls(scenario, params)

    # ------------------------------------------------------------------ checks

    def problems(self) -> list[Problem]:
        """What in the scenario this protocol cannot stage (field paths of the scenario)."""
        return []

    # ------------------------------------------------------------------ the procedure

    @property
    def voters(self) -> list[str]:
        return self.scenario.voters

    def openers(self) -> list[str]:
        """Who gives an opening statement."""
        return list(self.scenario.parties) if self.talk else []

    def proposer(self, round_: int) -> str:
        mediator = self.scenario.mediator
        if mediator is not None:
            return mediator
        voters = self.voters
        return voters[(round_ - 1) % len(voters)]

    def answerers(self, round_: int) -> list[str]:
        """Who votes on round `round_`'s package (a voting proposer votes on its own too)."""
        return list(self.voters)

    def visible_to(self, round_: int) -> list[str] | Literal["all"]:
        return "all"

    def phase(self, round_: int) -> Phase:
        return "plenary"

    def caucus_allowed(self, round_: int) -> bool:
        return self.talk

    def total_rounds(self, max_rounds: int) -> int:
        """The last round's number (a phase before the plenary adds its rounds)."""
        return max_rounds

    def passes(self, round_: int, accepts: set[str]) -> bool | None:
        """None: the scenario's decision rule decides (the usual case)."""
        return None

    def next_round(self, round_: int, log: Any) -> int:
        """The round after `round_` (a phase that ends early skips its remaining rounds)."""
        return round_ + 1

    def carried(self, round_: int, log: Any) -> dict[str, Any] | None:
        """A package a round starts from instead of asking the proposer (see bilateral_first)."""
        return None

    def describe(self) -> str:
        return self.description

    def settings(self) -> dict[str, Any]:
        return self.params.model_dump(mode="json")

    # ------------------------------------------------------------------ the graph

    def build(self) -> StateGraph[Any, Any, Any, Any]:
        from detente.protocols.engine import build_round_graph

        return build_round_graph(self)

    def recursion_limit(self, max_rounds: int) -> int:
        """Supersteps a run can take: openings, then up to four steps a round, plus slack."""
        return 4 * self.total_rounds(max_rounds) + 10
