"""`bilateral_first`: two parties negotiate privately first, then the plenary (the article's
US-Russia track)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from detente.errors import Problem
from detente.protocols.base import Phase, Protocol
from detente.registry import PROTOCOLS
from detente.scenario import Id


class BilateralParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    parties: list[Id] = Field(min_length=2, max_length=2)
    """The two parties of the private track; the first tables first."""
    rounds: int = Field(default=3, ge=1, le=20)
    """Rounds of the private track before the plenary."""


@PROTOCOLS.register("bilateral_first", description="two named parties negotiate privately for "
                    "some rounds, then the plenary starts from what they agreed")
class BilateralFirst(Protocol):
    """Rounds 1..k: the two parties table packages in turn and both vote, seen by no one else;
    the track ends at their first agreement. Then the plenary (mediated, or rotating without a
    mediator) opens with their agreed package, if any, tabled by the first party; rounds k+1..
    count toward the scenario's round limit."""

    name = "bilateral_first"
    description = ("two named parties negotiate privately (k rounds at most), then the plenary "
                   "opens with the package they agreed")
    Params = BilateralParams

    @property
    def pair(self) -> list[str]:
        params: Any = self.params
        return list(params.parties)

    @property
    def k(self) -> int:
        params: Any = self.params
        return int(params.rounds)

    def problems(self) -> list[Problem]:
        problems = []
        for n, party in enumerate(self.pair):
            if party not in self.voters:
                problems.append(Problem(f"protocol.params.parties[{n}]", f"expected a voting "
                                        f"party ({', '.join(self.voters)}), got '{party}'"))
        if len(set(self.pair)) != 2:
            problems.append(Problem("protocol.params.parties", "expected two different parties"))
        return problems

    def proposer(self, round_: int) -> str:
        if round_ <= self.k:
            return self.pair[(round_ - 1) % 2]
        mediator = self.scenario.mediator
        if mediator is not None:
            return mediator
        return self.voters[(round_ - self.k - 1) % len(self.voters)]

    def answerers(self, round_: int) -> list[str]:
        return list(self.pair) if round_ <= self.k else list(self.voters)

    def visible_to(self, round_: int) -> list[str] | Literal["all"]:
        return list(self.pair) if round_ <= self.k else "all"

    def phase(self, round_: int) -> Phase:
        return "bilateral" if round_ <= self.k else "plenary"

    def caucus_allowed(self, round_: int) -> bool:
        return self.talk and round_ > self.k

    def total_rounds(self, max_rounds: int) -> int:
        return self.k + max_rounds

    def passes(self, round_: int, accepts: set[str]) -> bool | None:
        return set(self.pair) <= accepts if round_ <= self.k else None

    def next_round(self, round_: int, log: Any) -> int:
        if round_ < self.k and self._agreed(log) is not None:
            return self.k + 1
        return round_ + 1

    def _agreed(self, log: Any) -> dict[str, Any] | None:
        for event in log.raw():
            if event["type"] == "tally" and event.get("phase") == "bilateral" and \
                    event["accepted"]:
                return dict(event)
        return None

    def carried(self, round_: int, log: Any) -> dict[str, Any] | None:
        if round_ != self.k + 1:
            return None
        agreed = self._agreed(log)
        if agreed is None:
            return None
        a, b = self.pair
        return {"id": f"r{round_}/proposal", "type": "proposal", "round": round_, "speaker": a,
                "package": agreed["package"],
                "rationale": f"{a} and {b} agreed this package between themselves in round "
                             f"{agreed['round']}; it opens the plenary."}
