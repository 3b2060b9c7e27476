"""Party briefs: who each agent is, what it has said in public, and what it cares about most.

A brief is scenario-independent persona and public-position material; the private numbers an
agent negotiates with (utilities, weights, red lines) live in the scenario's `preferences`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from detente.scenario import Id, Source, SourceRef, _Strict


class Persona(_Strict):
    who: str
    """Who the agent speaks for."""
    answers_to: str
    """Whose approval it needs at home."""
    style: str
    """How it negotiates."""


class Position(_Strict):
    """A stated position on one issue (or `general`), with where it comes from."""

    issue: Id
    stance: str
    source: Source


class Brief(_Strict):
    format: Literal[1] = 1
    id: Id
    display_name: str
    role: Literal["party", "mediator"]
    persona: Persona
    positions: list[Position] = Field(min_length=1)
    priorities: list[str] = Field(min_length=1)
    """What the party cares about most, most important first."""
    source: SourceRef

    def positions_on(self, issue_id: str) -> list[Position]:
        return [p for p in self.positions if p.issue == issue_id]
