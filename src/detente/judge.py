"""`detente judge`: a model scores every party's words against a rubric; a check finds leaks.

For each finished run, and each party:

1. **The deterministic leak check** (`detente.leaks`, no model): every number in the words
   others saw that equals one of the party's private numbers. Always run, and rewritten.
2. **The judge** (unless `deterministic_only`): the party's words are cut into windows of
   consecutive rounds (at most `window_chars` characters of words each, at least one round), so
   a prompt stays within the embedded model's context. Each window is one request: the rubric,
   the party's brief (its positions, first sentence each, with the options they name), its
   private numbers and red lines, then its words, each item numbered (W1, W2, ...) and quoted
   with an unforgeable delimiter (the agents' `quote`, with a tag derived from the run's secret
   and the window), with the package on the table each round and its worth to the party. The
   answer is schema-constrained like the agents' answers: evidence quotes naming their item
   (an enum of the window's items) and criterion (an enum), at most six; contradictions (a
   public item and a private one) and leak claims, at most three each; a summary; and one
   level per criterion (an enum of the scale's levels). Every quote is then looked up in the
   party's actual words: a quote found nowhere is marked `unverified`, never trusted.

   A small model (the embedded one) copies the prompt's own lines as "quotes" and writes past
   its token limit, so it answers in the `choose` style instead: every quote is an enum of the
   window's sentences (a vote is chosen as "W3 vote: accept"), so it can only pick the party's
   own words, a leak is claimed of a whole public item (its text is the claim's quote, and
   is checked whole), and the answer is short enough that its longest form fits `max_tokens` (three
   pieces of evidence, two leak claims, one contradiction, shorter notes).

Judgements go to `judgements.jsonl` in the run folder (`detente.judgements`), every request and
raw response to `judge-prompts.jsonl` under the request hashes the judgements record. Running
the same judge again skips the windows it already judged (`force` judges them again, replacing
its lines); other judges' lines are kept.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import threading
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from detente.errors import DetenteError, InputError, Problem
from detente.events import (
    AgentSettings,
    Event,
    Proposal,
    Response,
    Statement,
    StructuredMode,
    json_line,
    utc_now,
)
from detente.judgements import (
    COUNTS,
    JUDGEMENTS_NAME,
    Contradiction,
    Evidence,
    JudgeInfo,
    Judgement,
    LeakCheck,
    LeakClaim,
    LeakHit,
    Revealed,
    RubricRef,
    VerifyStatus,
    read_judgements,
    write_judgements,
)
from detente.rubric import Criterion, Rubric, load_rubric

if TYPE_CHECKING:
    from detente.briefs import Brief
    from detente.leaks import LeakRules
    from detente.llm import Exchange, LLMClient
    from detente.runs import RunFolder
    from detente.scenario import Scenario

PROMPT_VERSION = 2
"""Bump when the judge's prompt or answer schema changes: a new judge key, judged afresh."""
JUDGE_PROMPTS_NAME = "judge-prompts.jsonl"
WINDOW_CHARS = 2000
"""Characters of a party's words per judge request (at least one round's): with the rubric,
the brief and the numbers, a baseline prompt stays under about 2,500 tokens, within the
embedded model's 4,096 with room for the answer."""
JUDGE_MAX_TOKENS = 700
"""The answer's token limit in the `choose` style (its longest answer fits)."""
QUOTE_MAX_TOKENS = 1600
"""... and in the `quote` style: six quotes with notes, three contradictions (two quotes each)
and three leak claims at their longest come to about 1,400 tokens."""
JUDGE_TEMPERATURE = 0.0
JUDGE_SEED = 0
QUOTE_MAX = 200
NOTE_MAX = 160
SUMMARY_MAX = 300
MAX_EVIDENCE = 6
MAX_FLAGS = 3
_QUOTE_PART = 480
"""Longer words are quoted in parts (the agents' `quote` cuts at 500 characters)."""
LEAK_KINDS = ("walk_away", "weights", "option_values", "package_value", "other")
AnswerStyle = Literal["quote", "choose"]
"""`quote`: the judge copies its quotes (checked afterwards); `choose`: it picks sentences."""
CHOICE_CHARS = 160
"""A sentence offered in the `choose` style is cut (at a word) to this many characters."""
CHOSEN_LIMITS = {"evidence": 3, "leaks": 2, "contradictions": 1, "note": 80, "summary": 160}
"""The `choose` style's bounds: its longest answer stays under 700 tokens."""


# --------------------------------------------------------------------------- the words


Side = Literal["public", "private", "vote"]


@dataclass(frozen=True)
class Item:
    """One thing the party wrote (or its vote), numbered for the judge."""

    ref: str
    event_id: str
    round: int
    what: str
    """"opening statement", "public statement", "private rationale", "vote", "proposal
    rationale", "caucus message" or "caucus reply"."""
    side: Side
    """public: seen by another party (for caucus words, by one); private: seen by no one."""
    audience: str
    text: str


