"""One party's own valuation of packages, computed from its private view of the scenario.

LLM parties with the `table` or `tool` assist are told what the scorer would say of a package
for them, and scripted negotiators decide with it. It reads only the party's own preferences.
"""

from __future__ import annotations

from dataclasses import dataclass

from detente.scenario import Package, RedLine, Scenario
from detente.scoring import normalize_package
from detente.space import PackageSpace


@dataclass(frozen=True)
class Valuation:
    utility: float
    reservation_utility: float
    red_lines_broken: list[RedLine]

    @property
    def surplus(self) -> float:
        return self.utility - self.reservation_utility

    def as_dict(self) -> dict[str, object]:
        return {
            "value": round(self.utility, 2),
            "walk_away": self.reservation_utility,
            "above_walk_away": round(self.surplus, 2),
            "red_lines_broken": [{"id": r.id, "description": r.description}
                                 for r in self.red_lines_broken],
        }


class PartyValuer:
    """Values packages for `party` only: its weights, utilities, walk-away and red lines."""

    def __init__(self, view: Scenario, party: str) -> None:
        if party not in view.preferences:
            raise ValueError(f"'{party}' holds no preferences in this view")
        self.party = party
        self.scenario = view
        self.preferences = view.preferences[party]
        # A space in which this party is the only voter: PackageSpace wants preferences for every
        # voter, and the private view holds only ours. model_copy skips validation, which would
        # (rightly) refuse a one-party scenario.
        own = view.model_copy(update={"parties": [party], "mediator": None,
                                      "preferences": {party: self.preferences}})
        self.space = PackageSpace(own)

    def value(self, package: Package, round_: int | None = None) -> Valuation:
        """The package's worth against the walk-away in force in round `round_` (a
        `walk_away` event may change it during the talks; None: the scenario's own value).
        Raises ValueError for a package that does not name every issue and term."""
        package = normalize_package(self.scenario, package)
        ev = self.space.evaluate(self.space.columns_for_packages([package]))
        broken = [line.rule for line, hit in zip(self.space.red_lines, ev.broken[0], strict=True)
                  if hit]
        return Valuation(float(ev.utilities[0, 0]), self.reservation(round_), broken)

    def reservation(self, round_: int | None = None) -> float:
        """The party's walk-away utility in round `round_` (None: before any event)."""
        if round_ is None:
            return self.preferences.reservation_utility
        return self.scenario.reservation_at(self.party, round_)
