"""The run record: versioned event models and the append-only `events.jsonl` log.

Field order is part of the format. Bump `EVENT_FORMAT_VERSION` whenever a model changes; readers
refuse logs of a newer version than they know.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from detente.errors import InputError, Problem
from detente.scenario import Package, WalkAwayChange

EVENT_FORMAT_VERSION = 6
"""2: per-turn request hashes and settings (`llm`), value estimates, refused proposals, tool
calls, the assist setting and the quote key. 3: the protocol in the header; proposals,
responses and tallies may be private to some parties (`visible_to`) and belong to a `phase`;
sequential answers carry their `slot`. 4: a person may play a seat (agents of kind `human`;
their turns are marked `human`). Also in 4: events during the talks (`inject`: news, an
incident, a summit, a change of a party's walk-away), logged when their round
starts. 5: budgets (`budget` in the header and on resume, the
`budget` status), answers from the response cache (`LLMCall.cached`, `cached_requests`,
`cached_usage`), and error events carry what a turn cut short had spent (`usage`, `llm`). 6: the
header's `factors` (a run of a sweep design: the level of each factor). Logs of formats 1 to 5
still read."""

Phase = Literal["plenary", "bilateral"]

EVERYONE: Literal["all"] = "all"

LOG_NAME = "events.jsonl"
"""The event log's file name inside a run folder."""

RunStatus = Literal["deal", "no_deal", "deadlock", "error", "interrupted", "budget"]
"""`budget`: stopped before a model call that could have taken the spending past the run's
(or its sweep's) budget; resumable with a larger one."""
StructuredMode = Literal["json_schema", "json_object", "prompt"]
Assist = Literal["none", "table", "tool"]
"""What an LLM party is told of a package's worth to it: nothing (`none`), the exact value of
the package on the table and the red lines it breaks (`table`), or an `evaluate_package` tool it
may call a few times a turn (`tool`)."""
ASSIST_MODES: tuple[str, ...] = ("none", "table", "tool")
ORACLE_STRATEGY = "oracle"


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Usage(BaseModel):
    """Tokens one model call (with its validation retries) consumed."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
        )


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    """Deterministic within a run (e.g. `r2/response/us`): resuming never writes one twice."""
    time: str = Field(default_factory=utc_now)
    """UTC time the event happened (ISO 8601)."""


class AgentSettings(BaseModel):
    """How one party is played: a scripted strategy or a model behind an endpoint."""

    kind: Literal["scripted", "llm", "human"]
    """`human`: a person answers in the terminal (or through `detente.run(human=...)`)."""
    provider: str | None = None
    """How an LLM agent is reached (`detente.registry.PROVIDERS`); None means `openai`."""
    strategy: str | None = None
    """Scripted strategy name (`boulware`, `linear`, `conceder`, `nash`, `snt`, `oracle`)."""
    model: str | None = None
    base_url: str | None = None
    temperature: float | None = None
    seed: int | None = None
    """Sent as the request's `seed`. In a run's header: the seed actually used (the run's seed
    unless the party's settings pinned one). In a sweep's manifest: None unless pinned, so every
    seed of the sweep reaches the model."""
    max_tokens: int | None = None
    max_retries: int | None = None
    """HTTP retries the openai client makes on connection errors, 429 and 5xx."""
    structured_mode: StructuredMode | None = None
    prompt: Literal["full", "compact"] | None = None
    """`compact` drops option descriptions and long positions, for small local models."""
    local_model: str | None = None
    """GGUF file served by the embedded llama.cpp server (its URL changes from run to run)."""
    assist: Assist | None = None
    """See `Assist`; None means the default: `table` on the embedded model, else `none`."""
    timeout: float | None = None
    """Seconds an HTTP request may take; None means the default (see `detente.agents`)."""
    max_connections: int | None = None
    """Connections to this agent's endpoint at once, from one process (shared by every run of
    a local sweep); None means 64."""

    def label(self) -> str:
        if self.kind == "human":
            return "human"
        if self.kind == "scripted":
            upper = " (upper bound)" if self.strategy == ORACLE_STRATEGY else ""
            return f"scripted:{self.strategy}{upper}"
        prefix = f"{self.provider}:" if self.provider and self.provider != "openai" else ""
        return f"{prefix}{self.model} (embedded)" if self.local_model else f"{prefix}{self.model}"

    @property
    def upper_bound(self) -> bool:
        """An oracle mediator: it knows every party's utilities, so its run is a reference."""
        return self.kind == "scripted" and self.strategy == ORACLE_STRATEGY

    def effective_assist(self) -> Assist:
        if self.assist is not None:
            return self.assist
        return "table" if self.local_model else "none"

    def identity(self) -> dict[str, Any]:
        """What makes two runs' players the same for pooling: every setting that shapes the
        model's answers, without the seed (it differs between samples by design), the endpoint
        address (the embedded server's port changes every run) or HTTP retries."""
        if self.kind == "scripted":
            return {"kind": "scripted", "strategy": self.strategy}
        if self.kind == "human":
            return {"kind": "human"}
        return {
            "kind": "llm",
            "provider": self.provider or "openai",
            "model": self.model,
            "local_model": Path(self.local_model).name if self.local_model else None,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "structured_mode": self.structured_mode,
            "prompt": self.prompt,
            "assist": self.effective_assist(),
        }

    def stored(self) -> AgentSettings:
        """These settings as a file keeps them: an endpoint URL without `user:password@`."""
        from detente.redact import strip_credentials

        return self.model_copy(update={"base_url": strip_credentials(self.base_url)})

    def call_settings(self) -> dict[str, Any]:
        """The settings an LLM turn records beside its request hash."""
        return {
            "model": self.model,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "seed": self.seed,
            "structured_mode": self.structured_mode,
            "prompt": self.prompt,
            "assist": self.effective_assist(),
        }


class BudgetSetting(BaseModel):
    """A spending limit on a run's model calls (`--budget`), priced with `detente.costs`."""

    usd: float
    scope: Literal["run", "sweep"] = "run"
    """`sweep`: the limit is the sweep's, shared by all its runs."""


class RunHeader(_Event):
    """The first line of every log: what was run, with what, from which scenario content."""

    type: Literal["header"] = "header"
    format_version: int = EVENT_FORMAT_VERSION
    run_id: str
    scenario_id: str
    scenario_path: str
    scenario_hash: str
    """SHA-256 of the validated scenario's canonical JSON."""
    package_version: str
    seed: int
    max_rounds: int
    agents: dict[str, AgentSettings]
    bounded_context: int
    """How many recent public statements each agent sees."""
    quote_key: str = ""
    """The run's secret for quote delimiters: each prompt's delimiter is derived from it, so no
    party can know (and forge) the delimiter of another party's prompt."""
    log_prompts: bool = False
    """Whether `prompts.jsonl` keeps every request and raw response."""
    protocol: str = ""
    """Who proposes, who answers, what each sees (see `detente.protocols`); empty in logs
    written before format 3: the scenario's default then."""
    protocol_params: dict[str, Any] = {}
    budget: BudgetSetting | None = None
    """The spending limit the run started with (None: none); a resume may set another (see
    `Resumed.budget`)."""
    factors: dict[str, str] = {}
    """A run of a sweep: the level of each factor of its design (`scenario`, `agent:russia`,
    `temperature`, ...; see `detente.designs`), as text. Empty in runs made alone and in logs
    written before format 6."""


class LLMCall(BaseModel):
    """Provenance of one LLM turn: the exact requests it sent and the settings used."""

    request_hashes: list[str]
    """SHA-256 of each request body as sent (canonical JSON), in order: the first is the turn's
    prompt; corrections of invalid answers and tool follow-ups come after. The bodies are in the
    run's `prompts.jsonl` under the same hashes."""
    settings: dict[str, Any]
    """Model, temperature, max_tokens, seed, structured mode, prompt mode and assist."""
    cached: bool = False
    """Every request of the turn was answered from the response cache (`--cache`): no call
    was made and nothing was paid."""
    cached_requests: int = 0
    """How many of its requests the cache answered."""
    cached_usage: Usage | None = None
    """The tokens of those requests (part of the turn's `usage`, paid by an earlier run)."""


class Statement(_Event):
    """Something said: an opening statement, or a caucus exchange between mediator and party."""

    type: Literal["statement"] = "statement"
    kind: Literal["opening", "caucus", "caucus_reply"]
    round: int
    speaker: str
    visible_to: list[str] | Literal["all"] = EVERYONE
    text: str
    usage: Usage = Usage()
    latency: float = 0.0
    invalid: bool = False
    """The agent gave no valid answer; `text` holds what went wrong."""
    llm: LLMCall | None = None
    human: bool = False
    """A person gave this turn (a seat played with `human`)."""


class Proposal(_Event):
    """A full package tabled for a vote."""

    type: Literal["proposal"] = "proposal"
    round: int
    speaker: str
    visible_to: list[str] | Literal["all"] = EVERYONE
    phase: Phase = "plenary"
    package: Package
    rationale: str
    usage: Usage = Usage()
    latency: float = 0.0
    invalid: bool = False
    llm: LLMCall | None = None
    human: bool = False
    repeats_rejected: bool = False
    """The proposer tabled an already rejected package again after every refusal: it stands, and
    counts toward deadlock."""


class RefusedProposal(_Event):
    """A package tabled again after it was rejected: refused, and the proposer asked again."""

    type: Literal["refused"] = "refused"
    round: int
    speaker: str
    package: Package
    rationale: str
    reason: str
    usage: Usage = Usage()
    latency: float = 0.0
    llm: LLMCall | None = None
    human: bool = False


class ToolCall(_Event):
    """A call of the `evaluate_package` tool by an LLM party (assist `tool`): private."""

    type: Literal["tool_call"] = "tool_call"
    round: int
    speaker: str
    visible_to: list[str]
    name: str
    arguments: dict[str, Any]
    result: dict[str, Any] | None = None
    error: str | None = None


class Inject(_Event):
    """An event during the talks (the scenario's `events`), logged when its round starts: the
    parties in `visible_to` see its text from this round on. Its id is `inject/<event id>`."""

    type: Literal["inject"] = "inject"
    round: int
    """The round it happened in: its scheduled round (or, if the protocol skipped that round,
    the next one played)."""
    kind: Literal["news", "incident", "summit", "walk_away"]
    text: str
    visible_to: list[str] | Literal["all"] = EVERYONE
    change: WalkAwayChange | None = None
    """A `walk_away` event's new walk-away utility for one party (only that party's agent is
    shown the number; see `detente.protocols.engine.build_context`)."""


class IssueStance(BaseModel):
    stance: Literal["accept", "object"]
    wants: str | float | None = None
    """The option (or term value) the party wants instead, if it objects."""


class Response(_Event):
    """A party's answer to the package on the table."""

    type: Literal["response"] = "response"
    round: int
    speaker: str
    visible_to: list[str] | Literal["all"] = EVERYONE
    phase: Phase = "plenary"
    slot: int = 0
    """Its place among answers given one after another (alternating offers); 0: all at once."""
    vote: Literal["accept", "reject"]
    stances: dict[str, IssueStance]
    statement: str
    """Public: every agent sees it."""
    private_rationale: str
    """Private: no other agent ever sees it."""
    value_estimate: float | None = None
    """The party's own estimate (0-100) of the package's worth to it; the scorer compares it
    with the true value. None for scripted parties (they compute it) and invalid answers."""
    usage: Usage = Usage()
    latency: float = 0.0
    invalid: bool = False
    """True for `invalid_response`: no valid answer after retries, counted as a rejection."""
    errors: list[str] = []
    llm: LLMCall | None = None
    human: bool = False


class Tally(_Event):
    type: Literal["tally"] = "tally"
    round: int
    visible_to: list[str] | Literal["all"] = EVERYONE
    phase: Phase = "plenary"
    package: Package
    votes: dict[str, Literal["accept", "reject"]]
    accepted: bool
    rejections_of_package: int
    """How many times this exact package has now been rejected."""


class ErrorEvent(_Event):
    type: Literal["error"] = "error"
    round: int | None = None
    speaker: str | None = None
    message: str
    usage: Usage = Usage()
    """Tokens of the requests a turn cut short here had already made (and paid for)."""
    llm: LLMCall | None = None
    """Those requests' provenance; the turn itself is asked again on resume."""


class Resumed(_Event):
    type: Literal["resumed"] = "resumed"
    note: str
    budget: BudgetSetting | None = None
    """The spending limit from this resume on (None: none)."""


class Outcome(_Event):
    """The last line of a finished run."""

    type: Literal["outcome"] = "outcome"
    status: RunStatus
    package: Package | None
    """The agreed package; None when there is no deal."""
    rounds: int
    votes: dict[str, Literal["accept", "reject"]] = {}
    reason: str


Event = Annotated[
    RunHeader | Statement | Proposal | RefusedProposal | ToolCall | Response | Tally
    | ErrorEvent | Resumed | Outcome | Inject,
    Field(discriminator="type"),
]
EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)


