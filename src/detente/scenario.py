"""The scenario model: parties, issues, numeric terms, preferences, red lines, decision rule.

Nothing here knows any particular negotiation: the article's parties and issues live only in
`scenarios/` and `agents/`. Structural checks are pydantic's; cross-references (unknown ids,
weights, utilities) are checked by `check_scenario`, which reports exact field paths.
"""

from __future__ import annotations

import itertools
import math
import os
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from detente.errors import InputError, Problem, did_you_mean, path_problem

if TYPE_CHECKING:
    import numpy as np

ID_PATTERN = r"^[a-z][a-z0-9_]*$"
SECTION_PATTERN = r"^[a-z0-9][a-z0-9-]*$"
SOURCE_PATTERN = r"^(article/[a-z0-9][a-z0-9-]*|inference|background|assumption)$"

Id = Annotated[str, Field(pattern=ID_PATTERN, max_length=64)]
"""Identifiers are lower snake case so they are safe as JSON keys, enum values and file names."""

Section = Annotated[str, Field(pattern=SECTION_PATTERN, max_length=64)]
"""A section of the cited text, as a slug: `territorial-parameters`."""

Source = Annotated[str, Field(pattern=SOURCE_PATTERN)]
"""Where a claim comes from (see `detente.sources`):
- `article/<section>`: stated in that section of the cited text (hedges kept in the prose);
- `inference`: drawn from the cited text but not stated there; `basis` names the sentence;
- `background`: public knowledge about the parties at the scenario's date;
- `assumption`: chosen by the modeller (utilities, weights, walk-away values, options the text
  does not name, personas, a variant's premises).
The field is optional in the models, so scenarios built in code validate; `load_bundle` and
`load_brief` refuse a file in which a claim has no tag."""

Basis = Annotated[str, Field(min_length=1)]
"""For an `inference`, the sentence of the cited text it is drawn from, in paraphrase; for any
other tag, an optional note on why the claim is tagged so."""

WEIGHT_TOLERANCE = 1e-6


class _Strict(BaseModel):
    # allow_inf_nan=False: every number of a scenario or brief must be finite.
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True,
                              allow_inf_nan=False)


class SourceRef(_Strict):
    """The text a scenario paraphrases, cited by title, author and date."""

    title: str
    author: str
    date: str
    sections: list[Section] = []
    """The sections that `article/<section>` tags may name, in the text's order."""


class Option(_Strict):
    """One way an issue can be settled."""

    id: Id
    label: str
    description: str
    source: Source | None = None
    basis: Basis | None = None


class Issue(_Strict):
    """A discrete issue: options ordered from one side's maximal position to the other's."""

    id: Id
    label: str
    description: str
    source: Source | None = None
    basis: Basis | None = None
    options: list[Option] = Field(min_length=2)

    def option_ids(self) -> list[str]:
        return [o.id for o in self.options]


class NumericTerm(_Strict):
    """A bounded number in the package, e.g. a troop ceiling, enumerated on a grid of `step`."""

    id: Id
    label: str
    description: str
    unit: str
    issue: Id | None = None
    """The issue this term belongs to, for display only."""
    min: float
    max: float
    step: float = Field(gt=0)
    source: Source | None = None
    basis: Basis | None = None

    def count(self) -> int:
        """How many grid values the term has (without allocating them)."""
        return round((self.max - self.min) / self.step) + 1

    def values(self) -> np.ndarray:
        import numpy as np  # numpy only where grids are built: commands that need none start fast

        return self.min + self.step * np.arange(self.count(), dtype=np.float64)

    def snap(self, value: float) -> float:
        """The grid value nearest to `value`, clamped to the range."""
        clamped = min(max(value, self.min), self.max)
        return float(self.min + round((clamped - self.min) / self.step) * self.step)