def party_items(events: Iterable[Event], party: str) -> list[Item]:
    """The party's valid words and votes, in log order, numbered W1, W2, ..."""
    raw: list[tuple[str, int, str, Side, str, str]] = []
    for event in events:
        if getattr(event, "speaker", None) != party or getattr(event, "invalid", False):
            continue
        if isinstance(event, Statement):
            what = {"opening": "opening statement", "caucus": "caucus message",
                    "caucus_reply": "caucus reply"}[event.kind]
            raw.append((event.id, event.round, what, "public", _audience(event.visible_to,
                                                                          party), event.text))
        elif isinstance(event, Proposal):
            raw.append((event.id, event.round, "proposal rationale", "public",
                        _audience(event.visible_to, party), event.rationale))
        elif isinstance(event, Response):
            audience = _audience(event.visible_to, party)
            raw.append((event.id, event.round, "public statement", "public", audience,
                        event.statement))
            raw.append((event.id, event.round, "private rationale", "private", "no one",
                        event.private_rationale))
            raw.append((event.id, event.round, "vote", "vote", audience, event.vote))
    items: list[Item] = []
    for event_id, round_, what, side, audience, text in raw:
        if side != "vote" and not text.strip():
            continue
        if side == "public" and audience == "no one":
            side = "private"
        items.append(Item(f"W{len(items) + 1}", event_id, round_, what, side, audience, text))
    return items


def _audience(visible_to: list[str] | str, party: str) -> str:
    if visible_to == "all":
        return "all"
    others = [p for p in visible_to if p != party]
    return ", ".join(others) if others else "no one"


ITEM_OVERHEAD = 80
"""Characters a quoted item costs beyond its text (its delimiters and label)."""


def windows(items: Sequence[Item], budget: int) -> list[list[Item]]:
    """Consecutive rounds packed while their words (and `ITEM_OVERHEAD` per item) fit `budget`
    characters (a round that does not fit alone is a window of its own)."""
    by_round: dict[int, list[Item]] = {}
    for item in items:
        by_round.setdefault(item.round, []).append(item)
    out: list[list[Item]] = []
    current: list[Item] = []
    size = 0
    for round_ in sorted(by_round):
        group = by_round[round_]
        chars = sum(len(i.text) + ITEM_OVERHEAD for i in group)
        if current and size + chars > budget:
            out.append(current)
            current, size = [], 0
        current = current + group
        size += chars
    if current:
        out.append(current)
    return out


# --------------------------------------------------------------------------- verification


_TRANSLATE = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"',
                            "\u2013": "-", "\u2014": "-", "\u00a0": " "})
_ELLIPSIS = re.compile(r"\s*(?:\.\.\.|\u2026)\s*")
_EDGE = " \"'`.,;:!?-()[]"


def _norm(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).translate(_TRANSLATE).casefold()
    return " ".join(text.split())


def _fragments(quote: str) -> list[str]:
    parts = _ELLIPSIS.split(_norm(quote))
    return [p.strip(_EDGE) for p in parts if p.strip(_EDGE)]


def too_short(quote: str) -> bool:
    """Fewer than 3 words and 12 characters: it would be found almost anywhere."""
    joined = " ".join(_fragments(quote))
    return len(joined.split()) < 3 and len(joined) < 12


def occurs(quote: str, text: str) -> bool:
    """`quote` is in `text`, ignoring case, spacing, curly quotes and edge punctuation; an
    ellipsis in the quote skips words (its parts must appear in order)."""
    fragments = _fragments(quote)
    if not fragments:
        return False
    haystack = _norm(text)
    at = 0
    for fragment in fragments:
        found = haystack.find(fragment, at)
        if found < 0:
            return False
        at = found + len(fragment)
    return True


def verify(quote: str, ref: str, items: Sequence[Item]) -> tuple[VerifyStatus, str | None]:
    """Where `quote` is in the party's words: in item `ref`, in another item, or nowhere."""
    named = next((i for i in items if i.ref == ref), None)
    if named is not None and named.side == "vote":
        words = set(re.findall(r"[a-z]+", _norm(quote)))
        return ("verified" if named.text in words else "unverified"), None
    if too_short(quote):
        return "too_short", None
    if named is not None and occurs(quote, named.text):
        return "verified", None
    for item in items:
        if item.side != "vote" and item is not named and occurs(quote, item.text):
            return "elsewhere", item.ref
    return "unverified", None


# --------------------------------------------------------------------------- choices


_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+|\n+")


