"""`rotating`: no mediator; the voting parties take turns tabling packages."""

from __future__ import annotations

from detente.protocols.base import Protocol
from detente.registry import PROTOCOLS


@PROTOCOLS.register("rotating", description="the voting parties take turns tabling a package; "
                    "every party answers at once")
class Rotating(Protocol):
    """Parties table packages in turn (a mediator, if the scenario has one, stays silent)."""

    name = "rotating"
    description = ("the voting parties take turns tabling a full package, and every voting "
                   "party answers at once")

    def openers(self) -> list[str]:
        return list(self.voters)

    def proposer(self, round_: int) -> str:
        return self.voters[(round_ - 1) % len(self.voters)]