class Condition(_Strict):
    """A predicate over a package: an issue settled on one of `options`, or a term within bounds."""

    issue: Id | None = None
    options: list[Id] | None = None
    term: Id | None = None
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _one_subject(self) -> Condition:
        if (self.issue is None) == (self.term is None):
            raise ValueError("a condition names exactly one of `issue` or `term`")
        if self.issue is not None and not self.options:
            raise ValueError("an issue condition lists `options`")
        if self.issue is not None and (self.min is not None or self.max is not None):
            raise ValueError("an issue condition takes `options`, not `min`/`max`")
        if self.term is not None and self.options is not None:
            raise ValueError("a term condition takes `min`/`max`, not `options`")
        if self.term is not None and self.min is None and self.max is None:
            raise ValueError("a term condition gives `min`, `max` or both")
        return self

    def describe(self) -> str:
        if self.issue is not None:
            return f"{self.issue} in {{{', '.join(self.options or [])}}}"
        parts = []
        if self.min is not None:
            parts.append(f">= {self.min:g}")
        if self.max is not None:
            parts.append(f"<= {self.max:g}")
        return f"{self.term} {' and '.join(parts)}"


class _RedLineBase(_Strict):
    id: Id
    description: str
    source: Source | None = None
    basis: Basis | None = None


class ForbidRedLine(_RedLineBase):
    """Broken when `issue` is settled on any of `options`."""

    kind: Literal["forbid"]
    issue: Id
    options: list[Id] = Field(min_length=1)


class BoundRedLine(_RedLineBase):
    """Broken when `term` falls outside [`min`, `max`]."""

    kind: Literal["bound"]
    term: Id
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _some_bound(self) -> BoundRedLine:
        if self.min is None and self.max is None:
            raise ValueError("a bound red line gives `min`, `max` or both")
        return self


class ConditionalRedLine(_RedLineBase):
    """Broken when `if` holds and `then` does not."""

    kind: Literal["conditional"]
    if_: Condition = Field(alias="if")
    then: Condition


RedLine = Annotated[ForbidRedLine | BoundRedLine | ConditionalRedLine, Field(discriminator="kind")]


class Preferences(_Strict):
    """One voting party's private preferences: never shown to any other agent."""

    weights: dict[Id, float]
    """Weight of each issue and numeric term; they sum to 1."""
    utilities: dict[Id, dict[Id, float]]
    """Utility 0-100 of every option of every issue."""
    term_utilities: dict[Id, list[tuple[float, float]]] = {}
    """Piecewise-linear utility of each numeric term: (value, utility) points, values increasing."""
    reservation_utility: float
    """What no deal is worth to the party, 0-100."""
    reservation_source: Source | None = None
    """Where the walk-away value comes from (a number the text gives, or `assumption`)."""
    reservation_basis: Basis | None = None
    """The basis of an inferred walk-away value, or a note on how it was chosen."""
    red_lines: list[RedLine] = []


class Quorum(_Strict):
    """At least `min` voting parties accept, `including` all of the listed ones."""

    min: int = Field(ge=1)
    including: list[Id] = []


class DecisionRule(_Strict):
    required: list[Id]
    """Parties that must all accept."""
    veto: list[Id] = []
    """Parties whose rejection alone sinks a package."""
    quorum: Quorum | None = None
    max_rounds: int = Field(ge=1, le=100)
    deadlock_after: int = Field(default=3, ge=1)
    """The run ends in deadlock when the same package is rejected this many times."""


class ProtocolSpec(_Strict):
    """Which negotiation protocol stages the scenario (`detente.protocols`), with its settings.

    A scenario may give just the name (`protocol: no_talk`); without one, a scenario with a
    mediator is `mediated` and one without is `rotating`.
    """

    name: Id
    params: dict[str, Any] = {}

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, data: Any) -> Any:
        return {"name": data} if isinstance(data, str) else data


IncentiveKind = Literal["cooperative", "greedy", "saboteur", "targeted"]
INCENTIVES: dict[str, str] = {
    "cooperative": "seek an agreement every needed party can accept",
    "greedy": "pursue its own value only",
    "saboteur": "make the talks fail without being seen to",
    "targeted": "harm one named party",
}
"""Each incentive kind and what it tells the party, in a few words (transcripts, reports)."""