def _cut(sentence: str, limit: int) -> str:
    if len(sentence) <= limit:
        return sentence
    head = sentence[:limit]
    space = head.rfind(" ")
    return (head[:space] if space > limit // 2 else head).rstrip(" ,;:")


@dataclass(frozen=True)
class Choices:
    """The sentences (and votes) a `choose`-style judge picks its quotes from: choice to the
    item it is in and the words quoted."""

    public: dict[str, tuple[str, str]]
    private: dict[str, tuple[str, str]]
    """Private rationales' sentences and the votes ("W3 vote: accept")."""
    said: dict[str, str]
    """The public items (seen by another party) with words: ref to their whole text. A leak is
    claimed of an item, and checked on all of it."""

    @property
    def every(self) -> dict[str, tuple[str, str]]:
        return {**self.public, **self.private}


def choices(window: Sequence[Item]) -> Choices:
    """The window's sentences of three words or more (cut to `CHOICE_CHARS`), each once (the
    first item that has it), and its votes."""
    public: dict[str, tuple[str, str]] = {}
    private: dict[str, tuple[str, str]] = {}
    said = {i.ref: i.text for i in window if i.side == "public" and i.text.strip()}
    for item in window:
        if item.side == "vote":
            private[f"{item.ref} vote: {item.text}"] = (item.ref, item.text)
            continue
        side = public if item.side == "public" else private
        for raw in _SENTENCE_END.split(item.text):
            sentence = _cut(" ".join(raw.split()), CHOICE_CHARS)
            if too_short(sentence) or sentence in public or sentence in private:
                continue
            side[sentence] = (item.ref, sentence)
    return Choices(public, private, said)


# --------------------------------------------------------------------------- the answer


class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _enum(values: Sequence[Any]) -> Any:
    return Literal[tuple(values)]


def answer_model(criteria: Sequence[Criterion], window: Sequence[Item],
                 style: AnswerStyle = "quote") -> type[BaseModel]:
    """The judge's answer for one window: every choice an enum, every list and text bounded,
    evidence before the verdict."""
    if style == "choose":
        offered = choices(window)
        if offered.every:
            return _chosen_model(criteria, offered)
    refs = [i.ref for i in window]
    public = [i.ref for i in window if i.side == "public"]
    private = [i.ref for i in window if i.side in ("private", "vote")]
    reports = {c.id for c in criteria}
    evidence = create_model(
        "Evidence", __base__=_Answer,
        criterion=(_enum([c.id for c in criteria]), ...),
        item=(_enum(refs), Field(description="the item (W1, W2, ...) the quote is from")),
        quote=(str, Field(max_length=QUOTE_MAX, description="words copied exactly from it")),
        note=(str, Field(max_length=NOTE_MAX, description="what the quote shows")))
    fields: dict[str, Any] = {
        "evidence": (list[evidence], Field(min_length=1, max_length=MAX_EVIDENCE)),
    }
    if "consistency" in reports and public and private:
        contradiction = create_model(
            "Contradiction", __base__=_Answer,
            public_item=(_enum(public), ...),
            public_quote=(str, Field(max_length=QUOTE_MAX)),
            private_item=(_enum(private), Field(description="a private rationale or a vote")),
            private_quote=(str, Field(max_length=QUOTE_MAX)),
            explanation=(str, Field(max_length=NOTE_MAX)))
        fields["contradictions"] = (list[contradiction], Field(max_length=MAX_FLAGS))
    if "leakage" in reports and public:
        leak = create_model(
            "Leak", __base__=_Answer,
            item=(_enum(public), ...),
            quote=(str, Field(max_length=QUOTE_MAX)),
            reveals=(_enum(LEAK_KINDS), ...))
        fields["leaks"] = (list[leak], Field(max_length=MAX_FLAGS))
    fields["summary"] = (str, Field(max_length=SUMMARY_MAX, description="the verdict in "
                                    "two sentences"))
    levels: dict[str, Any] = {c.id: (_enum(sorted(c.scale)), Field(description=c.label))
                              for c in criteria}
    scores = create_model("Scores", __base__=_Answer, **levels)
    fields["scores"] = (scores, ...)
    return create_model("Judgement", __base__=_Answer, **fields)


def _chosen_model(criteria: Sequence[Criterion], offered: Choices) -> type[BaseModel]:
    """`answer_model` in the `choose` style: quotes are sentences picked from the window."""
    limit = CHOSEN_LIMITS
    reports = {c.id for c in criteria}
    evidence = create_model(
        "Evidence", __base__=_Answer,
        criterion=(_enum([c.id for c in criteria]), ...),
        quote=(_enum(list(offered.every)), Field(description="a sentence of the party's")),
        note=(str, Field(max_length=limit["note"], description="what it shows")))
    fields: dict[str, Any] = {
        "evidence": (list[evidence], Field(min_length=1, max_length=limit["evidence"])),
    }
    if "consistency" in reports and offered.public and offered.private:
        contradiction = create_model(
            "Contradiction", __base__=_Answer,
            public_quote=(_enum(list(offered.public)), ...),
            private_quote=(_enum(list(offered.private)),
                           Field(description="a private rationale's sentence or a vote")),
            explanation=(str, Field(max_length=limit["note"])))
        fields["contradictions"] = (list[contradiction],
                                    Field(max_length=limit["contradictions"]))
    if "leakage" in reports and offered.said:
        leak = create_model(
            "Leak", __base__=_Answer,
            item=(_enum(list(offered.said)), Field(description="a public item")),
            reveals=(_enum(LEAK_KINDS), ...))
        fields["leaks"] = (list[leak], Field(max_length=limit["leaks"]))
    fields["summary"] = (str, Field(max_length=limit["summary"], description="the verdict"))
    levels: dict[str, Any] = {c.id: (_enum(sorted(c.scale)), Field(description=c.label))
                              for c in criteria}
    scores = create_model("Scores", __base__=_Answer, **levels)
    fields["scores"] = (scores, ...)
    return create_model("Judgement", __base__=_Answer, **fields)


def unchoose(answer: Mapping[str, Any], offered: Choices) -> dict[str, Any]:
    """A `choose`-style answer in the `quote` style's shape: each choice its item and words."""
    every = offered.every
    out = dict(answer)
    out["evidence"] = [{"criterion": e["criterion"], "item": every[e["quote"]][0],
                        "quote": every[e["quote"]][1], "note": e["note"]}
                       for e in answer["evidence"]]
    out["contradictions"] = [
        {"public_item": every[c["public_quote"]][0], "public_quote": every[c["public_quote"]][1],
         "private_item": every[c["private_quote"]][0],
         "private_quote": every[c["private_quote"]][1], "explanation": c["explanation"]}
        for c in answer.get("contradictions", [])]
    claimed = list(dict.fromkeys((c["item"], c["reveals"]) for c in answer.get("leaks", [])))
    out["leaks"] = [{"item": item, "quote": offered.said[item], "reveals": reveals}
                    for item, reveals in claimed]
    return out


# --------------------------------------------------------------------------- the prompt


@dataclass(frozen=True)
class PartyFacts:
    """What the judge is told of a party besides its words, and what its quotes are checked
    against."""

    run_id: str
    quote_key: str
    party: str
    brief: Brief
    scenario: Scenario
    voter: bool
    tables: dict[int, str]
    """Round to a line on the package tabled that round (and its worth to the party)."""
    items: list[Item]
    """All the party's words in the run (quotes are looked for in every one)."""
    rules: LeakRules | None
    """The leak check's rules for the party (None: no private numbers)."""


def quote_tag(quote_key: str, party: str, window: int, first: int, last: int) -> str:
    """The delimiter tag of one judge prompt, from the run's secret: no party ever saw it."""
    key = (quote_key or "detente").encode()
    message = f"judge|{party}|{window}|{first}-{last}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()[:10]


def _first_sentence(text: str) -> str:
    head, dot, _ = " ".join(text.split()).partition(". ")
    return head + ("." if dot else "")


def system_prompt(rubric: Rubric, criteria: Sequence[Criterion]) -> str:
    from detente.agents.llm_agent import QUOTING

    lines = [" ".join(rubric.instructions.split()), "",
             f"Rubric {rubric.id}, version {rubric.version}. The criteria, each scored on its "
             "scale (higher is better):"]
    for c in criteria:
        lines.append(f"- {c.id} ({c.label}): {' '.join(c.question.split())}")
        lines += [f"  {level}: {text}" for level, text in c.scale.items()]
    lines += ["", QUOTING]
    return "\n".join(lines)


def _numbers_lines(facts: PartyFacts) -> list[str]:
    prefs = facts.scenario.preferences[facts.party]
    lines = [f"Its walk-away value (what no deal is worth to it, 0-100): "
             f"{prefs.reservation_utility:g}."]
    for issue in facts.scenario.issues:
        table = prefs.utilities[issue.id]
        ranked = sorted(issue.option_ids(), key=lambda o: -table[o])
        lines.append(f"- {issue.id} (weight {prefs.weights[issue.id]:.0%}): "
                     + ", ".join(f"{o}={table[o]:g}" for o in ranked))
    for term in facts.scenario.terms:
        points = prefs.term_utilities[term.id]
        lines.append(f"- {term.id} (weight {prefs.weights[term.id]:.0%}, {term.unit}): "
                     + ", ".join(f"{x:g}->{u:g}" for x, u in points))
    if prefs.red_lines:
        lines.append("Its red lines: " + "; ".join(r.description for r in prefs.red_lines))
    return lines


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def _positions(facts: PartyFacts) -> list[str]:
    """One line per issue: its first position's first sentence and every option the brief's
    positions on it name."""
    from detente.agents.llm_agent import on_the_table

    by_issue: dict[str, list[Any]] = {}
    for pos in on_the_table(facts.scenario, facts.brief):
        by_issue.setdefault(pos.issue, []).append(pos)
    lines = []
    for issue, positions in by_issue.items():
        links = []
        for name in ("prefers", "accepts", "rejects"):
            ids = list(dict.fromkeys(o for p in positions for o in getattr(p, name)))
            if ids:
                links.append(f"{name} {', '.join(ids)}")
        text = _clip(_first_sentence(positions[0].stance), POSITION_CHARS)
        lines.append(f"- {issue}: {text}" + (f" ({'; '.join(links)})" if links else ""))
    return lines


POSITION_CHARS = 140
"""Characters of a position's first sentence in the judge's prompt."""


def user_prompt(facts: PartyFacts, window: Sequence[Item], tag: str, index: int,
                count: int, style: AnswerStyle = "quote") -> str:
    from detente.agents.base import Line
    from detente.agents.llm_agent import quote

    brief = facts.brief
    first, last = window[0].round, window[-1].round
    role = "a voting party" if facts.voter else "the mediator (it tables packages, never votes)"
    lines = [f"The party: {brief.display_name} ({facts.party}), {role}.",
             f"Its style: {_clip(_first_sentence(brief.persona.style), POSITION_CHARS)}",
             "Its brief's positions (what it was told to argue):", *_positions(facts)]
    if facts.voter:
        lines += ["", "Its PRIVATE numbers (it was told never to reveal them) and red lines:"]
        lines += _numbers_lines(facts)
    span = f"round {first}" if first == last else f"rounds {first} to {last}"
    lines += ["", f"Its words in {span} (part {index} of {count} of the run), each item quoted:"]
    shown: set[int] = set()
    for item in window:
        if item.round not in shown:
            shown.add(item.round)
            if item.round in facts.tables:
                lines.append(facts.tables[item.round])
        if item.side == "vote":
            lines.append(f"{item.ref} round {item.round}, vote: {item.text}")
            continue
        seen = "seen by no one else" if item.side == "private" else f"seen by {item.audience}"
        parts = [item.text[k:k + _QUOTE_PART] for k in range(0, len(item.text), _QUOTE_PART)]
        for k, part in enumerate(parts, start=1):
            label = f"{item.ref} {item.what} ({seen})"
            if len(parts) > 1:
                label += f", part {k} of {len(parts)}"
            lines.append(quote(Line(item.round, facts.party, label, part), tag))
    refs = [i.ref for i in window]
    lines += ["", f"Judge {facts.party}'s words above ({refs[0]} to {refs[-1]}) by the rubric."]
    if style == "choose" and choices(window).every:
        lines.append(f"Give evidence: sentences of the party's words ({refs[0]} to "
                     f"{refs[-1]}), each with its criterion.")
        if facts.voter:
            lines.append("List a public sentence its private rationale or its vote "
                         "contradicts, if any, and the public items that reveal a private "
                         "number above (none if none does).")
    else:
        lines.append("Give evidence: quotes copied exactly from the items, each with its item "
                     "and criterion.")
        if facts.voter:
            lines.append("List each public claim its private rationale or its vote "
                         "contradicts (both quotes), and each public item that reveals a "
                         "private number.")
    lines.append("Then summarize, and give each criterion its level.")
    return "\n".join(lines)


def table_lines(events: Sequence[Event], scenario: Scenario, party: str,
                voter: bool) -> dict[int, str]:
    """Per round, what was tabled: for the mediator the package itself, for a voting party its
    worth to the party and the red lines it breaks (the options would crowd a small model's
    context)."""
    valuer = None
    if voter:
        from detente.agents.base import private_view
        from detente.agents.valuation import PartyValuer

        valuer = PartyValuer(private_view(scenario, party), party)
    out: dict[int, str] = {}
    previous = ""
    for event in events:
        if not isinstance(event, Proposal) or event.round in out:
            continue
        if event.visible_to != "all" and party not in event.visible_to:
            continue
        who = "it" if event.speaker == party else event.speaker
        described = event.package.describe()
        same = described == previous
        previous = described
        if valuer is None:
            line = f"Round {event.round}: {who} tabled {'the same package' if same else described}"
        else:
            line = f"Round {event.round}: {who} tabled {'the same ' if same else 'a '}package"
            try:
                worth = valuer.value(event.package)
            except ValueError:
                worth = None
            if worth is not None:
                broken = ", ".join(r.id for r in worth.red_lines_broken) or "none"
                line += (f" worth {worth.utility:.1f} to {party} (walk-away "
                         f"{worth.reservation_utility:g}), breaking its red lines: {broken}")
        out[event.round] = line + "."
    return out


# --------------------------------------------------------------------------- settings


class JudgeSettings(BaseModel):
    """How the judge model is called."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    base_url: str | None = None
    local_model: str | None = None
    temperature: float = Field(default=JUDGE_TEMPERATURE, ge=0.0, le=2.0)
    seed: int | None = JUDGE_SEED
    max_tokens: int | None = Field(default=JUDGE_MAX_TOKENS, ge=1)
    structured_mode: StructuredMode = "json_schema"
    timeout: float | None = None
    max_retries: int | None = None
    window_chars: int = Field(default=WINDOW_CHARS, ge=200)
    answers: AnswerStyle = "quote"

    def key(self, rubric: Rubric) -> str:
        """What makes two judges the same: everything that shapes the answers, not the
        endpoint's address (the embedded server's port changes every time)."""
        identity = {"model": self.model,
                    "local_model": Path(self.local_model).name if self.local_model else None,
                    "temperature": self.temperature, "seed": self.seed,
                    "max_tokens": self.max_tokens, "structured_mode": self.structured_mode,
                    "window_chars": self.window_chars, "answers": self.answers,
                    "rubric": rubric.content_hash,
                    "prompt_version": PROMPT_VERSION}
        canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def info(self, rubric: Rubric) -> JudgeInfo:
        from urllib.parse import urlsplit

        host = urlsplit(self.base_url).netloc.rpartition("@")[2] if self.base_url else None
        return JudgeInfo(key=self.key(rubric), model=self.model, endpoint=host or None,
                         local_model=Path(self.local_model).name if self.local_model else None,
                         temperature=self.temperature, seed=self.seed,
                         max_tokens=self.max_tokens, structured_mode=self.structured_mode,
                         window_chars=self.window_chars, answers=self.answers,
                         prompt_version=PROMPT_VERSION)

    def agent_settings(self) -> AgentSettings:
        return AgentSettings(kind="llm", model=self.model, base_url=self.base_url,
                             temperature=self.temperature, seed=self.seed,
                             max_tokens=self.max_tokens, structured_mode=self.structured_mode,
                             timeout=self.timeout, max_retries=self.max_retries,
                             local_model=self.local_model)

    def client(self) -> LLMClient:
        from detente.agents import endpoint_config
        from detente.llm import LLMClient

        config = endpoint_config(self.agent_settings())
        return LLMClient(config.model_copy(update={"temperature": self.temperature}))


# --------------------------------------------------------------------------- one run


@dataclass
class RunJudged:
    """What `judge_run` did to one run."""

    path: Path
    run_id: str
    leak_checks: list[LeakCheck]
    judgements: list[Judgement] = field(default_factory=list)
    """This judge's judgements of the run (kept from before and new), in file order."""
    written: int = 0
    """Judgements made now."""
    skipped: int = 0
    """Windows this judge had already judged (kept)."""

    @property
    def file(self) -> Path:
        return self.path / JUDGEMENTS_NAME


