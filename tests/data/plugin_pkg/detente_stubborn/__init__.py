"""A test plug-in: `scripted:stubborn`, a negotiator that never concedes, and `one_shot`, a
protocol of a single mediated round. Registers through detente's public registry on import."""

from __future__ import annotations

from typing import Any, ClassVar

from detente.agents.base import (
    CaucusContent,
    Context,
    OpeningContent,
    ProposalContent,
    ResponseContent,
    Turn,
)
from detente.events import AgentSettings, IssueStance
from detente.protocols.base import Protocol
from detente.registry import PROTOCOLS, STRATEGIES
from detente.scenario import Package, Scenario


class Stubborn:
    """Asks for its best option on every issue and accepts nothing less."""

    def __init__(self, party: str, view: Scenario) -> None:
        self.party = party
        self.view = view
        self.settings = AgentSettings(kind="scripted", strategy="stubborn")
        prefs = view.preferences[party]
        self.best = {i.id: max(i.option_ids(), key=lambda o: prefs.utilities[i.id][o])
                     for i in view.issues}

    def opening(self, ctx: Context) -> Turn[OpeningContent]:
        return Turn(OpeningContent(f"{self.party} will not move."))

    def propose(self, ctx: Context) -> Turn[ProposalContent]:
        terms = {t.id: t.max for t in self.view.terms}
        return Turn(ProposalContent(Package(options=self.best, terms=terms), "my terms"))

    def respond(self, ctx: Context) -> Turn[ResponseContent]:
        table = ctx.table.options if ctx.table is not None else {}
        stances = {i: IssueStance(stance="accept") if table.get(i) == o else
                   IssueStance(stance="object", wants=o) for i, o in self.best.items()}
        vote = "accept" if all(s.stance == "accept" for s in stances.values()) else "reject"
        return Turn(ResponseContent(vote, stances, "no", "stubborn"))

    def caucus_reply(self, ctx: Context, message: str) -> Turn[CaucusContent]:
        return Turn(CaucusContent("no"))


@STRATEGIES.register("stubborn", description="never concedes (a test plug-in)")
def make_stubborn(party: str, view: Scenario) -> Any:
    return Stubborn(party, view)


@PROTOCOLS.register("one_shot", description="a single mediated round (a test plug-in)")
class OneShot(Protocol):
    name: ClassVar[str] = "one_shot"
    description: ClassVar[str] = "one mediated round: take it or leave it"

    def total_rounds(self, max_rounds: int) -> int:
        return 1