class Incentive(_Strict):
    """A private goal overlaid on a party's brief: `incentives: {russia: {kind: saboteur}}`.

    Only the party itself is told (its prompt; a scripted seat plays it, see
    `detente.agents.scripted.apply_incentive`); the scorer is unchanged, so what the incentive
    did shows in the outcome and in the metrics `detente compare` reports.
    """

    kind: IncentiveKind
    target: Id | None = None
    """The party a `targeted` incentive harms (a voting party other than its holder)."""
    source: Source | None = None
    basis: Basis | None = None

    @model_validator(mode="after")
    def _target_iff_targeted(self) -> Incentive:
        if self.kind == "targeted" and self.target is None:
            raise ValueError("a `targeted` incentive names its `target` party")
        if self.kind != "targeted" and self.target is not None:
            raise ValueError(f"only a `targeted` incentive has a `target` (this one is "
                             f"`{self.kind}`)")
        return self

    def describe(self) -> str:
        """`saboteur` or `targeted at ukraine`."""
        return f"targeted at {self.target}" if self.kind == "targeted" else self.kind


InjectKind = Literal["news", "incident", "summit", "walk_away"]


class WalkAwayChange(_Strict):
    """A party's walk-away utility from the event's round on."""

    party: Id
    reservation_utility: float


class ScheduledEvent(_Strict):
    """Something that happens during the talks (an "inject"), at the start of `round`.

    It is logged as an `inject` event when its round starts, seen by `visible_to`, and shown
    in the views of those parties from that round on (never before: agents learn of it from the
    record, not from the scenario). A `walk_away` event changes `change.party`'s walk-away
    utility from its round on: that party's agents value packages against it, and the rounds'
    measures and the final score use the walk-away in force (see `Scenario.at_round`).
    """

    id: Id
    round: int = Field(ge=1)
    kind: InjectKind
    text: str = Field(min_length=1)
    """What the parties who see it are told."""
    visible_to: list[Id] | Literal["all"] = "all"
    change: WalkAwayChange | None = None
    """Required for `walk_away` events, refused for the others."""
    source: Source | None = None
    basis: Basis | None = None

    @model_validator(mode="after")
    def _change_iff_walk_away(self) -> ScheduledEvent:
        if self.kind == "walk_away" and self.change is None:
            raise ValueError("a `walk_away` event gives its `change` (party and "
                             "reservation_utility)")
        if self.kind != "walk_away" and self.change is not None:
            raise ValueError(f"only a `walk_away` event has a `change` (this one is "
                             f"`{self.kind}`)")
        return self

    def seen_by(self, party: str) -> bool:
        return self.visible_to == "all" or party in self.visible_to


class Scenario(_Strict):
    format: Literal[1] = 1
    id: Id
    title: str
    description: str
    rationale: str | None = None
    """Why this variant exists and which premise it changes."""
    variant_of: Id | None = None
    """The scenario this one varies (set in variant files, for grouping and reports)."""
    source: SourceRef | None = None
    agents_dir: str = "../agents"
    """Folder of party briefs, relative to the scenario file."""
    parties: list[Id] = Field(min_length=2)
    mediator: Id | None = None
    """A party that tables packages and does not vote; None means the parties take turns."""
    issues: list[Issue] = Field(min_length=1)
    terms: list[NumericTerm] = []
    preferences: dict[Id, Preferences]
    decision: DecisionRule
    protocol: ProtocolSpec | None = None
    """The protocol; None means `mediated` with a mediator, `rotating` without."""
    incentives: dict[Id, Incentive] = {}
    """Private goals overlaid on parties' briefs (see `Incentive`); none by default."""
    events: list[ScheduledEvent] = []
    """Events during the talks, each at the start of its round (see `ScheduledEvent`)."""

    def reservation_at(self, party: str, round_: int) -> float:
        """`party`'s walk-away utility in force in round `round_`: the last `walk_away` event
        for it at or before that round, else its preferences' value."""
        value = self.preferences[party].reservation_utility
        for event in sorted(self.events, key=lambda e: e.round):
            if event.change is not None and event.change.party == party \
                    and event.round <= round_:
                value = event.change.reservation_utility
        return value

    def at_round(self, round_: int) -> Scenario:
        """This scenario with every walk-away utility as it stands in round `round_` (itself
        when no `walk_away` event has happened by then). Not validated again: only walk-away
        values change."""
        changed = {p: self.reservation_at(p, round_) for p in self.preferences}
        if all(v == self.preferences[p].reservation_utility for p, v in changed.items()):
            return self
        prefs = {p: pr.model_copy(update={"reservation_utility": changed[p]})
                 for p, pr in self.preferences.items()}
        return self.model_copy(update={"preferences": prefs})

    @property
    def voters(self) -> list[str]:
        """Parties that vote and hold utilities, in the scenario's order."""
        return [p for p in self.parties if p != self.mediator]

    def issue(self, issue_id: str) -> Issue:
        for issue in self.issues:
            if issue.id == issue_id:
                return issue
        raise KeyError(issue_id)

    def term(self, term_id: str) -> NumericTerm:
        for term in self.terms:
            if term.id == term_id:
                return term
        raise KeyError(term_id)

    def dimension_ids(self) -> list[str]:
        return [i.id for i in self.issues] + [t.id for t in self.terms]

    def protocol_spec(self) -> ProtocolSpec:
        """The protocol, the default made explicit."""
        if self.protocol is not None:
            return self.protocol
        return ProtocolSpec(name="mediated" if self.mediator is not None else "rotating")


