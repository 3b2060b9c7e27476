"""Answer models generated from a scenario, so the grammar itself rules out malformed answers.

Every issue is one field whose type is the enum of that issue's option ids; a numeric term is an
enum of its grid values (or a bounded number on a large grid). A grammar-constrained model can
then neither repeat nor omit an issue, nor invent an option.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, create_model

from detente.scenario import NumericTerm, Package, Scenario

MAX_ENUM_VALUES = 64
"""Beyond this many grid values a term is a bounded number instead of an enum."""

STATEMENT_CHARS = 600
RATIONALE_CHARS = 500


class TextLimits(NamedTuple):
    """Longest free-text fields; a small model on a CPU spends most of a turn writing them."""

    statement: int = STATEMENT_CHARS
    rationale: int = RATIONALE_CHARS


COMPACT_LIMITS = TextLimits(statement=160, rationale=100)
"""A compact prompt's (issue 12): a 135M model's prose is no better at 240 characters."""


class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _model(name: str, fields: dict[str, Any]) -> type[BaseModel]:
    """A strict answer model; fields are built at run time, so they are typed `Any`."""
    return create_model(name, __base__=_Answer, **fields)


def _enum(values: Sequence[Any]) -> Any:
    """The type whose JSON Schema is `{"enum": values}`."""
    return Literal[tuple(values)]


def _term_type(term: NumericTerm) -> Any:
    values = term.values()
    if len(values) <= MAX_ENUM_VALUES:
        as_numbers = tuple(int(v) if float(v).is_integer() else float(v) for v in values)
        return _enum(as_numbers)
    return float


def _term_field(term: NumericTerm) -> Any:
    kind = _term_type(term)
    if kind is float:
        return (float, Field(ge=term.min, le=term.max, description=f"{term.label} ({term.unit})"))
    return (kind, Field(description=f"{term.label} ({term.unit})"))


def package_model(scenario: Scenario) -> type[BaseModel]:
    """One field per issue (its option ids) and per numeric term (its grid)."""
    fields: dict[str, Any] = {
        issue.id: (_enum(issue.option_ids()), Field(description=issue.label))
        for issue in scenario.issues
    }
    fields.update({term.id: _term_field(term) for term in scenario.terms})
    return _model("Package", fields)


def stances_model(scenario: Scenario) -> type[BaseModel]:
    """Per issue and term: accept the tabled option, or object and name the one wanted."""
    fields: dict[str, Any] = {}
    stance_type = _enum(["accept", "object"])
    for issue in scenario.issues:
        wants = (_enum(issue.option_ids()),
                 Field(description="the option you want on this issue"))
        fields[issue.id] = (_model(f"Stance_{issue.id}",
                                   {"stance": (stance_type, ...), "wants": wants}), ...)
    for term in scenario.terms:
        fields[term.id] = (_model(f"Stance_{term.id}",
                                  {"stance": (stance_type, ...), "wants": _term_field(term)}),
                           ...)
    return _model("Stances", fields)


ACCEPT = "accept"
"""A compact stance that accepts the tabled option (`compact_stances_model`)."""


def compact_stances_model(scenario: Scenario,
                          tabled: Package | None = None) -> type[BaseModel]:
    """Per issue and term, one value: `accept`, or the option (or term value) wanted instead;
    with the `tabled` package, its own options are not among those wanted instead.

    The same answer as `stances_model` in about a third of the generated tokens: a small model
    on a CPU spends most of a turn writing the keys and nesting of `{"stance": ..., "wants":
    ...}` for every issue, and copying the tabled option's long id where `accept` says the same
    (prompt `compact`, issue 12).
    """
    options = tabled.options if tabled is not None else {}
    terms = tabled.terms if tabled is not None else {}
    fields: dict[str, Any] = {}
    for issue in scenario.issues:
        others = [o for o in issue.option_ids() if o != options.get(issue.id)]
        fields[issue.id] = (_enum([ACCEPT, *others]),
                            Field(description="accept, or the option you want instead"))
    for term in scenario.terms:
        kind = _term_type(term)
        description = f"accept, or the value you want instead ({term.label}, {term.unit})"
        if kind is float:
            fields[term.id] = (_enum([ACCEPT]) | Annotated[float, Field(ge=term.min,
                                                                        le=term.max)],
                               Field(description=description))
        else:
            current = terms.get(term.id)
            others = [v for v in kind.__args__ if current is None or v != current]
            fields[term.id] = (_enum([ACCEPT, *others]), Field(description=description))
    return _model("Stances", fields)


def response_model(
    scenario: Scenario, limits: TextLimits = TextLimits(), talk: bool = True,
    compact: bool = False, tabled: Package | None = None,
) -> type[BaseModel]:
    """A voting party's answer; reasoning fields come before the vote on purpose. Without talk
    (`no_talk`): stances, estimate and vote only. `compact` asks for compact stances (against
    the `tabled` package)."""
    stances = (compact_stances_model(scenario, tabled) if compact else
               stances_model(scenario))
    if not talk:
        return _model("SilentResponse", {
            "issues": (stances, ...),
            "value_estimate": (int, Field(ge=0, le=100, description="your estimate of the "
                                          "package's value to you, 0-100")),
            "vote": (_enum(["accept", "reject"]), ...),
        })
    return _model("NegotiationResponse", {
        "statement": (str, Field(max_length=limits.statement,
                                 description="what you say publicly to all parties")),
        "private_rationale": (str, Field(max_length=limits.rationale,
                                         description="your private reasoning, seen by no one")),
        "issues": (stances, ...),
        "value_estimate": (int, Field(ge=0, le=100, description="your estimate of the "
                                      "package's value to you, 0-100")),
        "vote": (_enum(["accept", "reject"]), ...),
    })


def proposal_model(
    scenario: Scenario, limits: TextLimits = TextLimits(), talk: bool = True
) -> type[BaseModel]:
    """What a proposer tables: a full package, why, and an optional private caucus. Without
    talk: the package alone."""
    if not talk:
        return _model("SilentProposal", {"package": (package_model(scenario), ...)})
    return _model("NegotiationProposal", {
        "rationale": (str, Field(max_length=limits.statement,
                                 description="why this package, said publicly")),
        "package": (package_model(scenario), ...),
        "caucus_with": (_enum(["none", *scenario.parties]),
                        Field(description="a party to take aside privately this round, or none")),
        "caucus_message": (str, Field(max_length=limits.rationale,
                                      description="what you tell that party privately")),
    })


def opening_model(limits: TextLimits = TextLimits()) -> type[BaseModel]:
    return _model("OpeningAnswer", {
        "statement": (str, Field(max_length=limits.statement,
                                 description="your opening statement")),
    })


def caucus_model(limits: TextLimits = TextLimits()) -> type[BaseModel]:
    return _model("CaucusAnswer", {
        "reply": (str, Field(max_length=limits.rationale, description="your private reply")),
    })
