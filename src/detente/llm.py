"""The only LLM transport: OpenAI-compatible chat completions with validated structured answers.

Every model call of the harness goes through `LLMClient.complete`, which asks for one JSON object
matching a pydantic model, validates it, and on an invalid answer feeds the validation error back
to the model and asks again (up to `EndpointConfig.validation_retries` times). Every request body
is built here (`request_body`), sent exactly as built, hashed (`request_hash`), and returned with
its raw response as an `Exchange`, so a run can keep the full record of what a model was asked.

Three ways of asking for structure, chosen per endpoint by `EndpointConfig.structured_mode`:

- `json_schema`: OpenAI strict structured outputs, `{"type": "json_schema", "json_schema":
  {"name", "schema", "strict": true}}`, with openai's own strict version of the pydantic model's
  schema when it can make one;
- `json_object`: `{"type": "json_object", "schema": {...}}`, the grammar-constrained mode of the
  llama-cpp-python server (the embedded local model); see `grammar_schema`.
- `prompt`: no `response_format`; the schema is appended to the last system/user message and the
  first JSON object in the reply is taken.

A `Tool` (OpenAI tool calling) may be offered with a request: its calls are run here, bounded per
turn, and recorded.

Transport failures (unreachable server, HTTP errors after openai's own retries, timeouts) raise
`LLMTransportError` with a one-line message; answers still invalid after the retries raise
`InvalidResponseError`, which carries what the caller needs to record the failed exchange.

Every request goes through the run's meter (`detente.costs.METER`, set by the runner for the
run's task), if any: the response cache answers a request it has seen (`Exchange.cached`, nothing
sent), and the budget reserves the call's worst case before it is sent and settles it with what
it cost; a call that could exceed the budget is not made (`detente.costs.BudgetExceeded`).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, cast
from urllib.parse import urlsplit

import openai
from openai.lib._parsing import type_to_response_format_param
from openai.types.chat import ChatCompletion
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from detente.costs import METER, BudgetExceeded, CallMeter
from detente.errors import DetenteError, format_path
from detente.events import StructuredMode
from detente.redact import Redactor, strip_credentials, url_secrets

T = TypeVar("T", bound=BaseModel)

_PLACEHOLDER_KEY = "sk-no-key"
_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})
_MAX_MESSAGE = 300
_PREFLIGHT_TIMEOUT = 20.0


class EndpointConfig(BaseModel):
    """Where and how to call one model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    base_url: str | None = None
    """OpenAI-compatible base URL ending in `/v1`; None means OpenAI itself (or OPENAI_BASE_URL)."""
    api_key: str | None = Field(default=None, repr=False)
    """None means the OPENAI_API_KEY environment variable; local servers need none."""
    temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    seed: int | None = None
    max_tokens: int | None = Field(default=1024, ge=1)
    structured_mode: StructuredMode = "json_schema"
    max_retries_http: int = Field(default=2, ge=0)
    """openai `max_retries`: retries on connection errors, 408/409/429 and 5xx."""
    timeout: float = Field(default=60.0, gt=0.0)
    """Seconds per HTTP request."""
    validation_retries: int = Field(default=2, ge=0)
    """How many corrected answers to ask for after an invalid one."""
    max_connections: int = Field(default=64, ge=1)
    """Connections the async client may open to this endpoint at once (per event loop)."""


@dataclass(frozen=True)
class ChatResult(Generic[T]):
    """A validated answer and what it cost."""

    parsed: T
    raw_text: str
    """The text of the accepted reply."""
    prompt_tokens: int
    """Summed over all attempts."""
    completion_tokens: int
    """Summed over all attempts."""
    latency_s: float
    """Wall-clock seconds over all attempts."""
    attempts: int
    validation_errors: list[str] = field(default_factory=list)
    """One entry per rejected attempt, in order (empty when the first answer was valid)."""
    raw_texts: list[str] = field(default_factory=list)
    """The text of every reply, the accepted one last."""
    exchanges: list[Exchange] = field(default_factory=list)
    """Every HTTP exchange of the call (attempts and tool follow-ups), in order."""
    tool_calls: list[ToolCallRecord] = field(default_factory=list)


