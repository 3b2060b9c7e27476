"""`judgements.jsonl`: what `detente judge` wrote about a run's words, one record a line.

Two kinds of line, each self-describing (`type`):

- `leak_check`: one per party, from the deterministic check (`detente.leaks`): every place its
  words seen by others hold one of its private numbers, with the quote and what it reveals, and
  the private numbers the check could not look for (they are also public numbers). Needs no
  model; rewritten by every `detente judge`.
- `judgement`: one per party and window of rounds, from a model judging the words against a
  rubric (`detente.judge`): scores per criterion, evidence quotes each checked against the
  party's actual words, flagged contradictions (both quotes), leak claims, and the judge's model,
  settings and request hashes. A judge is identified by `judge.key` (its model and settings,
  the rubric's hash and the judge prompt's version): `detente judge` skips the windows that judge
  already scored, and `--force` replaces them; other judges' lines are kept.

This module only reads and writes the records (pydantic and json): `detente.metrics` reads them
through `RunFolder.judgements` without loading any model code.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from detente.errors import InputError, Problem

JUDGEMENTS_NAME = "judgements.jsonl"
"""The file's name inside a run folder."""
RECORD_FORMAT = 1

VerifyStatus = Literal["verified", "elsewhere", "unverified", "too_short"]
"""A quote the judge gave, checked against the party's words: found in the item it named
(`verified`), found in another of the party's items (`elsewhere`), not found (`unverified`), or
too short to locate (`too_short`: fewer than 3 words and 12 characters). Only the first two
count as evidence."""

COUNTS: tuple[str, ...] = ("verified", "elsewhere")
"""The statuses of a quote that counts as evidence."""


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


NumberKind = Literal["walk_away", "weight", "option_value", "term_value", "table_value",
                     "table_surplus"]


class Revealed(_Record):
    """One private number a number in the party's words matches."""

    kind: NumberKind
    label: str
    """What it is, e.g. "walk-away value" or "value of territory=freeze_current_line"."""
    value: float
    shown: str
    """How the party's prompt showed it (e.g. "62", "30%", "54.3")."""


class LeakHit(_Record):
    """A number in words others saw that equals one of the party's private numbers."""

    event_id: str
    round: int
    where: str
    """"opening statement", "public statement", "proposal rationale", "caucus message" or
    "caucus reply"."""
    audience: list[str] | Literal["all"]
    """Who saw the words (the party itself left out)."""
    number: str
    """The number as written ("62", "62.0", "30%")."""
    quote: str
    """The sentence holding it (at most 240 characters around it)."""
    reveals: list[Revealed]


class Shadowed(_Record):
    """A private number the check does not look for, and why."""

    value: float
    labels: list[str]
    why: str


class LeakCheck(_Record):
    """The deterministic leak check of one party's words over the whole run."""

    type: Literal["leak_check"] = "leak_check"
    format: int = RECORD_FORMAT
    run_id: str
    party: str
    check_version: int
    numbers_checked: int
    """How many distinct private values were looked for."""
    words_checked: int
    """How many of the party's texts seen by others were read."""
    hits: list[LeakHit]
    shadowed: list[Shadowed]
    time: str

    @property
    def leaked(self) -> bool:
        return bool(self.hits)


class Evidence(_Record):
    """A quote the judge gave for a criterion, checked against the party's words."""

    criterion: str
    ref: str
    """The item the judge named (W1, W2, ...)."""
    event_id: str | None
    """The event of that item (None for a ref the window does not have)."""
    quote: str
    note: str
    status: VerifyStatus
    found_in: str | None = None
    """The item the quote was found in (its ref), when not the one named."""

    @property
    def counts(self) -> bool:
        return self.status in COUNTS


class Contradiction(_Record):
    """A public claim contradicted in private (or by a vote), with both quotes."""

    public_ref: str
    public_event: str | None
    public_quote: str
    public_status: VerifyStatus
    private_ref: str
    private_event: str | None
    private_quote: str
    private_status: VerifyStatus
    explanation: str

    @property
    def verified(self) -> bool:
        """Both quotes were found where the judge said, on the sides it said."""
        return self.public_status == "verified" and self.private_status == "verified"


class LeakClaim(_Record):
    """Words the judge says leak a private number, checked against the words and the numbers."""

    ref: str
    event_id: str | None
    quote: str
    reveals: str
    status: VerifyStatus
    confirmed: bool
    """The quote was found and holds a private number by the deterministic check's rules."""
    numbers: list[Revealed] = []


class RubricRef(_Record):
    id: str
    version: int
    hash: str
    """SHA-256 of the validated rubric as canonical JSON."""
    path: str
    """Where it was read from (the shipped rubric: `detente/rubrics/<file>`)."""


class JudgeInfo(_Record):
    """Who judged, with what: enough to tell two judges apart and to call this one again."""

    key: str
    """Identifies the judge: a hash of its model, settings, the rubric's hash and the judge
    prompt's version (not the endpoint's address)."""
    model: str
    endpoint: str | None
    """The endpoint's host (None: OpenAI); the embedded server's changes every time."""
    local_model: str | None = None
    """The GGUF file served by the embedded server, if any."""
    temperature: float
    seed: int | None
    max_tokens: int | None
    structured_mode: str
    window_chars: int
    answers: Literal["quote", "choose"] = "quote"
    """`quote`: the judge copied its quotes; `choose`: it picked them from the window's
    sentences (see `detente.judge`)."""
    prompt_version: int