class Package(_Strict):
    """A full proposal: one option per issue and a value for each numeric term."""

    options: dict[Id, Id]
    terms: dict[Id, float] = {}

    def describe(self) -> str:
        parts = [f"{k}={v}" for k, v in self.options.items()]
        parts += [f"{k}={v:g}" for k, v in self.terms.items()]
        return ", ".join(parts)


# --------------------------------------------------------------------------- cross-checks


def check_scenario(scenario: Scenario) -> list[Problem]:
    """Every cross-reference problem in a structurally valid scenario, with its field path."""
    problems: list[Problem] = []
    add = problems.append
    issues = {i.id: i for i in scenario.issues}
    terms = {t.id: t for t in scenario.terms}
    # From the lists, not the dicts: a repeated id would be counted (and weighed) twice.
    dims = [i.id for i in scenario.issues] + [t.id for t in scenario.terms]

    for name, ids in (("parties", scenario.parties), ("issues and terms", dims)):
        dupes = sorted({x for x in ids if ids.count(x) > 1})
        if dupes:
            add(Problem(name, f"ids must be unique; repeated: {', '.join(dupes)}"))
    for i, issue in enumerate(scenario.issues):
        opts = issue.option_ids()
        dupes = sorted({x for x in opts if opts.count(x) > 1})
        if dupes:
            add(Problem(f"issues[{i}].options", f"option ids must be unique; repeated: {dupes}"))
    for i, term in enumerate(scenario.terms):
        where = f"terms[{i}]"
        if term.max <= term.min:
            add(Problem(where, f"expected max > min, got min={term.min:g}, max={term.max:g}"))
            continue
        span = (term.max - term.min) / term.step
        if span < 1 - 1e-9:
            add(Problem(f"{where}.step", f"expected a step of at most max - min "
                        f"({term.max - term.min:g}), got {term.step:g}"))
            continue
        if not math.isclose(span, round(span), rel_tol=1e-9, abs_tol=1e-9):
            add(Problem(f"{where}.step", f"expected a step that divides max - min "
                        f"({term.max - term.min:g}), got {term.step:g}"))
        if term.issue is not None and term.issue not in issues:
            add(Problem(f"{where}.issue", _unknown("issue", term.issue, issues)))

    if not problems:
        problems += size_problems(scenario)
    unusable = path_problem(scenario.agents_dir)
    if unusable is not None:
        add(Problem("agents_dir", f"expected a folder path, got {unusable}"))

    if scenario.mediator is not None and scenario.mediator not in scenario.parties:
        add(Problem("mediator", _unknown("party", scenario.mediator, scenario.parties)))

    voters = scenario.voters
    for party in voters:
        if party not in scenario.preferences:
            add(Problem("preferences", f"missing preferences for voting party '{party}'"))
    for party, prefs in scenario.preferences.items():
        where = f"preferences.{party}"
        if party not in voters:
            why = "the mediator has no utilities" if party == scenario.mediator else (
                _unknown("party", party, scenario.parties))
            add(Problem(where, why))
            continue
        problems += _check_preferences(where, prefs, issues, terms)

    rule = scenario.decision
    for field in ("required", "veto"):
        for k, party in enumerate(getattr(rule, field)):
            if party not in voters:
                add(Problem(f"decision.{field}[{k}]", _unknown("voting party", party, voters)))
    if not rule.required and rule.quorum is None:
        add(Problem("decision", "expected `required` parties or a `quorum`"))
    if rule.quorum is not None:
        if rule.quorum.min > len(voters):
            add(Problem("decision.quorum.min", f"expected at most {len(voters)} (the number of "
                        f"voting parties), got {rule.quorum.min}"))
        for k, party in enumerate(rule.quorum.including):
            if party not in voters:
                add(Problem(f"decision.quorum.including[{k}]",
                            _unknown("voting party", party, voters)))
    problems += _check_incentives(scenario)
    problems += _check_events(scenario)
    return problems