def event_schema() -> dict[str, Any]:
    """JSON Schema of one line of `events.jsonl`."""
    schema = EVENT_ADAPTER.json_schema()
    schema["title"] = f"detente event (format {EVENT_FORMAT_VERSION})"
    return schema


_LINE_BREAKS = {"\u0085": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def json_line(text: str) -> str:
    """A JSON document safe as one line for every reader: the characters that JSON allows raw
    but that `str.splitlines` (and many tools) take for line breaks are written escaped."""
    for char, escaped in _LINE_BREAKS.items():
        text = text.replace(char, escaped)
    return text


class EventLog:
    """The run's record: the append-only `events.jsonl` and an in-memory copy of its events.

    Every `write` appends a batch of events as whole lines with one flush and fsync, skipping
    events whose id is already logged (so a resumed step never writes one twice), and tells
    `on_event` of each new one. Opening an existing log cuts a torn last line (a crash
    mid-write) so that nothing is ever appended to a fragment. Thread-safe.
    """

    def __init__(self, path: Path, on_event: Callable[[Event], None] | None = None) -> None:
        self.path = path
        self.on_event = on_event
        self._lock = threading.Lock()
        self._raw: list[dict[str, Any]] = []
        self._by_id: dict[str, dict[str, Any]] = {}
        self._parsed: dict[str, Event] = {}
        if path.exists():
            self.repaired = repair_torn_tail(path)
            for event in read_events(path):
                self._remember(event)
        else:
            self.repaired = 0
        self._file = path.open("a", encoding="utf-8")

    def _remember(self, event: Event) -> None:
        raw = event.model_dump(mode="json")
        self._raw.append(raw)
        self._by_id[raw["id"]] = raw
        self._parsed[raw["id"]] = event

    def write(self, *events: BaseModel) -> list[Event]:
        """Append the events not yet logged, in order; returns those written."""
        with self._lock:
            fresh: list[Event] = []
            lines: list[str] = []
            for event in events:
                event_id = getattr(event, "id")  # noqa: B009  (every event has one)
                if event_id in self._by_id or any(e.id == event_id for e in fresh):
                    continue
                parsed = EVENT_ADAPTER.validate_python(event.model_dump(mode="json"))
                fresh.append(parsed)
                lines.append(json_line(parsed.model_dump_json()))
            if not lines:
                return []
            self._file.write("\n".join(lines) + "\n")
            # Known as soon as it is in the buffer: a Ctrl-C landing in the (slow) flush/fsync
            # must not make the run write the event a second time.
            for event in fresh:
                self._remember(event)
            self._file.flush()
            os.fsync(self._file.fileno())
        if self.on_event is not None:
            for event in fresh:
                self.on_event(event)
        return fresh

    def event(self, event_id: str) -> Event:
        """A logged event, validated once when it was logged (KeyError if none): views read
        it at every turn, and validating the whole log each time made them quadratic."""
        with self._lock:
            return self._parsed[event_id]

    def get(self, event_id: str) -> dict[str, Any] | None:
        """A logged event as plain JSON data, or None."""
        with self._lock:
            return self._by_id.get(event_id)

    def raw(self) -> list[dict[str, Any]]:
        """Every logged event as plain JSON data, in log order (a snapshot)."""
        with self._lock:
            return list(self._raw)

    def __contains__(self, event_id: str) -> bool:
        with self._lock:
            return event_id in self._by_id

    def close(self) -> None:
        with self._lock:
            self._file.close()

    def __enter__(self) -> EventLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def repair_torn_tail(path: Path) -> int:
    """Cut a last line that a crash left unfinished (no newline); returns the bytes cut."""
    with path.open("rb+") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        if size == 0:
            return 0
        block = 1 << 16
        position = size
        while position > 0:
            start = max(0, position - block)
            handle.seek(start)
            chunk = handle.read(position - start)
            cut = chunk.rfind(b"\n")
            if cut >= 0:
                keep = start + cut + 1
                break
            position = start
        else:
            keep = 0
        if keep == size:
            return 0
        handle.truncate(keep)
        handle.flush()
        os.fsync(handle.fileno())
        return size - keep


def read_events(path: Path) -> list[Event]:
    """Every event of a log. A torn last line (a crash mid-write) is ignored."""
    try:
        # Only "\n" ends a line: a party's text may hold other Unicode line separators.
        lines = path.read_text(encoding="utf-8").split("\n")
        while lines and not lines[-1]:
            lines.pop()
    except FileNotFoundError:
        raise InputError(path, [Problem("", "no such file: is this a run folder?")]) from None
    return validate_lines(path, lines, EVENT_ADAPTER, _event_format, torn_tail=True)


def _event_format(raw: Mapping[str, Any]) -> int | None:
    """The format a log's header line declares (other events declare none)."""
    return raw.get("format_version", 0) if raw.get("type") == "header" else None


def validate_lines(path: Path, lines: Sequence[str], adapter: TypeAdapter[Any],
                   declared_format: Callable[[Mapping[str, Any]], int | None],
                   newest: int | None = None, torn_tail: bool = False,
                   what: str = "an event") -> list[Any]:
    """Each non-blank JSON line of a JSON-lines file, validated by `adapter`; one InputError
    naming the line for a line that is not JSON, not an object, not valid, or written in a format
    (`declared_format`) newer than `newest` (default: the event format). `torn_tail`: an
    unparseable last line (a crash mid-write) is dropped instead."""
    newest = EVENT_FORMAT_VERSION if newest is None else newest
    out: list[Any] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
        except json.JSONDecodeError:
            if torn_tail and number == len(lines):
                break
            raise InputError(path, [Problem(f"line {number}", "not valid JSON")]) from None
        if not isinstance(raw, dict):
            raise InputError(path, [Problem(f"line {number}",
                                            f"a line is not {what} (a JSON object)")])
        version = declared_format(raw)
        if isinstance(version, int) and version > newest:
            raise InputError(path, [Problem(f"line {number}", "written by a newer detente "
                                            f"(format {version}); upgrade")])
        try:
            out.append(adapter.validate_python(raw))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise InputError(path, [Problem(f"line {number}", f"{where}: {first['msg']}")]) \
                from None
    return out
