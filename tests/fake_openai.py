"""A scripted, protocol-faithful fake of the OpenAI chat API on real HTTP at 127.0.0.1.

Use it as a context manager; it serves on a random free port from a background thread:

    with FakeOpenAI([lambda body: '{"ok": true}', 500, Reply("{}", refusal="no")]) as fake:
        client = OpenAI(base_url=fake.base_url, api_key="sk-test", max_retries=0)
        ...
        assert fake.requests[0]["response_format"] == {...}

Each `POST /v1/chat/completions` consumes the next entry of the script. An entry is a responder:
a callable receiving the parsed request body and returning what to answer, or that answer given
directly. An answer is

- `str`: the assistant message content (finish_reason "stop");
- `Reply`: content with a chosen finish_reason, refusal or token counts;
- `int`: an HTTP error status, answered with an OpenAI-shaped error body;
- `HTTPError`: an error status with a chosen message.

When the script is exhausted the fake answers 500 ("script exhausted"), so a test that makes more
calls than it scripted fails loudly. Unless a `Reply` gives them, token counts are about four
characters a token, as OpenAI's tokenizers average on English and JSON: the prompt counts every
message's text (16 characters more per message for its role), the answer's schema
(`response_format`) and the tools, as a real endpoint bills them; the completion counts the
reply's text (`count_prompt_tokens`, `count_tokens`). Every request body is recorded in
`requests` (chat completions only) and every request, including `GET /v1/models`, in `log`.
If `api_key` is given, any request without `Authorization: Bearer <api_key>` is answered 401 as
OpenAI does.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any


@dataclass(frozen=True)
class Reply:
    """A scripted assistant reply with full control over the choice and the usage."""

    content: str | None
    finish_reason: str = "stop"
    refusal: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    tool_calls: list[dict[str, Any]] | None = None
    """Function calls, as `{"name": ..., "arguments": {...}}`; ids are made up here."""


@dataclass(frozen=True)
class HTTPError:
    """A scripted HTTP error."""

    status: int
    message: str = ""
    type: str = ""
    code: str | None = None


@dataclass(frozen=True)
class Raw:
    """A response body sent as is (malformed JSON, a completion without choices, ...)."""

    body: str
    status: int = 200


@dataclass(frozen=True)
class Reset:
    """The connection is closed without any response (a crash or a reset)."""


@dataclass(frozen=True)
class Stall:
    """Wait `seconds`, then answer `then` (a client with a shorter timeout gives up first)."""

    seconds: float
    then: Any = None


Answer = str | Reply | int | HTTPError | Raw | Reset | Stall
Responder = Callable[[dict[str, Any]], Answer] | Answer


@dataclass(frozen=True)
class LoggedRequest:
    """One HTTP request; header names are lower-cased."""

    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any] | None


_ERROR_TYPES = {
    400: ("invalid_request_error", "Bad request."),
    401: ("invalid_request_error", "Incorrect API key provided."),
    403: ("invalid_request_error", "Permission denied."),
    404: ("invalid_request_error", "Not found."),
    429: ("rate_limit_error", "Rate limit reached."),
    500: ("server_error", "The server had an error while processing your request."),
    503: ("server_error", "The engine is currently overloaded."),
}


CHARS_PER_TOKEN = 4


def count_tokens(text: str) -> int:
    """A deterministic token count: about four characters a token, rounded up."""
    return -(-len(text) // CHARS_PER_TOKEN)


def count_prompt_tokens(body: Mapping[str, Any]) -> int:
    """Prompt tokens of a chat request: its messages (with 16 characters each for the role),
    the answer's schema and the tools, at `count_tokens`'s rate."""
    size = 0
    for message in body.get("messages", []):
        size += 16 + len(_text_of(message.get("content")))
        if message.get("tool_calls"):
            size += len(json.dumps(message["tool_calls"], separators=(",", ":")))
    for key in ("response_format", "tools"):
        if body.get(key) is not None:
            size += len(json.dumps(body[key], separators=(",", ":"), ensure_ascii=False))
    return -(-size // CHARS_PER_TOKEN)


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else json.dumps(content)


def prompt_text(body: Mapping[str, Any]) -> str:
    """Every text part of a chat request's messages, joined."""
    parts: list[str] = []
    for message in body.get("messages", []):
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "\n".join(parts)


