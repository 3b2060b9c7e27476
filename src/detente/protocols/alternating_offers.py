"""`alternating_offers`: the stacked alternating offers protocol of multilateral negotiation.

The parties sit in a circle (the scenario's order of voting parties). The first tables a package;
each party after it in turn either accepts the offer on the table or rejects it, and a rejection
is a counter-offer: the offer with the options the party asked for instead (its objections),
which the next parties now answer. An offer every other party has accepted is agreed. A round is
one offer; the scenario's round limit bounds the offers (Aydogan et al., "Alternating offers
protocols for multilateral negotiation", 2017). A mediator, if the scenario has one, takes no
part. Every party must accept, whatever the scenario's decision rule says.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from detente.protocols.base import Protocol
from detente.registry import PROTOCOLS

if TYPE_CHECKING:
    from langgraph.graph import StateGraph


@PROTOCOLS.register("alternating_offers", description="parties in a circle accept the offer "
                    "on the table or counter it with a whole package (stacked alternating "
                    "offers); an offer all accept is agreed")
class AlternatingOffers(Protocol):
    name = "alternating_offers"
    description = ("each party in turn accepts the offer on the table or counters it with a "
                   "whole package; an offer every other party accepts is agreed")

    def openers(self) -> list[str]:
        return list(self.voters) if self.talk else []

    def caucus_allowed(self, round_: int) -> bool:
        return False

    def passes(self, round_: int, accepts: set[str]) -> bool | None:
        return set(self.voters) <= accepts

    def circle_after(self, proposer: str) -> list[str]:
        """The other parties, in the order they answer an offer by `proposer`."""
        voters = self.voters
        k = voters.index(proposer)
        return voters[k + 1:] + voters[:k]

    def build(self) -> StateGraph[Any, Any, Any, Any]:
        from detente.protocols.offers_graph import build_offers_graph

        return build_offers_graph(self)

    def recursion_limit(self, max_rounds: int) -> int:
        return (len(self.voters) + 2) * max_rounds + 10