def _check_incentives(scenario: Scenario) -> list[Problem]:
    """Incentives sit on parties of the scenario; a mediator has no value of its own to be
    greedy about; a target is a voting party other than the incentive's holder."""
    problems: list[Problem] = []
    voters = scenario.voters
    for party, incentive in scenario.incentives.items():
        where = f"incentives.{party}"
        if party not in scenario.parties:
            problems.append(Problem(where, _unknown("party", party, scenario.parties)))
            continue
        if incentive.kind == "greedy" and party == scenario.mediator:
            problems.append(Problem(f"{where}.kind", "the mediator holds no utilities of its "
                                    "own to pursue: a `greedy` incentive needs a voting party"))
        if incentive.target is not None:
            if incentive.target == party:
                problems.append(Problem(f"{where}.target", "a party cannot target itself"))
            elif incentive.target not in voters:
                problems.append(Problem(f"{where}.target",
                                        _unknown("voting party", incentive.target, voters)))
    return problems


def _check_events(scenario: Scenario) -> list[Problem]:
    """Unique ids; audiences of known parties; walk-away changes of voting parties, to a
    utility from 0 to 100, seen by the party whose walk-away changes, at most one per party
    and round. (Rounds beyond the protocol's last are refused with the protocol's checks.)"""
    problems: list[Problem] = []
    ids = [e.id for e in scenario.events]
    dupes = sorted({x for x in ids if ids.count(x) > 1})
    if dupes:
        problems.append(Problem("events", f"event ids must be unique; repeated: "
                                f"{', '.join(dupes)}"))
    changes: dict[tuple[str, int], int] = {}
    for k, event in enumerate(scenario.events):
        where = f"events[{k}]"
        if event.visible_to != "all":
            if not event.visible_to:
                problems.append(Problem(f"{where}.visible_to", "expected `all` or at least one "
                                        "party"))
            for j, party in enumerate(event.visible_to):
                if party not in scenario.parties:
                    problems.append(Problem(f"{where}.visible_to[{j}]",
                                            _unknown("party", party, scenario.parties)))
        change = event.change
        if change is None:
            continue
        if change.party not in scenario.voters:
            problems.append(Problem(f"{where}.change.party",
                                    _unknown("voting party", change.party, scenario.voters)))
            continue
        if not 0 <= change.reservation_utility <= 100:
            problems.append(Problem(f"{where}.change.reservation_utility", "expected a utility "
                                    f"from 0 to 100, got {change.reservation_utility:g}"))
        if not event.seen_by(change.party):
            problems.append(Problem(f"{where}.visible_to", f"the party whose walk-away changes "
                                    f"('{change.party}') must see the event"))
        earlier = changes.setdefault((change.party, event.round), k)
        if earlier != k:
            problems.append(Problem(f"{where}.change", f"events[{earlier}] already changes "
                                    f"{change.party}'s walk-away in round {event.round}"))
    return problems


