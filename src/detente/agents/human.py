"""A person at the table: a seat played by a human (`--agent ukraine=human`).

A human turn is not a call: the engine pauses the graph with LangGraph's `interrupt`, handing
out a request (`HumanAgent.request`: what the person sees and what they must answer), and the
run is checkpointed there. Whoever drives the run (the terminal in `detente run`, or a
callable given to `detente.run(human=...)`) answers it; `parse_answer` checks the answer
against the scenario and turns it into exactly what an agent returns. Quitting leaves the run
paused at that turn: `detente run --resume RUN` asks again.

The person sees what an agent of that seat sees, and nothing more: their brief, their own
values, weights, walk-away and red lines, the package on the table with its value to them and
the red lines it breaks, and the bounded public record (plus their caucus messages).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from detente.agents.base import (
    CaucusContent,
    Context,
    OpeningContent,
    ProposalContent,
    ResponseContent,
    Turn,
)
from detente.agents.valuation import PartyValuer
from detente.briefs import Brief
from detente.errors import DetenteError
from detente.events import AgentSettings, IssueStance
from detente.scenario import Package, Scenario, describe_rule

KINDS = ("opening", "propose", "respond", "caucus_reply")
"""The turns a person may be asked for."""


@dataclass
class HumanRequest:
    """One turn asked of a person: what they see and what they must answer (see
    `parse_answer` for the answer's shape). `problem` says why their last answer was refused."""

    party: str
    kind: str
    turn_id: str
    round: int
    max_rounds: int
    view: str
    """Everything the seat may see now, as text."""
    message: str = ""
    """For `caucus_reply`: what the mediator said in caucus."""
    table: dict[str, Any] | None = None
    """The package on the table (options and terms), if any."""
    rejected: list[dict[str, Any]] = field(default_factory=list)
    """Packages already rejected: a proposer tabling one again is refused."""
    feedback: list[str] = field(default_factory=list)
    problem: str = ""
    interrupt_id: str = ""

    def payload(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("problem", "interrupt_id")}

    @classmethod
    def from_payload(cls, data: Mapping[str, Any], interrupt_id: str = "") -> HumanRequest:
        return cls(**dict(data), interrupt_id=interrupt_id)


HumanIO = Callable[[HumanRequest, Scenario], "Mapping[str, Any] | None"]
"""Answers a person's turn: the answer (see `parse_answer`), or None to pause the run there."""


NOT_A_CALL = "a human seat answers through the run's interrupt, not a call"


class HumanTurnError(DetenteError):
    """A human seat was asked for a turn outside a graph that can pause for it."""


class HumanAgent:
    """The seat of a person: builds what they see; their answers come through the engine."""

    def __init__(self, party: str, view: Scenario, brief: Brief, settings: AgentSettings
                 ) -> None:
        self.party = party
        self.view = view
        self.brief = brief
        self.settings = settings
        self.valuer = PartyValuer(view, party) if party in view.preferences else None

    # An Agent's methods: a person's turn is never a call (see the module docstring).
    def opening(self, ctx: Context) -> Turn[OpeningContent]:
        raise HumanTurnError(NOT_A_CALL)

    def propose(self, ctx: Context) -> Turn[ProposalContent]:
        raise HumanTurnError(NOT_A_CALL)

    def respond(self, ctx: Context) -> Turn[ResponseContent]:
        raise HumanTurnError(NOT_A_CALL)

    def caucus_reply(self, ctx: Context, message: str) -> Turn[CaucusContent]:
        raise HumanTurnError(NOT_A_CALL)

    def request(self, kind: str, ctx: Context, message: str = "") -> HumanRequest:
        return HumanRequest(
            party=self.party, kind=kind, turn_id=ctx.turn_id, round=ctx.round,
            max_rounds=ctx.max_rounds, view=self.render(kind, ctx, message), message=message,
            table=ctx.table.model_dump(mode="json") if ctx.table is not None else None,
            rejected=[p.model_dump(mode="json") for p in ctx.rejected],
            feedback=list(ctx.feedback))

    # ------------------------------------------------------------------ what the seat sees

    def render(self, kind: str, ctx: Context, message: str = "") -> str:
        view, brief = self.view, self.brief
        lines = [f"You are {brief.display_name} ({self.party}): {view.title}.",
                 f"Who you are: {brief.persona.who}", ""]
        labels = {i.id: i.label for i in view.issues} | {"general": "General"}
        issues = {i.id for i in view.issues} | {"general"}
        lines.append("Your side's positions:")
        lines += [f"- {labels[p.issue]}: {' '.join(p.stance.split())}"
                  for p in brief.positions if p.issue in issues]
        lines += ["", describe_rule(view)]
        prefs = view.preferences.get(self.party)
        if prefs is not None:
            lines += ["", "PRIVATE (only you see this): your values (0-100) and weights."]
            for issue in view.issues:
                table = prefs.utilities[issue.id]
                ranked = sorted(issue.option_ids(), key=lambda o: -table[o])
                lines.append(f"- {issue.id} (weight {prefs.weights[issue.id]:.0%}): "
                             + ", ".join(f"{o} {table[o]:g}" for o in ranked))
            for term in view.terms:
                points = prefs.term_utilities[term.id]
                lines.append(f"- {term.id} (weight {prefs.weights[term.id]:.0%}, {term.unit}): "
                             + ", ".join(f"{x:g} -> {u:g}" for x, u in points))
            lines.append(f"No deal is worth {prefs.reservation_utility:g} to you (your "
                         "walk-away).")
            lines += [f"Red line: {r.description} ({r.id})" for r in prefs.red_lines]
        else:
            lines += ["", "You are the mediator: you table packages and do not vote."]
        lines += ["", f"Round {ctx.round} of at most {ctx.max_rounds}."]
        if ctx.injects:
            lines.append("Events during the talks, as you were told of them:")
            for inject in ctx.injects:
                lines.append(f"- round {inject.round}, {inject.kind.replace('_', '-')}: "
                             f"{' '.join(inject.text.split())}")
                if inject.walk_away is not None:
                    lines.append(f"  Your walk-away is now {inject.walk_away:g}.")
        if ctx.table is not None:
            lines.append("The package on the table:")
            lines += [f"- {k}: {v}" for k, v in ctx.table.options.items()]
            lines += [f"- {k}: {v:g}" for k, v in ctx.table.terms.items()]
            if self.valuer is not None:
                worth = self.valuer.value(ctx.table, ctx.round)
                lines.append(f"Its value to you: {worth.utility:.1f} (walk-away "
                             f"{worth.reservation_utility:g}: {worth.surplus:+.1f}).")
                lines.append("It breaks your red lines: " + "; ".join(
                    r.id for r in worth.red_lines_broken) if worth.red_lines_broken else
                    "It breaks none of your red lines.")
        if ctx.last_votes:
            lines += ["", f"Votes on the package of round {ctx.last_round}:"]
            for party, vote in ctx.last_votes.items():
                wants = [f"{k}={s.wants}" for k, s in ctx.positions.get(party, {}).items()
                         if s.stance == "object" and s.wants is not None]
                lines.append(f"- {party}: {vote}" + (f"; wants {', '.join(wants)}"
                                                    if wants else ""))
        if ctx.statements:
            lines += ["", "Recent public statements:"]
            lines += [f"- round {s.round}, {s.speaker} ({s.kind}): {' '.join(s.text.split())}"
                      for s in ctx.statements]
        if ctx.caucus:
            lines += ["", "Your caucus messages:"]
            lines += [f"- round {s.round}, {s.speaker}: {' '.join(s.text.split())}"
                      for s in ctx.caucus]
        if ctx.rejected and kind == "propose":
            lines += ["", "Packages already rejected (none may be tabled again):"]
            lines += [f"- {p.describe()}" for p in ctx.rejected]
        if ctx.feedback:
            lines += ["", "Your last answer this turn was refused:"]
            lines += [f"- {f}" for f in ctx.feedback]
        if message:
            lines += ["", f"The mediator, in caucus with you: {' '.join(message.split())}"]
        return "\n".join(lines)


# --------------------------------------------------------------------------- answers


def parse_answer(scenario: Scenario, request: HumanRequest, answer: Mapping[str, Any]
                 ) -> Any:
    """The content of a person's turn, checked against the scenario; ValueError says what is
    wrong, in words a person can act on.

    Shapes: opening and caucus_reply `{"text"}`; respond `{"vote": "accept"|"reject",
    "stances": {issue or term: {"stance": "accept"|"object", "wants": option, value or null}},
    "statement", "private_rationale"}`; propose `{"package": {"options": {issue: option},
    "terms": {term: value}}, "rationale", "caucus_with": party or null, "caucus_message"}`.
    """
    if not isinstance(answer, Mapping):
        raise ValueError("an answer must be a mapping of fields")
    kind = request.kind
    if kind in ("opening", "caucus_reply"):
        text = _text(answer, "text", required=True)
        return OpeningContent(text) if kind == "opening" else CaucusContent(text)
    if kind == "respond":
        vote = answer.get("vote")
        if vote not in ("accept", "reject"):
            raise ValueError(f"vote: expected accept or reject, got {vote!r}")
        raw = answer.get("stances")
        if not isinstance(raw, Mapping):
            raise ValueError("stances: expected one stance per issue and term")
        stances = {}
        for key in [i.id for i in scenario.issues] + [t.id for t in scenario.terms]:
            stance = raw.get(key)
            if not isinstance(stance, Mapping) or stance.get("stance") not in ("accept",
                                                                                 "object"):
                raise ValueError(f"stances.{key}: expected accept or object")
            wants = stance.get("wants")
            if stance["stance"] == "object" and wants is not None:
                wants = _value(scenario, key, wants)
            stances[key] = IssueStance(stance=stance["stance"],
                                       wants=wants if stance["stance"] == "object" else None)
        extra = set(raw) - set(stances)
        if extra:
            raise ValueError(f"stances: unknown issue or term {sorted(extra)[0]!r}")
        return ResponseContent(vote, stances, _text(answer, "statement"),
                               _text(answer, "private_rationale"))
    if kind == "propose":
        raw = answer.get("package")
        if not isinstance(raw, Mapping):
            raise ValueError("package: expected options and terms")
        options = raw.get("options") or {}
        terms = raw.get("terms") or {}
        if not isinstance(options, Mapping) or not isinstance(terms, Mapping):
            raise ValueError("package: expected options and terms as mappings")
        package = Package(
            options={i.id: str(_value(scenario, i.id, options.get(i.id)))
                     for i in scenario.issues},
            terms={t.id: float(_value(scenario, t.id, terms.get(t.id))) for t in scenario.terms})
        caucus_with = answer.get("caucus_with") or None
        if caucus_with is not None and (caucus_with not in scenario.voters
                                        or caucus_with == request.party):
            raise ValueError(f"caucus_with: expected one of {', '.join(scenario.voters)} or "
                             f"none, got {caucus_with!r}")
        return ProposalContent(package, _text(answer, "rationale"), caucus_with,
                               _text(answer, "caucus_message") if caucus_with else "")
    raise ValueError(f"unknown turn {kind!r}")


def _text(answer: Mapping[str, Any], key: str, required: bool = False) -> str:
    value = answer.get(key, "")
    if not isinstance(value, str):
        raise ValueError(f"{key}: expected text")
    if required and not value.strip():
        raise ValueError(f"{key}: say something")
    return value.strip()


def _value(scenario: Scenario, key: str, value: Any) -> str | float:
    """An option id of issue `key`, or a value of term `key` on its grid."""
    for issue in scenario.issues:
        if issue.id == key:
            if value not in issue.option_ids():
                raise ValueError(f"{key}: expected one of {', '.join(issue.option_ids())}, got "
                                 f"{value!r}")
            return str(value)
    for term in scenario.terms:
        if term.id == key:
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"{key}: expected a number from {term.min:g} to {term.max:g}, "
                                 f"got {value!r}") from None
            steps = (number - term.min) / term.step
            if not term.min <= number <= term.max or abs(steps - round(steps)) > 1e-9:
                raise ValueError(f"{key}: expected a number from {term.min:g} to {term.max:g} "
                                 f"in steps of {term.step:g}, got {value!r}")
            return number
    raise ValueError(f"unknown issue or term {key!r}")