@dataclass(frozen=True)
class Exchange:
    """One request exactly as sent and what came back: the run's `prompts.jsonl` keeps these."""

    request: dict[str, Any]
    request_hash: str
    response: Any = None
    """The raw response body (parsed JSON when it is JSON, else the text); None on failure."""
    error: str | None = None
    latency_s: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    """The usage the response reported (0 without one)."""
    cached: bool = False
    """Answered from the response cache: nothing was sent."""


@dataclass(frozen=True)
class ToolCallRecord:
    name: str
    arguments: dict[str, Any]
    result: dict[str, Any] | None
    error: str | None = None


@dataclass(frozen=True)
class Tool:
    """A function the model may call (OpenAI tool calling), at most `max_calls` times a turn."""

    name: str
    description: str
    parameters: dict[str, Any]
    """A strict JSON schema of the arguments."""
    call: Callable[[dict[str, Any]], dict[str, Any]]
    """Runs the tool on validated arguments; raises ValueError for invalid ones."""
    max_calls: int = 3

    def spec(self) -> dict[str, Any]:
        return {"type": "function", "function": {
            "name": self.name, "description": self.description,
            "parameters": self.parameters, "strict": True}}


def request_hash(body: Mapping[str, Any]) -> str:
    """SHA-256 of a request body as canonical JSON (sorted keys, no spaces)."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


class LLMError(DetenteError):
    """Base class of the errors raised by this module."""


class LLMTransportError(LLMError):
    """The endpoint could not be reached or answered with an HTTP error."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.exchanges: list[Exchange] = []
        """The exchanges of the failed call (filled in by `LLMClient.complete`)."""


class InvalidResponseError(LLMError):
    """Every attempt produced an answer that did not validate against the response model."""

    def __init__(
        self,
        message: str,
        *,
        errors: list[str],
        raw_texts: list[str],
        prompt_tokens: int,
        completion_tokens: int,
        attempts: int,
        latency_s: float,
        exchanges: list[Exchange] | None = None,
        tool_calls: list[ToolCallRecord] | None = None,
    ) -> None:
        super().__init__(message)
        self.exchanges = exchanges or []
        self.tool_calls = tool_calls or []
        self.errors = errors
        self.raw_texts = raw_texts
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens
        self.attempts = attempts
        self.latency_s = latency_s


@dataclass(frozen=True)
class _Reply:
    text: str | None
    refusal: str | None
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    """The assistant message's tool calls, as the API gives them."""


class _Invalid(Exception):
    """An answer that must be corrected; the message is what the model is told."""


class _Malformed(Exception):
    """A response that is no chat completion (bad body, no choices): asked again as is."""


def is_local_url(url: str | None) -> bool:
    """True for an http(s) URL on the loopback interface."""
    if not url:
        return False
    host = urlsplit(url).hostname or ""
    return host in _LOCAL_HOSTS or host.startswith("127.")


def inline_refs(schema: Mapping[str, Any]) -> dict[str, Any]:
    """Return `schema` with every local `$ref` replaced by its definition and `$defs` dropped.

    Keywords next to a `$ref` win over the definition's. A recursive schema cannot be inlined:
    it is returned unchanged (deep-copied).
    """
    root = copy.deepcopy(dict(schema))
    defs: dict[str, Any] = {}
    for key in ("$defs", "definitions"):
        found = root.pop(key, None)
        if isinstance(found, dict):
            defs.update({f"#/{key}/{name}": value for name, value in found.items()})

    def resolve(node: Any, seen: tuple[str, ...]) -> Any:
        if isinstance(node, list):
            return [resolve(item, seen) for item in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str):
            if ref in seen:
                raise RecursionError(ref)
            if ref not in defs:
                raise KeyError(ref)
            merged = {**copy.deepcopy(defs[ref]), **{k: v for k, v in node.items() if k != "$ref"}}
            return resolve(merged, (*seen, ref))
        return {key: resolve(value, seen) for key, value in node.items()}

    try:
        inlined = resolve(root, ())
    except (RecursionError, KeyError):
        return copy.deepcopy(dict(schema))
    return cast(dict[str, Any], inlined)


_MAX_ENUMERATED_INTEGERS = 256