def round_problems(scenario: Scenario, last_round: int) -> list[Problem]:
    """Events scheduled after the last round the protocol can play (`last_round`)."""
    return [Problem(f"events[{k}].round", f"expected a round from 1 to {last_round} (the last "
                    f"round this scenario's protocol can play), got {event.round}")
            for k, event in enumerate(scenario.events) if event.round > last_round]


DEFAULT_MAX_PACKAGES = 10_000_000
"""Largest outcome space `analyze` and `run` accept by default: the analysis streams it in
bounded chunks, and a scripted agent keeps about 9 bytes per package (90 MB at the limit)."""


def max_packages() -> int:
    """The package limit: `DETENTE_MAX_PACKAGES` if set, else `DEFAULT_MAX_PACKAGES`."""
    raw = os.environ.get("DETENTE_MAX_PACKAGES", "").strip().replace("_", "").replace(",", "")
    if not raw:
        return DEFAULT_MAX_PACKAGES
    if not raw.isdigit() or int(raw) < 1:
        raise InputError("environment", [Problem("DETENTE_MAX_PACKAGES", "expected a whole "
                                                 f"number of packages above 0, got {raw!r}")])
    return int(raw)


def package_count(scenario: Scenario) -> int:
    """How many packages the scenario's grid holds, in exact integer arithmetic."""
    return math.prod([len(i.options) for i in scenario.issues]
                     + [t.count() for t in scenario.terms])


def size_problems(scenario: Scenario) -> list[Problem]:
    """A grid too large to analyze or play within the documented memory, with its size."""
    size, limit = package_count(scenario), max_packages()
    if size <= limit:
        return []
    dims = " x ".join([str(len(i.options)) for i in scenario.issues]
                      + [f"{t.count():,}" for t in scenario.terms])
    return [Problem("issues", f"the outcome space has {size:,} packages ({dims}), over the "
                    f"limit of {limit:,} that analyze and run handle within their memory "
                    "budget; use fewer options or a coarser step, or raise the limit with "
                    "DETENTE_MAX_PACKAGES if this machine has the memory")]


