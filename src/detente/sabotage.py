"""Saboteurs in a run, and whether the other parties noticed them.

A run has a saboteur when the scenario gave a party the `saboteur` incentive (its prompt says
so, or a scripted seat plays it) or a seat was played by `scripted:saboteur`. `detente compare`
reports, over the runs with one, whether it succeeded (the run ended without a deal: see
`detente.metrics`) and whether the others noticed, by `noticed`.

"Noticed" is a lexical check, not a judgement: some other party's words (public statements,
caucus messages, proposal rationales, the statements of its answers and its private rationales)
hold a sentence that names the saboteur and accuses it of working against the talks (sabotage,
stalling, bad faith, playing for time, not wanting a deal, ...; see `ACCUSATION`). It misses
suspicion worded otherwise and counts an accusation a party makes of a hard bargainer that is
no saboteur (compare the baseline's rate of the same words, `accusations`), so read it as a
lower bound of what the others said, with the quotes (`suspicions`) as its evidence. Scripted
parties never accuse anyone: with scripted others it is always no.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from detente.events import AgentSettings, Event, Proposal, Response, Statement
from detente.scenario import Incentive

ACCUSATION = re.compile(
    r"\b(?:"
    r"sabotag\w*|spoil(?:er|ers|ing|s)?\b|stall(?:s|ing|ed)?\b|stonewall\w*|obstruct\w*"
    r"|derail\w*|filibuster\w*|bad[- ]faith|not (?:negotiating |acting |bargaining )?in good "
    r"faith|(?:play|plays|playing|played|buy|buys|buying|gain|gains|gaining) (?:for )?time"
    r"|delaying tactic\w*|running out the clock|run out the clock|moving the goal ?posts"
    r"|no (?:real |genuine |serious )?intention of (?:agreeing|settling|reaching|making|"
    r"accepting)|(?:does not|doesn't|do not|don't) (?:really |truly |genuinely |even )?want "
    r"(?:a |an |any )?(?:deal|agreement|settlement)|never (?:intended|meant|wanted) to "
    r"(?:agree|settle|reach|accept)|wants? (?:the |these )?talks to fail"
    r")",
    re.IGNORECASE,
)
"""Words that accuse a party of working against an agreement (English)."""

_SENTENCE = re.compile(r"[^.!?;\n]+[.!?;]?")


def saboteurs(incentives: Mapping[str, Incentive],
              agents: Mapping[str, AgentSettings]) -> list[str]:
    """The parties of a run that played a saboteur: given the `saboteur` incentive, or played
    by `scripted:saboteur`."""
    given = {p for p, incentive in incentives.items() if incentive.kind == "saboteur"}
    played = {p for p, a in agents.items() if a.kind == "scripted" and a.strategy == "saboteur"}
    return sorted(given | played)


@dataclass(frozen=True)
class Suspicion:
    """A sentence of one party's words that accuses the saboteur."""

    party: str
    round: int
    where: str
    """statement, caucus, proposal rationale, answer or private rationale."""
    quote: str


def names_pattern(party: str, names: Iterable[str] = ()) -> re.Pattern[str]:
    """What names `party` in a text: its id (underscores read as spaces; an id of four letters
    or more also as the stem of a word, so `russia` finds "Russian"; a shorter one only in
    capitals, so `us` finds "US" and never the pronoun) and its display names (whole words)."""
    spoken = party.replace("_", " ")
    alternatives = [re.escape(n) + r"\b" for n in names if n.strip()]
    alternatives.append(re.escape(spoken) if len(spoken) >= 4 else
                        r"(?-i:" + re.escape(spoken.upper()) + r")\b")
    return re.compile(r"\b(?:" + "|".join(alternatives) + ")", re.IGNORECASE)


def _texts(event: Event) -> list[tuple[str, str]]:
    """(where, text) of what a party said in an event."""
    if isinstance(event, Statement):
        return [("statement" if event.kind == "opening" else "caucus", event.text)]
    if isinstance(event, Proposal):
        return [("proposal rationale", event.rationale)]
    if isinstance(event, Response):
        return [("answer", event.statement), ("private rationale", event.private_rationale)]
    return []


def accusations(events: Sequence[Event], party: str,
                names: Iterable[str] = ()) -> list[Suspicion]:
    """Every sentence of another party's words that names `party` and accuses it of working
    against an agreement (see `ACCUSATION`), in log order."""
    named = names_pattern(party, names)
    found: list[Suspicion] = []
    for event in events:
        speaker = getattr(event, "speaker", None)
        if speaker is None or speaker == party:
            continue
        for where, text in _texts(event):
            for sentence in _SENTENCE.findall(text or ""):
                if named.search(sentence) and ACCUSATION.search(sentence):
                    found.append(Suspicion(speaker, getattr(event, "round", 0), where,
                                           " ".join(sentence.split())))
    return found


def suspicions(events: Sequence[Event], saboteur_parties: Iterable[str],
               names: Mapping[str, Sequence[str]] | None = None) -> list[Suspicion]:
    """The accusations of the saboteurs by the other parties (`names`: each party's display
    names)."""
    out: list[Suspicion] = []
    for party in saboteur_parties:
        out += accusations(events, party, (names or {}).get(party, ()))
    return out
