"""`mediated`: a mediator tables one negotiating text a round; every party answers at once."""

from __future__ import annotations

from detente.errors import Problem
from detente.protocols.base import Protocol
from detente.registry import PROTOCOLS


@PROTOCOLS.register("mediated", description="a mediator tables a package each round and may "
                    "caucus with one party; every party answers at once")
class Mediated(Protocol):
    """The single negotiating text with caucus: the mediator proposes, the parties vote."""

    name = "mediated"
    description = ("the mediator tables a full package each round, may take one party aside, "
                   "and every voting party answers at once")

    def problems(self) -> list[Problem]:
        if self.scenario.mediator is None:
            return [Problem("protocol", "'mediated' needs a mediator; this scenario has none "
                            "(use 'rotating', or name a `mediator`)")]
        return []