def grammar_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """`schema` adapted for llama.cpp's JSON-schema-to-grammar converter (`json_object` mode).

    - `$ref`s are inlined (`inline_refs`), so definition names cannot clash with rule names;
    - a bounded integer with at most 256 values becomes an `enum` of them, because the
      converter ignores `minimum`/`maximum` and small models do overshoot;
    - a `pattern` not anchored as `^...$` is dropped: the converter rejects it, and on any
      rejection the server silently falls back to unconstrained JSON for the whole schema.
    Pydantic validation still checks everything afterwards.
    """

    def bound(node: Mapping[str, Any], inclusive: str, exclusive: str, step: int) -> int | None:
        value = node.get(inclusive)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return math.ceil(value) if step > 0 else math.floor(value)
        value = node.get(exclusive)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return (math.floor(value) + 1) if step > 0 else (math.ceil(value) - 1)
        return None

    def adapt(node: Any) -> Any:
        if isinstance(node, list):
            return [adapt(item) for item in node]
        if not isinstance(node, dict):
            return node
        out = {key: adapt(value) for key, value in node.items()}
        if out.get("type") == "integer" and "enum" not in out and "const" not in out:
            low = bound(out, "minimum", "exclusiveMinimum", 1)
            high = bound(out, "maximum", "exclusiveMaximum", -1)
            step = out.get("multipleOf", 1)
            if (
                low is not None
                and high is not None
                and isinstance(step, int)
                and step > 0
                and 0 < high - low + 1 <= _MAX_ENUMERATED_INTEGERS
            ):
                out["enum"] = [v for v in range(low, high + 1) if v % step == 0]
        pattern = out.get("pattern")
        if isinstance(pattern, str) and not (pattern.startswith("^") and pattern.endswith("$")):
            del out["pattern"]
        return out

    return cast(dict[str, Any], adapt(inline_refs(schema)))


def format_validation_error(exc: ValidationError) -> str:
    """One line per problem: `path: message (got: input)`, short enough to show a model."""
    lines: list[str] = []
    for error in exc.errors(include_url=False):
        where = format_path([p for p in error["loc"] if isinstance(p, str | int)]) or "(root)"
        line = f"{where}: {error['msg']}"
        if error["type"] not in ("missing", "json_invalid"):
            got = json.dumps(error.get("input"), default=str)
            if len(got) > 80:
                got = got[:77] + "..."
            line += f" (got: {got})"
        lines.append(line)
    return "\n".join(lines)


def extract_json_object(text: str) -> Any:
    """The first JSON object embedded in `text`; raises ValueError if there is none."""
    decoder = json.JSONDecoder(strict=False)
    start = text.find("{")
    while start != -1:
        try:
            value, _ = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            pass
        else:
            if isinstance(value, dict):
                return value
        start = text.find("{", start + 1)
    raise ValueError("no JSON object found in the reply")


def _is_json_error(exc: ValidationError) -> bool:
    return any(error["type"] == "json_invalid" for error in exc.errors())


def _relaxed_json(text: str) -> str | None:
    """`text` re-encoded if it is JSON but for raw control characters inside strings.

    llama.cpp's schema grammar lets a string hold a raw newline, which strict JSON (and pydantic)
    rejects; the meaning is unambiguous, so such a reply is accepted.
    """
    try:
        return json.dumps(json.loads(text, strict=False))
    except ValueError:
        return None


def schema_instruction(schema: Mapping[str, Any]) -> str:
    """The text appended to a prompt in `prompt` mode."""
    return (
        "\n\nAnswer with one JSON object only, and no other text. "
        "It must conform to this JSON schema:\n" + json.dumps(schema, ensure_ascii=False)
    )


def _with_schema_instruction(
    messages: list[dict[str, Any]], schema: Mapping[str, Any]
) -> list[dict[str, Any]]:
    instruction = schema_instruction(schema)
    out = list(messages)
    for index in range(len(out) - 1, -1, -1):
        message = out[index]
        if message.get("role") not in ("system", "user"):
            continue
        content = message.get("content")
        if isinstance(content, list):
            new_content: Any = [*content, {"type": "text", "text": instruction.lstrip()}]
        else:
            new_content = f"{content or ''}{instruction}"
        out[index] = {**message, "content": new_content}
        return out
    return [*out, {"role": "user", "content": instruction.lstrip()}]


def _correction(error: str) -> str:
    return (
        "Your previous answer was not valid:\n"
        f"{error}\n"
        "Reply again with one corrected JSON object only, conforming to the schema."
    )