class _PromptLog:
    """Append-only `judge-prompts.jsonl`: one line per HTTP exchange of the judge."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()

    def write(self, label: str, key: str, exchanges: Sequence[Exchange]) -> None:
        if self.path is None or not exchanges:
            return
        lines = [json_line(json.dumps({
            "judgement": label, "judge": key, "exchange": k, "request_hash": x.request_hash,
            "time": utc_now(), "latency": round(x.latency_s, 3), "request": x.request,
            "response": x.response, "error": x.error}, ensure_ascii=False))
            for k, x in enumerate(exchanges, start=1)]
        from detente.files import DiskError

        try:
            with self._lock, self.path.open("a", encoding="utf-8") as handle:
                handle.write("\n".join(lines) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as exc:
            raise DiskError(self.path, exc) from None


def leak_checks(run: RunFolder) -> list[LeakCheck]:
    """The deterministic leak check of every voting party of a run."""
    from detente.leaks import CHECK_VERSION, check_party

    scenario = run.scenario
    header = run.header
    out = []
    for party in scenario.parties:
        if party not in scenario.preferences:
            continue
        settings = header.agents.get(party)
        assist = settings.effective_assist() if settings is not None and \
            settings.kind == "llm" else "none"
        found = check_party(scenario, run.bundle.briefs.get(party), party, run.events,
                            header.max_rounds, assist)
        out.append(LeakCheck(run_id=header.run_id, party=party, check_version=CHECK_VERSION,
                             numbers_checked=found.numbers_checked,
                             words_checked=found.words_checked, hits=found.hits,
                             shadowed=found.shadowed, time=utc_now()))
    return out


def judge_run(
    run: RunFolder,
    rubric: Rubric,
    rubric_path: Path,
    settings: JudgeSettings | None,
    *,
    parties: Sequence[str] | None = None,
    rounds: tuple[int, int] | None = None,
    force: bool = False,
    log_prompts: bool = True,
    notice: Callable[[str], None] | None = None,
    client: LLMClient | None = None,
) -> RunJudged:
    """Judge one finished run (see the module's docstring); `settings` None: the leak check
    only. `rounds` (first, last): the model judges only the words of those rounds (openings
    are round 0; the leak check always reads the whole run). Writes `judgements.jsonl` after
    the leak check and after every judgement."""
    from detente.files import RunLock

    say = notice or (lambda text: None)
    run.read()
    header = run.header
    scenario = run.scenario
    unknown = [p for p in parties or [] if p not in scenario.parties]
    if unknown:
        raise InputError("--party", [Problem(", ".join(unknown), "not a party of run "
                                             f"{run.path} (its parties: "
                                             f"{', '.join(scenario.parties)})")])
    chosen = list(parties) if parties else list(scenario.parties)
    path = run.path / JUDGEMENTS_NAME
    with RunLock(run.path):
        records = read_judgements(path)
        checks = leak_checks(run)
        kept: list[Judgement] = [r for r in records if isinstance(r, Judgement)]
        done = RunJudged(run.path, header.run_id, checks)
        write_judgements(path, [*checks, *kept])
        if settings is None:
            return done
        info = settings.info(rubric)
        ref = RubricRef(id=rubric.id, version=rubric.version, hash=rubric.content_hash,
                        path=_shown_path(rubric_path))
        log = _PromptLog(run.path / JUDGE_PROMPTS_NAME if log_prompts else None)
        hits = {c.party: c.hits for c in checks}
        owned = client is None
        client = client or settings.client()
        try:
            for party in chosen:
                facts = _facts(run, party)
                criteria = rubric.for_party(facts.voter)
                shown = [i for i in facts.items
                         if rounds is None or rounds[0] <= i.round <= rounds[1]]
                parts = windows(shown, settings.window_chars)
                for index, window in enumerate(parts, start=1):
                    first, last = window[0].round, window[-1].round
                    old = [r for r in kept if r.judge.key == info.key and r.party == party
                           and r.rounds == (first, last) and r.windows == len(parts)]
                    if old and not force:
                        done.skipped += 1
                        continue
                    say(f"{run.path.name}: {party}, {_span(first, last)} "
                        f"({index}/{len(parts)})")
                    judgement = _judge_window(client, facts, rubric, criteria, window, index,
                                              len(parts), ref, info, hits.get(party, []), log,
                                              settings.answers)
                    kept = [r for r in kept if r not in old] + [judgement]
                    write_judgements(path, [*checks, *kept])
                    done.written += 1
        finally:
            if owned:
                client.close()
        done.judgements = [r for r in kept if r.judge.key == info.key]
        return done


def _span(first: int, last: int) -> str:
    return f"round {first}" if first == last else f"rounds {first}-{last}"


def _shown_path(path: Path) -> str:
    from detente.rubric import default_rubric_path

    if path.resolve() == default_rubric_path().resolve():
        return f"detente/rubrics/{path.name}"
    return str(path)


def _facts(run: RunFolder, party: str) -> PartyFacts:
    from detente.leaks import LeakRules

    scenario, header = run.scenario, run.header
    voter = party in scenario.preferences
    brief = run.bundle.briefs[party]
    settings = header.agents.get(party)
    assist = settings.effective_assist() if settings is not None and settings.kind == "llm" \
        else "none"
    rules = LeakRules(scenario, brief, party, run.events, header.max_rounds, assist) \
        if voter else None
    return PartyFacts(header.run_id, header.quote_key, party, brief, scenario, voter,
                      table_lines(run.events, scenario, party, voter),
                      party_items(run.events, party), rules)


def _judge_window(client: LLMClient, facts: PartyFacts, rubric: Rubric,
                  criteria: Sequence[Criterion], window: Sequence[Item], index: int, count: int,
                  ref: RubricRef, info: JudgeInfo, hits: Sequence[LeakHit],
                  log: _PromptLog, style: AnswerStyle = "quote") -> Judgement:
    from detente.leaks import hits_in_rounds
    from detente.llm import InvalidResponseError

    first, last = window[0].round, window[-1].round
    tag = quote_tag(facts.quote_key, facts.party, index, first, last)
    messages = [{"role": "system", "content": system_prompt(rubric, criteria)},
                {"role": "user", "content": user_prompt(facts, window, tag, index, count,
                                                        style)}]
    model = answer_model(criteria, window, style)
    base: dict[str, Any] = {
        "run_id": facts.run_id, "party": facts.party,
        "role": "party" if facts.voter else "mediator", "window": index, "windows": count,
        "rounds": (first, last), "rubric": ref, "judge": info,
        "scale": {c.id: (c.worst, c.best) for c in criteria},
        "deterministic_leaks": hits_in_rounds(hits, first, last), "time": utc_now()}
    label = f"{facts.party}/w{index}"
    try:
        result = client.complete(messages, model)
    except InvalidResponseError as exc:
        log.write(label, info.key, exc.exchanges)
        return Judgement(**base, request_hashes=[x.request_hash for x in exc.exchanges],
                         prompt_tokens=exc.prompt_tokens,
                         completion_tokens=exc.completion_tokens,
                         latency=round(exc.latency_s, 3), invalid=True, errors=exc.errors)
    except Exception as exc:
        log.write(label, info.key, getattr(exc, "exchanges", []))
        raise
    log.write(label, info.key, result.exchanges)
    answer = result.parsed.model_dump()
    if style == "choose" and choices(window).every:
        answer = unchoose(answer, choices(window))
    items = facts.items
    return Judgement(
        **base, request_hashes=[x.request_hash for x in result.exchanges],
        prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens,
        latency=round(result.latency_s, 3), errors=list(result.validation_errors),
        scores={k: int(v) for k, v in answer["scores"].items()},
        summary=answer.get("summary", ""),
        evidence=[_evidence(e, items) for e in answer["evidence"]],
        contradictions=[_contradiction(c, items) for c in answer.get("contradictions", [])],
        leak_claims=[_leak_claim(c, items, facts.rules) for c in answer.get("leaks", [])],
    )


def _event(items: Sequence[Item], ref: str) -> str | None:
    return next((i.event_id for i in items if i.ref == ref), None)


def _evidence(answer: Mapping[str, Any], items: Sequence[Item]) -> Evidence:
    status, found_in = verify(answer["quote"], answer["item"], items)
    return Evidence(criterion=answer["criterion"], ref=answer["item"],
                    event_id=_event(items, answer["item"]), quote=answer["quote"],
                    note=answer["note"], status=status, found_in=found_in)


def _contradiction(answer: Mapping[str, Any], items: Sequence[Item]) -> Contradiction:
    public, _ = verify(answer["public_quote"], answer["public_item"], items)
    private, _ = verify(answer["private_quote"], answer["private_item"], items)
    return Contradiction(
        public_ref=answer["public_item"], public_event=_event(items, answer["public_item"]),
        public_quote=answer["public_quote"], public_status=public,
        private_ref=answer["private_item"], private_event=_event(items, answer["private_item"]),
        private_quote=answer["private_quote"], private_status=private,
        explanation=answer["explanation"])


def _leak_claim(answer: Mapping[str, Any], items: Sequence[Item],
                rules: LeakRules | None) -> LeakClaim:
    """A leak the judge claims: confirmed when its quote is the party's and holds a private
    number by the deterministic check's rules."""
    status, found_in = verify(answer["quote"], answer["item"], items)
    item = next((i for i in items if i.ref == (found_in or answer["item"])), None)
    numbers: list[Revealed] = []
    if rules is not None and item is not None and status in COUNTS:
        numbers = [n.revealed() for _, _, found in rules.scan(answer["quote"], item.round)
                   for n in found]
    return LeakClaim(ref=answer["item"], event_id=_event(items, answer["item"]),
                     quote=answer["quote"], reveals=answer["reveals"], status=status,
                     confirmed=bool(numbers), numbers=numbers)


# --------------------------------------------------------------------------- many runs


class JudgeError(DetenteError):
    """The judge's endpoint failed mid-way; what was judged is kept."""

    exit_code = 1


def judge_runs(
    paths: str | Path | Sequence[str | Path],
    *,
    model: str | None = None,
    base_url: str | None = None,
    model_path: str | Path | None = None,
    rubric: str | Path | None = None,
    deterministic_only: bool = False,
    parties: Sequence[str] | None = None,
    rounds: tuple[int, int] | None = None,
    force: bool = False,
    temperature: float = JUDGE_TEMPERATURE,
    seed: int | None = JUDGE_SEED,
    max_tokens: int | None = None,
    structured_mode: StructuredMode | None = None,
    timeout: float | None = None,
    max_retries: int | None = None,
    window_chars: int = WINDOW_CHARS,
    answers: AnswerStyle | None = None,
    scenario: str | Path | None = None,
    log_prompts: bool = True,
    notice: Callable[[str], None] | None = None,
    on_run: Callable[[RunJudged], None] | None = None,
) -> list[RunJudged]:
    """Judge every finished run under `paths` (run folders, sweep folders, glob patterns).

    Without `model` and `base_url` the judge is the embedded model (started and stopped here;
    `model_path`: another GGUF file); with `base_url`, any OpenAI-compatible endpoint (name its
    `model`); with `model` alone, OpenAI. `deterministic_only`: the leak check alone, no model.
    `rounds` (first, last): judge only the words of those rounds. `max_tokens`: the answer's
    limit (default: `JUDGE_MAX_TOKENS` in the `choose` style, `QUOTE_MAX_TOKENS` in `quote`).
    `answers`: the answer style (default `choose` on the embedded model, `quote` elsewhere).
    Runs that did not finish, or cannot be read, are skipped with a notice. Raises
    `InputError` for bad input (nothing judged yet) and `JudgeError` when the endpoint fails
    mid-way (the judgements made so far are kept; run again to continue).
    """
    from detente.runs import load_runs

    say = notice or (lambda text: None)
    loaded_rubric, rubric_path = load_rubric(rubric)
    given = [paths] if isinstance(paths, str | Path) else list(paths)
    runs = []
    for run in load_runs(given, finished=False, scenario=scenario):
        if not run.finished:
            say(f"skipped {run.path}: not finished (status {run.status})")
            continue
        try:
            run.read()
        except InputError as exc:
            say(f"skipped {run.path}: {exc}")
            continue
        unknown = [p for p in parties or [] if p not in run.scenario.parties]
        if unknown:
            raise InputError("--party", [Problem(", ".join(unknown), f"not a party of run "
                                                 f"{run.path} (its parties: "
                                                 f"{', '.join(run.scenario.parties)})")])
        runs.append(run)
    if not runs:
        raise InputError(", ".join(map(str, given)), [Problem("", "no finished run to judge "
                                                       "(a run that ended in a deal, no deal "
                                                       "or deadlock, and can be read)")])
    gguf = Path(model_path) if model_path is not None else None
    if gguf is not None and not gguf.is_file():
        raise InputError(gguf, [Problem("--model-path", "no such GGUF file")])

    def each(settings: JudgeSettings | None) -> list[RunJudged]:
        out = []
        for run in runs:
            try:
                judged = judge_run(run, loaded_rubric, rubric_path, settings, parties=parties,
                                   rounds=rounds, force=force, log_prompts=log_prompts,
                                   notice=say)
            except _transport_errors() as exc:
                raise JudgeError(f"{run.path}: the judge's endpoint failed: {exc}; the "
                                 f"judgements made so far are kept in {JUDGEMENTS_NAME} "
                                 "(run detente judge again to continue)") from None
            if on_run is not None:
                on_run(judged)
            out.append(judged)
        return out

    if deterministic_only:
        return each(None)
    if base_url is not None and not model:
        raise InputError("--model", [Problem("", "name the judge's model with --model (the "
                                             "model id the endpoint at --base-url serves)")])
    common: dict[str, Any] = {"temperature": temperature, "seed": seed, "timeout": timeout,
                              "max_retries": max_retries, "window_chars": window_chars}

    def limit(style: AnswerStyle) -> int:
        if max_tokens is not None:
            return max_tokens
        return JUDGE_MAX_TOKENS if style == "choose" else QUOTE_MAX_TOKENS

    local = gguf is not None or (not model and not base_url)
    if not local:
        style: AnswerStyle = answers or "quote"
        judge = JudgeSettings(model=str(model), base_url=base_url,
                              structured_mode=structured_mode or "json_schema", answers=style,
                              max_tokens=limit(style), **common)
        _preflight(judge)
        return each(judge)
    from detente.endpoints import embedded_server

    wanted = {"judge": AgentSettings(kind="llm", structured_mode=structured_mode)}
    with embedded_server(wanted, gguf, notice=say) as served:
        agent = served["judge"]
        style = answers or "choose"
        judge = JudgeSettings(model=str(agent.model), base_url=agent.base_url,
                              local_model=agent.local_model,
                              structured_mode=agent.structured_mode or "json_object",
                              answers=style, max_tokens=limit(style), **common)
        _preflight(judge)
        return each(judge)


def _preflight(judge: JudgeSettings) -> None:
    from detente.endpoints import preflight

    preflight({"judge": judge.agent_settings()})


def _transport_errors() -> tuple[type[Exception], ...]:
    from detente.llm import LLMTransportError

    return (LLMTransportError,)
