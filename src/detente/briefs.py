"""Party briefs: who each agent is, what it has said in public, and what it cares about most.

A brief is scenario-independent persona and public-position material; the private numbers an
agent negotiates with (utilities, weights, red lines) live in the scenario's `preferences`.

Every position and the persona carry a source tag (see `detente.scenario.Source`). A position
may also name the options it `prefers`, `accepts` or `rejects`, by their ids in the position's
issue: these tie the prose to the numbers. The ids are checked against a scenario when a bundle
loads (a brief alone does not know the options), and `detente validate` reports a brief whose
links contradict the party's utilities (see `detente.consistency`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from detente.scenario import Basis, Id, Source, SourceRef, _Strict

LINKS = ("prefers", "accepts", "rejects")
"""The position fields that name options, strongest liking first."""


class Persona(_Strict):
    who: str
    """Who the agent speaks for."""
    answers_to: str
    """Whose approval it needs at home."""
    style: str
    """How it negotiates."""
    source: Source | None = None
    """One tag for the whole persona (usually `assumption`: the modeller's portrait)."""
    basis: Basis | None = None


class Position(_Strict):
    """A stated position on one issue (or `general`), with where it comes from.

    Where the cited text hedges ("might", "could", "likely"), the stance says so ("the article
    expects ..."): a tag says where a claim comes from, the prose says how sure that source is.
    """

    issue: Id
    stance: str
    source: Source | None = None
    basis: Basis | None = None
    prefers: list[Id] = Field(default_factory=list)
    """Options of `issue` the party wants over the ones it accepts or rejects."""
    accepts: list[Id] = Field(default_factory=list)
    """Options of `issue` it could live with."""
    rejects: list[Id] = Field(default_factory=list)
    """Options of `issue` it will not accept in any package."""


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