_TRACEBACK_MARKERS = ("Traceback (most recent call last)", '\n  File "', '  File "/')


def _short(text: str, limit: int = _MAX_MESSAGE) -> str:
    """One line of at most `limit` characters, without any traceback a server sent along."""
    for marker in _TRACEBACK_MARKERS:
        cut = text.find(marker)
        if cut > 0:
            text = text[:cut]
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _release(meter: CallMeter | None, hold: Any) -> None:
    if meter is not None:
        meter.release(hold)


def _root_os_error(exc: BaseException) -> OSError | None:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.strerror:
            return current
        for arg in getattr(current, "args", ()):
            if isinstance(arg, OSError) and arg.strerror:
                return arg
        current = current.__cause__ or current.__context__
    return None


def _status_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return _short(inner["message"])
        if isinstance(inner, str):
            return _short(inner)
        if isinstance(body.get("detail"), str):
            return _short(body["detail"])
    try:
        text = exc.response.text
    except Exception:
        text = ""
    return _short(text or exc.message)


class _Conversation(Generic[T]):
    """One structured answer being asked for: the messages so far and what each reply did.

    Shared by the sync and the async transport, which differ only in how a body is sent.
    """

    def __init__(self, client: LLMClient, messages: Sequence[Mapping[str, Any]],
                 response_model: type[T], tool: Tool | None) -> None:
        self.client = client
        self.model = response_model
        self.tool = tool
        self.convo: list[dict[str, Any]] = [dict(m) for m in messages]
        if client.config.structured_mode == "prompt":
            self.convo = _with_schema_instruction(
                self.convo, inline_refs(response_model.model_json_schema()))
        self.errors: list[str] = []
        self.raw_texts: list[str] = []
        self.exchanges: list[Exchange] = []
        self.tool_calls: list[ToolCallRecord] = []
        self.prompt_tokens = self.completion_tokens = 0
        self.started = time.monotonic()
        self.attempts = 0

    def going(self) -> bool:
        return self.attempts <= self.client.config.validation_retries

    def body(self) -> dict[str, Any]:
        tools_left = self.tool.max_calls - len(self.tool_calls) if self.tool is not None else 0
        return self.client.request_body(self.convo, self.model, self.tool, tools_left > 0)

    def malformed(self, exc: Exception) -> None:
        # Not the model's fault: ask the same again, without a correction.
        self.attempts += 1
        self.errors.append(str(exc))
        self.raw_texts.append("")

    def absorb(self, reply: _Reply) -> ChatResult[T] | None:
        """Take a reply in: run its tool calls, or validate it; the result once valid."""
        self.prompt_tokens += reply.prompt_tokens
        self.completion_tokens += reply.completion_tokens
        tool = self.tool
        if reply.tool_calls and tool is not None:
            self.convo = [*self.convo, {"role": "assistant", "content": reply.text,
                                        "tool_calls": reply.tool_calls}]
            for call in reply.tool_calls:
                record = self.client._run_tool(tool, call,
                                               allowed=len(self.tool_calls) < tool.max_calls)
                if record is not None:
                    self.tool_calls.append(record)
                answer = (record.result if record is not None and record.error is None
                          else {"error": record.error if record is not None else
                                f"no more {tool.name} calls this turn: answer now"})
                self.convo.append({"role": "tool", "tool_call_id": call.get("id", ""),
                                   "content": json.dumps(answer)})
            return None
        self.attempts += 1
        said = reply.text if reply.text is not None else (reply.refusal or "")
        self.raw_texts.append(said)
        try:
            parsed = self.client._validate(reply, self.model)
        except _Invalid as exc:
            self.errors.append(str(exc))
            self.convo = [*self.convo, {"role": "assistant", "content": said},
                          {"role": "user", "content": _correction(str(exc))}]
            return None
        return ChatResult(
            parsed=parsed, raw_text=said, prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            latency_s=time.monotonic() - self.started, attempts=self.attempts,
            validation_errors=self.errors, raw_texts=self.raw_texts,
            exchanges=self.exchanges, tool_calls=self.tool_calls,
        )

    def failed(self) -> InvalidResponseError:
        return InvalidResponseError(
            f"{self.client.config.model} gave no valid {self.model.__name__} in "
            f"{self.attempts} attempt(s); last error: {_short(self.errors[-1], 200)}",
            errors=self.errors, raw_texts=self.raw_texts, prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens, attempts=self.attempts,
            latency_s=time.monotonic() - self.started, exchanges=self.exchanges,
            tool_calls=self.tool_calls,
        )