class Judgement(_Record):
    """A model's judgement of one party's words in a window of rounds."""

    type: Literal["judgement"] = "judgement"
    format: int = RECORD_FORMAT
    run_id: str
    party: str
    role: Literal["party", "mediator"]
    window: int
    """1-based index of the window among the party's windows (`windows`)."""
    windows: int
    rounds: tuple[int, int]
    """First and last round of the window (openings are round 0)."""
    rubric: RubricRef
    judge: JudgeInfo
    request_hashes: list[str]
    """SHA-256 of each request body as sent (the first is the judge's prompt); the bodies are in
    the run's `judge-prompts.jsonl` under the same hashes."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency: float = 0.0
    invalid: bool = False
    """No valid answer after the retries: no scores."""
    errors: list[str] = []
    scores: dict[str, int] = {}
    """Criterion id to its level; criteria that do not apply to the party are absent."""
    scale: dict[str, tuple[int, int]] = {}
    """Criterion id to its (worst, best) levels."""
    summary: str = ""
    evidence: list[Evidence] = []
    contradictions: list[Contradiction] = []
    leak_claims: list[LeakClaim] = []
    deterministic_leaks: list[LeakHit] = []
    """The leak check's hits in the window's rounds, beside the judge's view of them."""
    time: str

    @property
    def unverified(self) -> int:
        return sum(not e.counts for e in self.evidence)


Record = Annotated[LeakCheck | Judgement, Field(discriminator="type")]
RECORD_ADAPTER: TypeAdapter[Record] = TypeAdapter(Record)


# --------------------------------------------------------------------------- reading, writing


def read_judgements(path: Path) -> list[LeakCheck | Judgement]:
    """Every record of a `judgements.jsonl` (an empty list when there is none). Raises
    InputError naming the line for a line that is not a record."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise InputError(path, [Problem("", f"cannot read: {reason}")]) from None
    from detente.events import validate_lines

    records: list[LeakCheck | Judgement] = validate_lines(
        path, text.split("\n"), RECORD_ADAPTER, lambda raw: raw.get("format"),
        newest=RECORD_FORMAT, what="a judgement record")
    return records


def dump_judgements(records: Iterable[LeakCheck | Judgement]) -> str:
    """The file's text: one record a line, in the order given."""
    from detente.events import json_line

    return "".join(json_line(r.model_dump_json()) + "\n" for r in records)


def write_judgements(path: Path, records: Sequence[LeakCheck | Judgement]) -> None:
    """Replace the file atomically (a reader sees the old records or the new ones)."""
    from detente.files import write_atomic

    write_atomic(path, dump_judgements(records))


# --------------------------------------------------------------------------- for metrics


def leak_checks(records: Iterable[LeakCheck | Judgement]) -> dict[str, LeakCheck]:
    """The leak check of each party (the last written, if the file holds several)."""
    return {r.party: r for r in records if isinstance(r, LeakCheck)}


def latest_judge(records: Sequence[LeakCheck | Judgement]) -> str | None:
    """The key of the judge whose judgement was written last: the one a run's metrics use."""
    keys = [r.judge.key for r in records if isinstance(r, Judgement)]
    return keys[-1] if keys else None


def judgements_of(records: Sequence[LeakCheck | Judgement],
                  key: str | None = None) -> list[Judgement]:
    """The judgements of judge `key` (default: `latest_judge`), in file order."""
    key = key or latest_judge(records)
    return [r for r in records if isinstance(r, Judgement) and r.judge.key == key]


def mean_scores(judgements: Iterable[Judgement], criterion: str) -> dict[str, float]:
    """Per party, the mean level of `criterion` over its valid judgements that score it."""
    levels: dict[str, list[int]] = {}
    for j in judgements:
        if not j.invalid and criterion in j.scores:
            levels.setdefault(j.party, []).append(j.scores[criterion])
    return {p: sum(v) / len(v) for p, v in levels.items()}


class _Judged(Protocol):
    @property
    def judgements(self) -> list[LeakCheck | Judgement]: ...


def judged_level(run: _Judged, criterion: str) -> dict[str, float] | None:
    """Per party, the mean level of `criterion` the run's latest judge gave it (over its
    windows); None: the run was never judged by a model."""
    judged = judgements_of(run.judgements)
    return mean_scores(judged, criterion) if judged else None


def leaked(run: _Judged) -> dict[str, bool] | None:
    """Per voting party, whether the leak check found a private number in its words seen by
    others; None: never checked."""
    checks = leak_checks(run.judgements)
    return {p: c.leaked for p, c in checks.items()} if checks else None


def contradicted(run: _Judged) -> dict[str, bool] | None:
    """Per party the latest judge asked about consistency, whether it flagged a contradiction
    with both quotes found; None: never judged."""
    judged = [j for j in judgements_of(run.judgements) if not j.invalid]
    if not judged:
        return None
    out: dict[str, bool] = {}
    for j in judged:
        if "consistency" in j.scores:
            out[j.party] = out.get(j.party, False) or any(c.verified for c in j.contradictions)
    return out


def unverified_quotes(run: _Judged) -> dict[str, tuple[int, int]] | None:
    """Per party, the latest judge's evidence quotes not found in the party's words, of all
    it gave; None: never judged."""
    judged = judgements_of(run.judgements)
    if not judged:
        return None
    out: dict[str, tuple[int, int]] = {}
    for j in judged:
        bad, total = out.get(j.party, (0, 0))
        out[j.party] = (bad + j.unverified, total + len(j.evidence))
    return out


def as_json(record: LeakCheck | Judgement) -> dict[str, Any]:
    return record.model_dump(mode="json")