@dataclass
class _State:
    script: list[Responder]
    api_key: str | None
    model_ids: list[str]
    requests: list[dict[str, Any]] = field(default_factory=list)
    log: list[LoggedRequest] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    served: int = 0


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: with Nagle's algorithm the body waited for the
    # client's delayed ACK of the headers (40 ms on Linux), now and then, on a kept-alive
    # connection, which timing benchmarks then counted as the harness's.
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # silence stderr access logs
        return

    # --- plumbing -------------------------------------------------------------------------

    def _send_json(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-request-id", f"req_{uuid.uuid4().hex[:24]}")
        self.end_headers()
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (e.g. a timeout)
            self.close_connection = True

    def _send_error(self, error: HTTPError) -> None:
        default_type, default_message = _ERROR_TYPES.get(error.status, ("api_error", "Error."))
        self._send_json(
            error.status,
            {
                "error": {
                    "message": error.message or default_message,
                    "type": error.type or default_type,
                    "param": None,
                    "code": error.code,
                }
            },
        )

    def _read_body(self) -> dict[str, Any] | None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return None
        parsed = json.loads(raw)
        return parsed if isinstance(parsed, dict) else {"_non_object_body": parsed}

    def _authorized(self) -> bool:
        key = self.server.state.api_key
        return key is None or self.headers.get("Authorization") == f"Bearer {key}"

    def _record(self, body: dict[str, Any] | None) -> None:
        with self.server.state.lock:
            self.server.state.log.append(
                LoggedRequest(
                    self.command,
                    self.path,
                    {k.lower(): v for k, v in self.headers.items()},
                    body,
                )
            )

    # --- routes ---------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._record(None)
        if not self._authorized():
            self._send_error(HTTPError(401))
            return
        if self.path.rstrip("/") == "/v1/models":
            self._send_json(
                200,
                {
                    "object": "list",
                    "data": [
                        {"id": m, "object": "model", "created": 0, "owned_by": "fake"}
                        for m in self.server.state.model_ids
                    ],
                },
            )
            return
        self._send_error(HTTPError(404, f"Unknown path {self.path}"))

    def do_POST(self) -> None:
        try:
            body = self._read_body()
        except json.JSONDecodeError:
            self._record(None)
            self._send_error(HTTPError(400, "We could not parse the JSON body of your request."))
            return
        self._record(body)
        if not self._authorized():
            self._send_error(HTTPError(401))
            return
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._send_error(HTTPError(404, f"Unknown path {self.path}"))
            return
        if body is None or "messages" not in body or "model" not in body:
            self._send_error(HTTPError(400, "'messages' and 'model' are required."))
            return
        if body.get("stream"):
            self._send_error(HTTPError(400, "The fake server does not stream."))
            return

        state = self.server.state
        with state.lock:
            state.requests.append(body)
            responder: Responder | None = (
                state.script[state.served] if state.served < len(state.script) else None
            )
            state.served += 1
        if responder is None:
            self._send_error(HTTPError(500, "fake server: script exhausted"))
            return
        answer = responder(body) if callable(responder) else responder
        while isinstance(answer, Stall):
            time.sleep(answer.seconds)
            answer = answer.then if answer.then is not None else "{}"
        if isinstance(answer, bool):  # bool is an int: refuse the ambiguity
            raise TypeError("a responder returned a bool")
        if isinstance(answer, Reset):
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(2)
            return
        if isinstance(answer, Raw):
            data = answer.body.encode()
            self.send_response(answer.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            try:
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True
            return
        if isinstance(answer, int):
            self._send_error(HTTPError(answer))
            return
        if isinstance(answer, HTTPError):
            self._send_error(answer)
            return
        reply = answer if isinstance(answer, Reply) else Reply(answer)
        self._send_json(200, self._completion(body, reply))

    def _completion(self, body: dict[str, Any], reply: Reply) -> dict[str, Any]:
        prompt_tokens = (
            reply.prompt_tokens
            if reply.prompt_tokens is not None
            else count_prompt_tokens(body)
        )
        completion_tokens = (
            reply.completion_tokens
            if reply.completion_tokens is not None
            else count_tokens(reply.content or reply.refusal or "")
        )
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "system_fingerprint": "fp_fake",
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": reply.content,
                        "refusal": reply.refusal,
                        **({"tool_calls": [
                            {"id": f"call_{k}_{uuid.uuid4().hex[:8]}", "type": "function",
                             "function": {"name": call["name"],
                                          "arguments": json.dumps(call["arguments"])}}
                            for k, call in enumerate(reply.tool_calls)]}
                           if reply.tool_calls else {}),
                    },
                    "logprobs": None,
                    "finish_reason": "tool_calls" if reply.tool_calls else reply.finish_reason,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: _State


class FakeOpenAI:
    """A scripted fake OpenAI server; see the module docstring."""

    def __init__(
        self,
        script: Sequence[Responder] = (),
        *,
        api_key: str | None = None,
        model_ids: Sequence[str] = ("fake-model",),
    ) -> None:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.state = _State(list(script), api_key, list(model_ids))
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.02},
            name="fake-openai",
            daemon=True,
        )
        self._started = False

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Bodies of every chat completion request received, in order."""
        with self._server.state.lock:
            return list(self._server.state.requests)

    @property
    def log(self) -> list[LoggedRequest]:
        """Every HTTP request received, any path."""
        with self._server.state.lock:
            return list(self._server.state.log)

    def extend(self, *responders: Responder) -> None:
        """Append more responders to the script."""
        with self._server.state.lock:
            self._server.state.script.extend(responders)

    def start(self) -> FakeOpenAI:
        if not self._started:
            self._thread.start()
            self._started = True
        return self

    def stop(self) -> None:
        if self._started:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._started = False
        self._server.server_close()

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