DEFAULT_MAX_CONNECTIONS = 64
"""Open connections to one endpoint from one event loop (all runs of a sweep share them)."""
_ASYNC_CLIENTS: weakref.WeakKeyDictionary[Any, dict[tuple[Any, ...], openai.AsyncOpenAI]] = (
    weakref.WeakKeyDictionary())
"""Per event loop (gone with it): one async client per endpoint."""
_ASYNC_LOCK = threading.Lock()


_OPENAI_URL = "https://api.openai.com/v1"


def _sent_as_is(body: dict[str, Any]) -> dict[str, Any]:
    """Everything but the model, given to openai as `extra_body`, which it merges over the
    parameters untouched: the messages replace the empty list passed for them. The body is
    already the exact JSON to send (its hash is recorded), and openai's recursive transform of
    `messages` cost about 3 ms of CPU a call for nothing."""
    return {k: v for k, v in body.items() if k != "model"}
_SSL_CONTEXT: Any = None
_SSL_LOCK = threading.Lock()


def ssl_context() -> Any:
    """One TLS context for every client of the process, built as httpx builds its default
    (trust store, SSL_CERT_FILE): loading the trust store costs about 30 ms of CPU, once."""
    global _SSL_CONTEXT
    with _SSL_LOCK:  # not _ASYNC_LOCK: async_client calls this while holding that one
        if _SSL_CONTEXT is None:
            import httpx2

            _SSL_CONTEXT = httpx2.create_ssl_context()
        return _SSL_CONTEXT


def async_client(config: EndpointConfig, key: str) -> openai.AsyncOpenAI:
    """The async client for an endpoint in the running event loop, shared by every agent on
    the loop: at most `config.max_connections` connections to it at once, and openai's retries
    with backoff on 429, 5xx and timeouts."""
    import asyncio

    import httpx2

    loop = asyncio.get_running_loop()
    ident = (config.base_url, key, config.timeout, config.max_retries_http,
             config.max_connections)
    with _ASYNC_LOCK:
        clients = _ASYNC_CLIENTS.setdefault(loop, {})
        client = clients.get(ident)
        if client is None:
            limits = httpx2.Limits(max_connections=config.max_connections,
                                   max_keepalive_connections=config.max_connections)
            client = openai.AsyncOpenAI(
                api_key=key, base_url=config.base_url, max_retries=config.max_retries_http,
                timeout=config.timeout,
                http_client=openai.DefaultAsyncHttpx2Client(limits=limits,
                                                            timeout=config.timeout,
                                                            verify=ssl_context()))
            clients[ident] = client
        return client