def _check_preferences(
    where: str, prefs: Preferences, issues: dict[str, Issue], terms: dict[str, NumericTerm]
) -> list[Problem]:
    problems: list[Problem] = []
    add = problems.append
    dims = list(issues) + list(terms)
    for dim in dims:
        if dim not in prefs.weights:
            add(Problem(f"{where}.weights", f"missing weight for '{dim}': expected one for "
                        "every issue and numeric term"))
    for dim, weight in prefs.weights.items():
        if dim not in dims:
            add(Problem(f"{where}.weights.{dim}", _unknown("issue or term", dim, dims)))
        elif weight < 0:
            add(Problem(f"{where}.weights.{dim}", f"expected a weight >= 0, got {weight:g}"))
    total = sum(prefs.weights.values())
    if not math.isclose(total, 1.0, abs_tol=WEIGHT_TOLERANCE):
        add(Problem(f"{where}.weights", f"expected weights summing to 1, got {total:g}"))
    if not 0 <= prefs.reservation_utility <= 100:
        add(Problem(f"{where}.reservation_utility",
                    f"expected a utility from 0 to 100, got {prefs.reservation_utility:g}"))

    for issue_id, issue in issues.items():
        table = prefs.utilities.get(issue_id)
        if table is None:
            add(Problem(f"{where}.utilities", f"missing utilities for issue '{issue_id}'"))
            continue
        for opt in issue.option_ids():
            if opt not in table:
                add(Problem(f"{where}.utilities.{issue_id}",
                            f"missing utility for option '{opt}': expected one for every "
                            f"option of issue '{issue_id}'"))
        for opt, value in table.items():
            if opt not in issue.option_ids():
                add(Problem(f"{where}.utilities.{issue_id}.{opt}", _unknown(
                    "option", opt, issue.option_ids(), of=f" of issue '{issue_id}'")))
            elif not 0 <= value <= 100:
                add(Problem(f"{where}.utilities.{issue_id}.{opt}",
                            f"expected a utility from 0 to 100, got {value:g}"))
    for issue_id in prefs.utilities:
        if issue_id not in issues:
            add(Problem(f"{where}.utilities.{issue_id}", _unknown("issue", issue_id, issues)))

    for term_id, term in terms.items():
        points = prefs.term_utilities.get(term_id)
        if points is None:
            add(Problem(f"{where}.term_utilities", f"missing utility points for term '{term_id}'"))
            continue
        tw = f"{where}.term_utilities.{term_id}"
        xs = [x for x, _ in points]
        if len(points) < 2:
            add(Problem(tw, "expected at least two (value, utility) points"))
        elif any(b <= a for a, b in itertools.pairwise(xs)):
            add(Problem(tw, "expected point values in strictly increasing order"))
        for k, (x, u) in enumerate(points):
            if not term.min <= x <= term.max:
                add(Problem(f"{tw}[{k}]", f"expected a value within [{term.min:g}, "
                            f"{term.max:g}], got {x:g}"))
            if not 0 <= u <= 100:
                add(Problem(f"{tw}[{k}]", f"expected a utility from 0 to 100, got {u:g}"))
    for term_id in prefs.term_utilities:
        if term_id not in terms:
            add(Problem(f"{where}.term_utilities.{term_id}", _unknown("term", term_id, terms)))

    for k, line in enumerate(prefs.red_lines):
        lw = f"{where}.red_lines[{k}]"
        if isinstance(line, ForbidRedLine):
            problems += _check_issue_options(lw, line.issue, line.options, issues)
        elif isinstance(line, BoundRedLine):
            if line.term not in terms:
                add(Problem(f"{lw}.term", _unknown("term", line.term, terms)))
        else:
            for name, cond in (("if", line.if_), ("then", line.then)):
                if cond.issue is not None:
                    problems += _check_issue_options(
                        f"{lw}.{name}", cond.issue, cond.options or [], issues)
                elif cond.term not in terms:
                    add(Problem(f"{lw}.{name}.term", _unknown("term", str(cond.term), terms)))
    ids = [line.id for line in prefs.red_lines]
    dupes = sorted({x for x in ids if ids.count(x) > 1})
    if dupes:
        add(Problem(f"{where}.red_lines", f"red line ids must be unique; repeated: {dupes}"))
    return problems


def _check_issue_options(
    where: str, issue_id: str, options: list[str], issues: dict[str, Issue]
) -> list[Problem]:
    if issue_id not in issues:
        return [Problem(f"{where}.issue", _unknown("issue", issue_id, issues))]
    known = issues[issue_id].option_ids()
    return [
        Problem(f"{where}.options[{k}]",
                _unknown("option", opt, known, of=f" of issue '{issue_id}'"))
        for k, opt in enumerate(options)
        if opt not in known
    ]


def _unknown(kind: str, value: str, known: Any, of: str = "") -> str:
    names = sorted({str(k) for k in known})
    return (f"unknown {kind} '{value}'{of}{did_you_mean(str(value), names)}; expected one of: "
            f"{', '.join(names)}")


def describe_rule(scenario: Scenario) -> str:
    """The decision rule in one sentence, for prompts and reports."""
    rule = scenario.decision
    voters = scenario.voters
    parts: list[str] = []
    if rule.required:
        if set(rule.required) == set(voters):
            parts.append(f"every voting party accepts ({_join(voters)})")
        else:
            parts.append(f"{_join(rule.required)} all accept")
    if rule.quorum is not None:
        quorum = f"at least {rule.quorum.min} of the {len(voters)} voting parties accept"
        if rule.quorum.including:
            quorum += f", including {_join(rule.quorum.including)}"
        parts.append(quorum)
    text = "A package passes when " + " and ".join(parts) + "."
    vetoes = [p for p in rule.veto if p not in rule.required]
    if vetoes:
        each = "each " if len(vetoes) > 1 else ""
        text += f" {_join(vetoes)} can {each}sink a package alone by rejecting it (veto)."
    return text


def _join(items: list[str]) -> str:
    if len(items) <= 2:
        return " and ".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]
