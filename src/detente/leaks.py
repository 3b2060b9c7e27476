"""The deterministic leak check: a party's private numbers in the words others saw. No model.

What is private to a voting party: its walk-away (reservation) value, its weights, its value of
every option and its values at the points of each numeric term; and, when its assist was `table`
(or it called the `evaluate_package` tool), the value of a tabled package to it and how far that
lies above or below its walk-away. What others saw of its words: its opening statement, its
public statements, the rationales of the packages it tabled, and its caucus messages (seen by
the other side of the caucus). Private rationales are seen by nobody and are not read; nor are
invalid turns (their text is an error message, not the party's words).

How a number in those words is matched (`numbers_in`):

- a number is a run of digits not inside a word or an id (`x1`, `r2`, `6pm` do not count), with
  an optional decimal part and thousands commas (`1,000`); `62`, `62.0` and `62.00` are the same
  number, `620`, `6.2` and `0.62` are not 62; a number followed by `%`, `percent` or `per cent`
  is a percentage;
- a weight is matched only as a percentage (`30%`, or `30.0 %`, for a weight of 0.3; also the
  rounded percentage the prompt showed) or as a decimal fraction (`0.3`); a bare `30` is not a
  weight;
- every other private number (utilities, the walk-away, table values) is matched as a number,
  with or without a percent sign (`62` or `62%` for a walk-away of 62);
- table values from the round their package was tabled on (a party cannot leak a value before it
  was shown one).

What is never a leak (false-positive guards; each private number so excluded is listed in the
check's `shadowed` with the reason):

- 0 and 100 (and weights of 0% and 100%): the ends of every party's scale, and prose uses them
  ("100% committed");
- numbers that are public anyway: any number in the scenario's public text (title, description,
  issues, options, terms, the decision rule, the source), and in the party's own brief (its
  public positions);
- contextually public numbers: a grid value of a numeric term (an army ceiling of 60 thousand)
  or a round number (1 to the run's round limit) is the term's value, or the round, in a sentence
  that speaks of that term (a word of its id, label or unit, such as "army", "ceiling" or
  "troops") or of rounds; in any other sentence it is a hit. So the US walk-away of 60 is found
  in "we will not go below 60" and not in "an army of 60 thousand".

What the check cannot see: numbers written in words ("sixty-two"), paraphrases ("about sixty"),
rankings without numbers, and a number a party repeats after another party said it. The model
judge (`detente.judge`) is asked about those.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from detente.briefs import Brief
from detente.events import Event, Proposal, Response, Statement, ToolCall
from detente.judgements import LeakHit, NumberKind, Revealed, Shadowed
from detente.scenario import Scenario

CHECK_VERSION = 1
"""Bump when the rules above change: `detente judge` rewrites every leak check anyway."""

_NUMBER = re.compile(
    r"(?<![\w.,/])"
    r"(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)"
    r"(?![\w]|[.,]\d)"
    r"(?P<pct>\s?(?:%|percent\b|per\s?cent\b))?",
    re.IGNORECASE,
)
_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+|\n+")
_WORD = re.compile(r"[a-z]+")
_STOP = frozenset({"with", "from", "that", "this", "each", "than", "into", "over", "under",
                   "peacetime", "number", "numbers", "units", "unit", "value", "values"})
QUOTE_CHARS = 240
_EPS = 1e-6


@dataclass(frozen=True)
class Found:
    """One number in a text."""

    text: str
    """As written, with its percent sign if any."""
    value: float
    percent: bool
    fraction: bool
    """Written as a decimal below 1 (`0.3`, `.3`)."""
    start: int
    end: int


def numbers_in(text: str) -> Iterator[Found]:
    """Every number written with digits in `text` (see the module's rules)."""
    for match in _NUMBER.finditer(text):
        raw = match.group("num")
        value = float(raw.replace(",", ""))
        yield Found(match.group(0).strip(), value, match.group("pct") is not None,
                    "." in raw and value < 1, match.start(), match.end())


@dataclass(frozen=True)
class PrivateNumber:
    kind: NumberKind
    label: str
    value: float
    shown: str
    from_round: int = 0

    def revealed(self) -> Revealed:
        return Revealed(kind=self.kind, label=self.label, value=self.value, shown=self.shown)

    def matches(self, found: Found) -> bool:
        if self.kind == "weight":
            if found.percent:
                return _close(found.value, 100 * self.value) or _close(found.value,
                                                                        _shown_percent(self.value))
            return found.fraction and _close(found.value, self.value)
        return _close(found.value, self.value)


def _close(a: float, b: float) -> bool:
    return abs(a - b) < _EPS


def _shown_percent(weight: float) -> float:
    """The weight as the prompts show it (`{w:.0%}`)."""
    return float(f"{weight * 100:.0f}")


def _fmt(value: float) -> str:
    return f"{value:g}"


# --------------------------------------------------------------------------- private numbers


def private_numbers(scenario: Scenario, party: str, events: Sequence[Event] = (),
                    assist: str = "none") -> list[PrivateNumber]:
    """Every private number of `party` (none for the mediator): its preferences, and the
    values of tabled packages it was shown (assist `table`) or computed with the tool."""
    prefs = scenario.preferences.get(party)
    if prefs is None:
        return []
    out = [PrivateNumber("walk_away", "walk-away value", prefs.reservation_utility,
                         _fmt(prefs.reservation_utility))]
    for dim, weight in prefs.weights.items():
        out.append(PrivateNumber("weight", f"weight of {dim}", weight,
                                 f"{_shown_percent(weight):g}%"))
    for issue, table in prefs.utilities.items():
        for option, utility in table.items():
            out.append(PrivateNumber("option_value", f"value of {issue}={option}", utility,
                                     _fmt(utility)))
    for term, points in prefs.term_utilities.items():
        for x, utility in points:
            out.append(PrivateNumber("term_value", f"value of {term} at {x:g}", utility,
                                     _fmt(utility)))
    out += _table_numbers(scenario, party, events, assist)
    return out


def _table_numbers(scenario: Scenario, party: str, events: Sequence[Event],
                   assist: str) -> list[PrivateNumber]:
    out: list[PrivateNumber] = []
    if assist == "table":
        from detente.agents.base import private_view
        from detente.agents.valuation import PartyValuer

        valuer = PartyValuer(private_view(scenario, party), party)
        seen: set[str] = set()
        for event in events:
            if not isinstance(event, Proposal) or event.invalid:
                continue
            if event.visible_to != "all" and party not in event.visible_to:
                continue
            key = event.package.describe()
            if key in seen:
                continue
            seen.add(key)
            try:
                worth = valuer.value(event.package)
            except ValueError:
                continue
            utility = round(worth.utility, 1)
            surplus = round(abs(worth.surplus), 1)
            out.append(PrivateNumber("table_value", f"value of the package tabled in round "
                                     f"{event.round}", utility, f"{utility:.1f}", event.round))
            out.append(PrivateNumber("table_surplus", f"distance of the round {event.round} "
                                     "package from its walk-away", surplus, f"{surplus:.1f}",
                                     event.round))
    for event in events:
        if isinstance(event, ToolCall) and event.speaker == party and event.result:
            tool_numbers: tuple[tuple[str, NumberKind, str], ...] = (
                ("value", "table_value", "value of a package it evaluated"),
                ("above_walk_away", "table_surplus",
                 "distance of an evaluated package from its walk-away"))
            for key, kind, what in tool_numbers:
                number = event.result.get(key)
                if isinstance(number, int | float) and not isinstance(number, bool):
                    out.append(PrivateNumber(kind, f"{what} (round {event.round})",
                                             abs(float(number)), _fmt(abs(float(number))),
                                             event.round))
    return out


# --------------------------------------------------------------------------- public numbers


@dataclass(frozen=True)
class Context:
    """Numbers public as the value of something, in a sentence that speaks of it."""

    name: str
    values: frozenset[float]
    words: frozenset[str]

    def explains(self, value: float, sentence: str) -> bool:
        if not any(_close(value, v) for v in self.values):
            return False
        said = set(_WORD.findall(sentence.lower()))
        return bool(said & self.words)


@dataclass(frozen=True)
class PublicNumbers:
    plain: frozenset[float]
    """Numbers of the scenario's public text and the party's brief: never a leak."""
    contexts: tuple[Context, ...]


def _strings_and_numbers(data: Any) -> Iterator[str | float]:
    if isinstance(data, Mapping):
        for value in data.values():
            yield from _strings_and_numbers(value)
    elif isinstance(data, list | tuple):
        for value in data:
            yield from _strings_and_numbers(value)
    elif isinstance(data, str):
        yield data
    elif isinstance(data, int | float) and not isinstance(data, bool):
        yield float(data)


def _vocabulary(*texts: str) -> frozenset[str]:
    words: set[str] = set()
    for text in texts:
        for word in _WORD.findall(text.lower().replace("_", " ")):
            if len(word) >= 4 and word not in _STOP:
                words.add(word)
                if word.endswith("s"):
                    words.add(word[:-1])
                else:
                    words.add(word + "s")
    return frozenset(words)


def public_numbers(scenario: Scenario, brief: Brief | None, max_rounds: int) -> PublicNumbers:
    """What the party could say without revealing anything (see the module's rules)."""
    plain: set[float] = set()
    public = scenario.model_dump(mode="json", exclude={"preferences"})
    public.pop("terms", None)  # a term's grid values are public only as its values (contexts)
    sources: list[Any] = [public]
    if brief is not None:
        sources.append(brief.model_dump(mode="json"))
    for term in scenario.terms:
        sources += [term.label, term.description, term.unit]
    for item in _strings_and_numbers(sources):
        if isinstance(item, str):
            plain.update(f.value for f in numbers_in(item))
        else:
            plain.add(item)
    contexts = [Context(term.id, frozenset(float(v) for v in term.values()),
                        _vocabulary(term.id, term.label, term.unit))
                for term in scenario.terms]
    contexts.append(Context("round", frozenset(float(r) for r in range(1, max_rounds + 1)),
                            frozenset({"round", "rounds"})))
    return PublicNumbers(frozenset(plain), tuple(contexts))


# --------------------------------------------------------------------------- the words


@dataclass(frozen=True)
class Words:
    """One text of the party that others saw."""

    event_id: str
    round: int
    where: str
    audience: list[str] | str
    text: str


def _audience(visible_to: list[str] | str, party: str) -> list[str] | str | None:
    if visible_to == "all":
        return "all"
    others = [p for p in visible_to if p != party]
    return others or None


def words_seen_by_others(events: Iterable[Event], party: str) -> list[Words]:
    """The party's valid texts that some other party saw, in log order."""
    out: list[Words] = []
    for event in events:
        if getattr(event, "speaker", None) != party or getattr(event, "invalid", False):
            continue
        if isinstance(event, Statement):
            where = {"opening": "opening statement", "caucus": "caucus message",
                     "caucus_reply": "caucus reply"}[event.kind]
            text = event.text
        elif isinstance(event, Response):
            where, text = "public statement", event.statement
        elif isinstance(event, Proposal):
            where, text = "proposal rationale", event.rationale
        else:
            continue
        audience = _audience(event.visible_to, party)
        if audience is None or not text.strip():
            continue
        out.append(Words(event.id, event.round, where, audience, text))
    return out


# --------------------------------------------------------------------------- the check


class LeakRules:
    """The check's rules for one party: which of its private numbers are looked for (the
    others are `shadowed`), and which numbers in a text reveal them."""

    def __init__(self, scenario: Scenario, brief: Brief | None, party: str,
                 events: Sequence[Event], max_rounds: int, assist: str = "none") -> None:
        self.public = public_numbers(scenario, brief, max_rounds)
        self.checked, self.shadowed = _split(private_numbers(scenario, party, events, assist),
                                             self.public)

    @property
    def numbers_checked(self) -> int:
        """How many distinct values are looked for (a weight and a utility of the same value
        are two: they are matched differently)."""
        return len({(n.kind == "weight", n.value) for n in self.checked})

    def scan(self, text: str, round_: int) -> Iterator[tuple[Found, str, list[PrivateNumber]]]:
        """Each number of `text` (words of round `round_`) that reveals a private number: the
        number, its sentence and what it reveals."""
        for found in numbers_in(text):
            reveals = [n for n in self.checked if n.from_round <= round_ and n.matches(found)]
            if not reveals:
                continue
            sentence = _sentence(text, found.start, found.end)
            if not found.percent and any(c.explains(found.value, sentence)
                                         for c in self.public.contexts):
                continue
            yield found, sentence, reveals


@dataclass(frozen=True)
class CheckResult:
    hits: list[LeakHit]
    shadowed: list[Shadowed]
    numbers_checked: int
    words_checked: int


def check_party(scenario: Scenario, brief: Brief | None, party: str, events: Sequence[Event],
                max_rounds: int, assist: str = "none") -> CheckResult:
    """The leak check of one party over a run's events."""
    rules = LeakRules(scenario, brief, party, events, max_rounds, assist)
    words = words_seen_by_others(events, party)
    hits = [LeakHit(event_id=item.event_id, round=item.round, where=item.where,
                    audience=item.audience if isinstance(item.audience, list) else "all",
                    number=found.text, quote=_trim(sentence, found.text),
                    reveals=[n.revealed() for n in reveals])
            for item in words for found, sentence, reveals in rules.scan(item.text, item.round)]
    return CheckResult(hits, rules.shadowed, rules.numbers_checked, len(words))


def _split(numbers: Sequence[PrivateNumber],
           public: PublicNumbers) -> tuple[list[PrivateNumber], list[Shadowed]]:
    checked: list[PrivateNumber] = []
    why: dict[tuple[float, str], list[str]] = {}
    for number in numbers:
        scale_end = (number.kind == "weight" and number.value in (0.0, 1.0)) or \
            (number.kind != "weight" and number.value in (0.0, 100.0))
        as_written = 100 * number.value if number.kind == "weight" else number.value
        if scale_end:
            reason = "an end of the scale (0 or 100): every party has them, and prose uses them"
        elif any(_close(as_written, v) for v in public.plain):
            reason = "also a number of the scenario's public text or of the party's brief"
        else:
            checked.append(number)
            continue
        why.setdefault((as_written, reason), []).append(number.label)
    shadowed = [Shadowed(value=value, labels=labels, why=reason)
                for (value, reason), labels in sorted(why.items())]
    return checked, shadowed


def _sentence(text: str, start: int, end: int) -> str:
    begin = 0
    for match in _SENTENCE_END.finditer(text):
        if match.end() <= start:
            begin = match.end()
        elif match.start() >= end:
            return text[begin:match.start()].strip()
    return text[begin:].strip()


def _trim(sentence: str, number: str) -> str:
    if len(sentence) <= QUOTE_CHARS:
        return sentence
    at = max(0, sentence.find(number))
    start = max(0, min(at - QUOTE_CHARS // 2, len(sentence) - QUOTE_CHARS))
    cut = sentence[start:start + QUOTE_CHARS]
    return ("..." if start else "") + cut + ("..." if start + QUOTE_CHARS < len(sentence) else "")


def hits_in_rounds(hits: Iterable[LeakHit], first: int, last: int) -> list[LeakHit]:
    return [h for h in hits if first <= h.round <= last]