class LLMClient:
    """Calls one endpoint. Thread-safe: one openai client per LLMClient, shared by all threads."""

    def __init__(self, config: EndpointConfig) -> None:
        self.config = config
        key = config.api_key or os.environ.get("OPENAI_API_KEY") or ""
        self._key = key or _PLACEHOLDER_KEY
        self._key_missing = not key
        self._redact = Redactor([key, *url_secrets(config.base_url)])
        self._sync: openai.OpenAI | None = None
        base = config.base_url or os.environ.get("OPENAI_BASE_URL") or _OPENAI_URL
        self.base_url: str = strip_credentials(base.rstrip("/")) or base
        self._lock = threading.Lock()
        self._strict_formats: dict[type[BaseModel], dict[str, Any]] = {}

    @property
    def _client(self) -> openai.OpenAI:
        """The blocking client, made on first use: runs on an event loop never need it."""
        with self._lock:
            if self._sync is None:
                self._sync = openai.OpenAI(
                    api_key=self._key, base_url=self.config.base_url,
                    max_retries=self.config.max_retries_http, timeout=self.config.timeout,
                    http_client=openai.DefaultHttpx2Client(timeout=self.config.timeout,
                                                           verify=ssl_context()))
            return self._sync

    def close(self) -> None:
        if self._sync is not None:
            self._sync.close()

    def __enter__(self) -> LLMClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- public ---------------------------------------------------------------------------

    def preflight(self) -> list[str]:
        """Check the endpoint answers and accepts the key; return the model ids it lists.

        Makes one cheap request (`GET /models`). A server without that route (404) passes.
        """
        try:
            page = self._client.models.list(timeout=min(self.config.timeout, _PREFLIGHT_TIMEOUT))
            return [m.id for m in page.data]
        except openai.NotFoundError:
            return []
        except openai.OpenAIError as exc:
            raise self._transport_error(exc) from None

    def complete(
        self,
        messages: Sequence[Mapping[str, Any]],
        response_model: type[T],
        tool: Tool | None = None,
    ) -> ChatResult[T]:
        """Ask for one JSON object matching `response_model`, correcting invalid answers.

        With a `tool`, the model may call it up to `tool.max_calls` times before it answers;
        each call is run here and its result sent back. Tool rounds are not answer attempts.
        """
        talk = _Conversation(self, messages, response_model, tool)
        while talk.going():
            try:
                reply = self._call(talk.body(), talk.exchanges)
            except _Malformed as exc:
                talk.malformed(exc)
                continue
            except (LLMTransportError, BudgetExceeded) as exc:
                exc.exchanges = talk.exchanges
                raise
            done = talk.absorb(reply)
            if done is not None:
                return done
        raise talk.failed()

    async def acomplete(
        self,
        messages: Sequence[Mapping[str, Any]],
        response_model: type[T],
        tool: Tool | None = None,
    ) -> ChatResult[T]:
        """`complete` on the async client: many calls share one event loop."""
        talk = _Conversation(self, messages, response_model, tool)
        while talk.going():
            try:
                reply = await self._acall(talk.body(), talk.exchanges)
            except _Malformed as exc:
                talk.malformed(exc)
                continue
            except (LLMTransportError, BudgetExceeded) as exc:
                exc.exchanges = talk.exchanges
                raise
            done = talk.absorb(reply)
            if done is not None:
                return done
        raise talk.failed()

    def first_request(
        self,
        messages: Sequence[Mapping[str, Any]],
        response_model: type[BaseModel],
        tool: Tool | None = None,
    ) -> dict[str, Any]:
        """The body `complete` would send first for these messages, exactly (nothing is sent):
        what an estimate of a call's size reads."""
        return _Conversation(self, messages, response_model, tool).body()

    def _run_tool(
        self, tool: Tool, call: Mapping[str, Any], *, allowed: bool
    ) -> ToolCallRecord | None:
        function = call.get("function") or {}
        name = str(function.get("name", ""))
        if not allowed:
            return None
        try:
            arguments = json.loads(function.get("arguments") or "{}")
        except ValueError:
            return ToolCallRecord(name, {}, None, "the arguments are not valid JSON")
        if not isinstance(arguments, dict):
            return ToolCallRecord(name, {}, None, "the arguments must be a JSON object")
        if name != tool.name:
            return ToolCallRecord(name, arguments, None, f"unknown tool {name!r}; the only "
                                  f"tool is {tool.name}")
        try:
            return ToolCallRecord(name, arguments, tool.call(arguments))
        except ValueError as exc:
            return ToolCallRecord(name, arguments, None, _short(str(exc), 300))

    # --- internals ------------------------------------------------------------------------

    def request_body(
        self,
        messages: list[dict[str, Any]],
        response_model: type[BaseModel],
        tool: Tool | None = None,
        tools_allowed: bool = True,
    ) -> dict[str, Any]:
        """The exact JSON body of one chat completion request."""
        body: dict[str, Any] = {
            "model": self.config.model,
            "messages": messages,
            "temperature": self.config.temperature,
        }
        if self.config.seed is not None:
            body["seed"] = self.config.seed
        if self.config.max_tokens is not None:
            body["max_tokens"] = self.config.max_tokens
        mode = self.config.structured_mode
        if mode == "json_schema":
            body["response_format"] = self._strict_format(response_model)
        elif mode == "json_object":
            body["response_format"] = {
                "type": "json_object",
                "schema": grammar_schema(response_model.model_json_schema()),
            }
        if tool is not None:
            body["tools"] = [tool.spec()]
            body["tool_choice"] = "auto" if tools_allowed else "none"
        return body

    def _strict_format(self, response_model: type[BaseModel]) -> dict[str, Any]:
        """OpenAI strict structured outputs: openai's own strict schema when it can make one,
        else the plain schema marked strict."""
        with self._lock:
            known = self._strict_formats.get(response_model)
        if known is None:
            try:
                known = cast(dict[str, Any], type_to_response_format_param(response_model))
            except (TypeError, ValueError, KeyError, AssertionError):
                known = {
                    "type": "json_schema",
                    "json_schema": {
                        "name": response_model.__name__,
                        "schema": response_model.model_json_schema(),
                        "strict": True,
                    },
                }
            with self._lock:
                self._strict_formats[response_model] = known
        return known

    def _call(self, body: dict[str, Any], exchanges: list[Exchange]) -> _Reply:
        """Send one request body exactly as given (unless the cache answers it, or the budget
        refuses it); log the exchange."""
        digest = request_hash(body)
        meter = METER.get()
        hit = self._cached(meter, body, digest, exchanges)
        if hit is not None:
            return hit
        hold = meter.reserve(self.config.model, body, self.config.max_tokens) \
            if meter is not None else None
        started = time.monotonic()
        try:
            raw = self._client.chat.completions.with_raw_response.create(
                model=body["model"], messages=[], extra_body=_sent_as_is(body))
            text = raw.text
        except openai.OpenAIError as exc:
            _release(meter, hold)
            raise self._failed(exc, body, digest, started, exchanges) from None
        except BaseException:
            _release(meter, hold)
            raise
        return self._answered(meter, hold, text, body, digest, time.monotonic() - started,
                              exchanges)

    async def _acall(self, body: dict[str, Any], exchanges: list[Exchange]) -> _Reply:
        digest = request_hash(body)
        meter = METER.get()
        hit = self._cached(meter, body, digest, exchanges)
        if hit is not None:
            return hit
        try:
            hold = meter.reserve(self.config.model, body, self.config.max_tokens) \
                if meter is not None else None
        except BudgetExceeded:
            if meter is not None:
                await meter.drain()  # the turns this stop cancels keep what they paid for
            raise
        started = time.monotonic()
        client = self._async_client()
        try:
            raw = await client.chat.completions.with_raw_response.create(
                model=body["model"], messages=[], extra_body=_sent_as_is(body))
            text = raw.text
        except openai.OpenAIError as exc:
            _release(meter, hold)
            raise self._failed(exc, body, digest, started, exchanges) from None
        except BaseException:  # cancelled (Ctrl-C): the answer never came
            _release(meter, hold)
            raise
        return self._answered(meter, hold, text, body, digest, time.monotonic() - started,
                              exchanges)

    def _cached(self, meter: CallMeter | None, body: dict[str, Any], digest: str,
                exchanges: list[Exchange]) -> _Reply | None:
        """The cache's answer to this request, if the run has a cache and it has one."""
        if meter is None:
            return None
        text = meter.lookup(self.base_url, digest)
        if text is None:
            return None
        return self._reply(text, body, digest, 0.0, exchanges, cached=True)

    def _answered(self, meter: CallMeter | None, hold: Any, text: str, body: dict[str, Any],
                  digest: str, latency: float, exchanges: list[Exchange]) -> _Reply:
        """A response came back: settle its cost, and keep it in the cache if it is a chat
        completion (never an error, never a malformed body)."""
        try:
            reply = self._reply(text, body, digest, latency, exchanges)
        except _Malformed:
            if meter is not None:
                meter.settle(hold, self.config.model, None, None)
            raise
        if meter is not None:
            meter.settle(hold, self.config.model, reply.prompt_tokens, reply.completion_tokens)
            meter.store(self.base_url, digest, self.config.model, self._redact(text),
                        reply.prompt_tokens, reply.completion_tokens)
        return reply

    def _async_client(self) -> openai.AsyncOpenAI:
        """The async client of this endpoint in the running event loop (shared by every agent
        of every run on the loop, so a connection limit holds per endpoint)."""
        return async_client(self.config, self._key)

    def _failed(self, exc: openai.OpenAIError, body: dict[str, Any], digest: str,
                started: float, exchanges: list[Exchange]) -> LLMTransportError:
        error = self._transport_error(exc)
        exchanges.append(Exchange(body, digest, None, str(error), time.monotonic() - started))
        return error

    def _reply(self, text: str, body: dict[str, Any], digest: str, latency: float,
               exchanges: list[Exchange], cached: bool = False) -> _Reply:
        try:
            payload: Any = json.loads(self._redact(text))
        except ValueError:
            payload = self._redact(text)
        try:
            completion = ChatCompletion.model_validate_json(text)
        except ValidationError as exc:
            exchanges.append(Exchange(body, digest, payload, None, latency, cached=cached))
            raise _Malformed(
                f"(malformed) {self.base_url} answered with a malformed chat completion: "
                f"{_short(format_validation_error(exc), 200)}"
            ) from None
        usage = completion.usage
        prompt_tokens = usage.prompt_tokens if usage else 0
        completion_tokens = usage.completion_tokens if usage else 0
        exchanges.append(Exchange(body, digest, payload, None, latency, prompt_tokens,
                                  completion_tokens, cached))
        if not completion.choices:
            raise _Malformed(f"(malformed) {self.base_url} answered with no choices")
        choice = completion.choices[0]
        calls = [c.model_dump(mode="json", exclude_none=True)
                 for c in (choice.message.tool_calls or [])]
        return _Reply(
            text=choice.message.content,
            refusal=choice.message.refusal,
            finish_reason=choice.finish_reason,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            tool_calls=calls,
        )

    def _validate(self, reply: _Reply, response_model: type[T]) -> T:
        if reply.refusal:
            raise _Invalid(f"(refusal) the model refused: {_short(reply.refusal, 200)}")
        if reply.text is None or not reply.text.strip():
            raise _Invalid("(empty) the reply was empty; a JSON object was expected")
        cut = (
            f" (the reply was cut off at max_tokens={self.config.max_tokens}; answer shorter)"
            if reply.finish_reason == "length"
            else ""
        )
        text = reply.text
        if self.config.structured_mode == "prompt":
            try:
                text = json.dumps(extract_json_object(text))
            except ValueError as exc:
                raise _Invalid(f"(json) {exc}{cut}") from None
        try:
            return response_model.model_validate_json(text)
        except ValidationError as exc:
            relaxed = _relaxed_json(text) if _is_json_error(exc) else None
            if relaxed is None:
                raise _Invalid(format_validation_error(exc) + cut) from None
        try:
            return response_model.model_validate_json(relaxed)
        except ValidationError as exc:
            raise _Invalid(format_validation_error(exc) + cut) from None

    def _transport_error(self, exc: openai.OpenAIError) -> LLMTransportError:
        error = self._describe(exc)
        redacted = LLMTransportError(self._redact(str(error)), status_code=error.status_code)
        return redacted

    def _describe(self, exc: openai.OpenAIError) -> LLMTransportError:
        where = self.base_url
        if isinstance(exc, openai.APITimeoutError):
            return LLMTransportError(
                f"{where} did not answer within {self.config.timeout:g} s (timeout; raise it "
                "with --timeout)"
            )
        if isinstance(exc, openai.APIConnectionError):
            cause = _root_os_error(exc)
            reason = cause.strerror.lower() if cause and cause.strerror else _short(str(exc), 120)
            return LLMTransportError(f"cannot reach {where}: {reason}")
        if isinstance(exc, openai.AuthenticationError):
            hint = (
                "no API key was given: set OPENAI_API_KEY or the endpoint's api_key"
                if self._key_missing
                else "check the API key"
            )
            return LLMTransportError(
                f"{where} rejected the request (HTTP 401: {_status_message(exc)}); {hint}",
                status_code=401,
            )
        if isinstance(exc, openai.APIStatusError):
            what = f"model {self.config.model!r}: " if exc.status_code == 404 else ""
            detail = _status_message(exc)
            hint = ""
            if "response_format" in detail and self.config.structured_mode != "prompt":
                hint = (
                    f" (the server may not support structured_mode="
                    f"{self.config.structured_mode!r}; try 'json_object' or 'prompt')"
                )
            return LLMTransportError(
                f"{where} answered HTTP {exc.status_code}: {what}{detail}{hint}",
                status_code=exc.status_code,
            )
        return LLMTransportError(f"{where}: {_short(str(exc), 200)}")
