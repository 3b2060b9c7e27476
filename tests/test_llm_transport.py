"""LLMClient against a scripted fake OpenAI server on real HTTP."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from enum import StrEnum
from typing import Any, Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field

from detente.llm import (
    ChatResult,
    EndpointConfig,
    InvalidResponseError,
    LLMClient,
    LLMTransportError,
    StructuredMode,
    extract_json_object,
    grammar_schema,
    inline_refs,
)
from fake_openai import FakeOpenAI, HTTPError, Reply

MODES: list[StructuredMode] = ["json_schema", "json_object", "prompt"]


class Decision(StrEnum):
    accept = "accept"
    reject = "reject"
    counter = "counter"


class Offer(BaseModel):
    issue: str
    value: int = Field(ge=0, le=100)


class Answer(BaseModel):
    decision: Decision
    offer: Offer
    reason: str


VALID = {"decision": "counter", "offer": {"issue": "border", "value": 40}, "reason": "fair"}
VALID_TEXT = json.dumps(VALID)
INVALID_TEXT = json.dumps({**VALID, "offer": {"issue": "border", "value": 140}})

MESSAGES: list[dict[str, Any]] = [
    {"role": "system", "content": "You negotiate for Ruritania."},
    {"role": "user", "content": "Make your move."},
]


def _config(base_url: str, mode: StructuredMode, **overrides: Any) -> EndpointConfig:
    values: dict[str, Any] = {
        "model": "fake-model",
        "base_url": base_url,
        "api_key": "sk-test",
        "structured_mode": mode,
        "max_retries_http": 0,
        "timeout": 10.0,
        "temperature": 0.2,
        "seed": 7,
        "max_tokens": 256,
    }
    values.update(overrides)
    return EndpointConfig(**values)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


# --- what each mode sends -----------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_valid_answer(fake: FakeOpenAI, mode: StructuredMode) -> None:
    fake.extend(Reply(VALID_TEXT, prompt_tokens=50, completion_tokens=20))
    with LLMClient(_config(fake.base_url, mode)) as client:
        result = client.complete(MESSAGES, Answer)
    assert isinstance(result, ChatResult)
    assert result.parsed == Answer.model_validate(VALID)
    assert result.parsed.decision is Decision.counter
    assert result.raw_text == VALID_TEXT
    assert (result.prompt_tokens, result.completion_tokens) == (50, 20)
    assert result.attempts == 1
    assert result.validation_errors == []
    assert result.latency_s > 0
    (body,) = fake.requests
    assert body["model"] == "fake-model"
    assert body["temperature"] == 0.2
    assert body["seed"] == 7
    assert body["max_tokens"] == 256
    assert body.get("stream") in (None, False)


def test_json_schema_sends_strict_schema(fake: FakeOpenAI) -> None:
    fake.extend(VALID_TEXT)
    with LLMClient(_config(fake.base_url, "json_schema")) as client:
        client.complete(MESSAGES, Answer)
    rf = fake.requests[0]["response_format"]
    assert rf["type"] == "json_schema"
    assert rf["json_schema"]["name"] == "Answer"
    assert rf["json_schema"]["strict"] is True
    schema = rf["json_schema"]["schema"]
    assert schema["additionalProperties"] is False
    assert sorted(schema["required"]) == ["decision", "offer", "reason"]
    assert schema["$defs"]["Decision"]["enum"] == ["accept", "reject", "counter"]
    assert schema["$defs"]["Offer"]["additionalProperties"] is False
    assert fake.requests[0]["messages"] == MESSAGES


def test_json_object_sends_inlined_schema(fake: FakeOpenAI) -> None:
    fake.extend(VALID_TEXT)
    with LLMClient(_config(fake.base_url, "json_object")) as client:
        client.complete(MESSAGES, Answer)
    rf = fake.requests[0]["response_format"]
    assert rf == {"type": "json_object", "schema": grammar_schema(Answer.model_json_schema())}
    text = json.dumps(rf)
    assert "$ref" not in text and "$defs" not in text
    assert rf["schema"]["properties"]["decision"]["enum"] == ["accept", "reject", "counter"]
    value = rf["schema"]["properties"]["offer"]["properties"]["value"]
    assert value["maximum"] == 100
    assert value["enum"] == list(range(101))
    assert fake.requests[0]["messages"] == MESSAGES


def test_prompt_mode_sends_no_response_format(fake: FakeOpenAI) -> None:
    fake.extend(f"Here is my move:\n```json\n{VALID_TEXT}\n```\nThanks.")
    with LLMClient(_config(fake.base_url, "prompt")) as client:
        result = client.complete(MESSAGES, Answer)
    assert result.parsed.offer.value == 40
    body = fake.requests[0]
    assert "response_format" not in body
    sent = body["messages"]
    assert sent[0] == MESSAGES[0]
    assert sent[1]["content"].startswith("Make your move.")
    assert "one JSON object only" in sent[1]["content"]
    assert '"accept", "reject", "counter"' in sent[1]["content"]
    assert len(sent) == len(MESSAGES)


def test_prompt_mode_appends_to_last_system_or_user_message(fake: FakeOpenAI) -> None:
    fake.extend(VALID_TEXT)
    messages = [*MESSAGES, {"role": "assistant", "content": "Let me think."}]
    with LLMClient(_config(fake.base_url, "prompt")) as client:
        client.complete(messages, Answer)
    sent = fake.requests[0]["messages"]
    assert "JSON schema" in sent[1]["content"]
    assert sent[2] == messages[2]


def test_callers_messages_are_not_mutated(fake: FakeOpenAI) -> None:
    fake.extend(INVALID_TEXT, VALID_TEXT)
    messages = [dict(m) for m in MESSAGES]
    with LLMClient(_config(fake.base_url, "prompt")) as client:
        client.complete(messages, Answer)
    assert messages == MESSAGES


def test_optional_sampling_fields_are_omitted(fake: FakeOpenAI) -> None:
    fake.extend(VALID_TEXT)
    config = _config(fake.base_url, "json_object", seed=None, max_tokens=None)
    with LLMClient(config) as client:
        client.complete(MESSAGES, Answer)
    assert "seed" not in fake.requests[0]
    assert "max_tokens" not in fake.requests[0]


# --- validation retries -------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_invalid_then_valid(fake: FakeOpenAI, mode: StructuredMode) -> None:
    fake.extend(
        Reply(INVALID_TEXT, prompt_tokens=10, completion_tokens=3),
        Reply(VALID_TEXT, prompt_tokens=20, completion_tokens=4),
    )
    with LLMClient(_config(fake.base_url, mode)) as client:
        result = client.complete(MESSAGES, Answer)
    assert result.attempts == 2
    assert result.parsed.offer.value == 40
    assert (result.prompt_tokens, result.completion_tokens) == (30, 7)
    assert len(result.validation_errors) == 1
    assert "offer.value" in result.validation_errors[0]
    assert "less than or equal to 100" in result.validation_errors[0]
    assert result.raw_texts == [INVALID_TEXT, VALID_TEXT]

    first, second = fake.requests
    n = len(first["messages"])
    assert second["messages"][:n] == first["messages"]
    assistant, correction = second["messages"][n:]
    assert assistant == {"role": "assistant", "content": INVALID_TEXT}
    assert correction["role"] == "user"
    assert "offer.value" in correction["content"]
    assert "less than or equal to 100" in correction["content"]
    assert "(got: 140)" in correction["content"]
    assert second.get("response_format") == first.get("response_format")


@pytest.mark.parametrize("mode", MODES)
def test_persistently_invalid(fake: FakeOpenAI, mode: StructuredMode) -> None:
    fake.extend(*[Reply(INVALID_TEXT, prompt_tokens=10, completion_tokens=5)] * 3)
    with (
        LLMClient(_config(fake.base_url, mode, validation_retries=2)) as client,
        pytest.raises(InvalidResponseError) as info,
    ):
        client.complete(MESSAGES, Answer)
    err = info.value
    assert err.attempts == 3
    assert len(err.errors) == 3
    assert err.raw_texts == [INVALID_TEXT] * 3
    assert (err.prompt_tokens, err.completion_tokens) == (30, 15)
    assert "Answer" in str(err) and "3 attempt" in str(err)
    assert len(fake.requests) == 3
    assert len(fake.requests[2]["messages"]) == len(fake.requests[0]["messages"]) + 4


def test_no_validation_retries(fake: FakeOpenAI) -> None:
    fake.extend(INVALID_TEXT)
    with (
        LLMClient(_config(fake.base_url, "json_object", validation_retries=0)) as client,
        pytest.raises(InvalidResponseError) as info,
    ):
        client.complete(MESSAGES, Answer)
    assert info.value.attempts == 1
    assert len(fake.requests) == 1


@pytest.mark.parametrize("mode", MODES)
def test_malformed_json_is_fed_back(fake: FakeOpenAI, mode: StructuredMode) -> None:
    fake.extend('{"decision": "counter", "offer": {"issue": "bo', VALID_TEXT)
    with LLMClient(_config(fake.base_url, mode)) as client:
        result = client.complete(MESSAGES, Answer)
    assert result.attempts == 2
    correction = fake.requests[1]["messages"][-1]["content"]
    assert "JSON" in correction


def test_refusal_is_fed_back(fake: FakeOpenAI) -> None:
    fake.extend(Reply(None, refusal="I can't help with that."), VALID_TEXT)
    with LLMClient(_config(fake.base_url, "json_schema")) as client:
        result = client.complete(MESSAGES, Answer)
    assert result.attempts == 2
    assert "refused" in result.validation_errors[0]
    assistant = fake.requests[1]["messages"][-2]
    assert assistant == {"role": "assistant", "content": "I can't help with that."}


def test_truncated_reply_says_so(fake: FakeOpenAI) -> None:
    fake.extend(Reply('{"decision": "acc', finish_reason="length"), VALID_TEXT)
    with LLMClient(_config(fake.base_url, "json_schema")) as client:
        result = client.complete(MESSAGES, Answer)
    assert result.attempts == 2
    assert "max_tokens=256" in result.validation_errors[0]


def test_empty_reply_is_invalid(fake: FakeOpenAI) -> None:
    fake.extend("", VALID_TEXT)
    with LLMClient(_config(fake.base_url, "json_object")) as client:
        result = client.complete(MESSAGES, Answer)
    assert "empty" in result.validation_errors[0]


class _ForeignRef(BaseModel):
    """A schema openai's strict converter rejects (a non-local `$ref` next to other keys)."""

    model_config = ConfigDict(json_schema_extra={"$ref": "https://example.invalid/s.json"})
    answer: Literal["yes", "no"]


def test_json_schema_falls_back_to_create_when_not_strict_compatible(fake: FakeOpenAI) -> None:
    fake.extend('{"answer": "yes"}')
    with LLMClient(_config(fake.base_url, "json_schema")) as client:
        result = client.complete(MESSAGES, _ForeignRef)
    assert result.parsed.answer == "yes"
    rf = fake.requests[0]["response_format"]
    assert rf == {
        "type": "json_schema",
        "json_schema": {
            "name": "_ForeignRef",
            "schema": _ForeignRef.model_json_schema(),
            "strict": True,
        },
    }


# --- transport failures -------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_http_500_is_a_transport_error(fake: FakeOpenAI, mode: StructuredMode) -> None:
    fake.extend(500)
    with (
        LLMClient(_config(fake.base_url, mode)) as client,
        pytest.raises(LLMTransportError) as info,
    ):
        client.complete(MESSAGES, Answer)
    message = str(info.value)
    assert message.startswith(f"{fake.base_url} answered HTTP 500")
    assert "Traceback" not in message and "\n" not in message
    assert info.value.status_code == 500
    assert len(fake.requests) == 1


def test_http_error_message_is_shown(fake: FakeOpenAI) -> None:
    fake.extend(HTTPError(400, "'response_format' is invalid"))
    with (
        LLMClient(_config(fake.base_url, "json_schema")) as client,
        pytest.raises(LLMTransportError, match="HTTP 400: 'response_format' is invalid"),
    ):
        client.complete(MESSAGES, Answer)


def test_http_500_is_retried_by_openai_when_asked(fake: FakeOpenAI) -> None:
    fake.extend(500, VALID_TEXT)
    with LLMClient(_config(fake.base_url, "json_object", max_retries_http=1)) as client:
        result = client.complete(MESSAGES, Answer)
    assert result.attempts == 1
    assert len(fake.requests) == 2


@pytest.mark.parametrize("mode", MODES)
def test_unreachable_port(mode: StructuredMode) -> None:
    port = _free_port()
    with (
        LLMClient(_config(f"http://127.0.0.1:{port}/v1", mode)) as client,
        pytest.raises(LLMTransportError) as info,
    ):
        client.complete(MESSAGES, Answer)
    assert str(info.value) == f"cannot reach http://127.0.0.1:{port}/v1: connection refused"


def test_timeout_is_a_transport_error(fake: FakeOpenAI) -> None:
    def slow(body: dict[str, Any]) -> str:
        time.sleep(1.5)
        return VALID_TEXT

    fake.extend(slow)
    with (
        LLMClient(_config(fake.base_url, "json_object", timeout=0.3)) as client,
        pytest.raises(LLMTransportError, match=r"did not answer within 0\.3 s"),
    ):
        client.complete(MESSAGES, Answer)


def test_401_is_a_transport_error(fake: FakeOpenAI) -> None:
    fake.extend(401)
    with (
        LLMClient(_config(fake.base_url, "json_schema")) as client,
        pytest.raises(LLMTransportError, match="HTTP 401") as info,
    ):
        client.complete(MESSAGES, Answer)
    assert info.value.status_code == 401
    assert "check the API key" in str(info.value)


# --- preflight ----------------------------------------------------------------------------


def test_preflight_lists_models() -> None:
    with (
        FakeOpenAI(api_key="sk-test", model_ids=["a", "b"]) as fake,
        LLMClient(_config(fake.base_url, "json_object")) as client,
    ):
        assert client.preflight() == ["a", "b"]
        (request,) = fake.log
        assert (request.method, request.path) == ("GET", "/v1/models")
        assert request.headers["authorization"] == "Bearer sk-test"
        assert fake.requests == []


def test_preflight_reports_a_missing_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with (
        FakeOpenAI(api_key="sk-right") as fake,
        LLMClient(_config(fake.base_url, "json_schema", api_key=None)) as client,
        pytest.raises(LLMTransportError) as info,
    ):
        client.preflight()
    message = str(info.value)
    assert "HTTP 401" in message
    assert "no API key was given: set OPENAI_API_KEY" in message
    assert info.value.status_code == 401


def test_preflight_reports_a_wrong_key() -> None:
    with (
        FakeOpenAI(api_key="sk-right") as fake,
        LLMClient(_config(fake.base_url, "json_schema", api_key="sk-wrong")) as client,
        pytest.raises(LLMTransportError, match="check the API key"),
    ):
        client.preflight()


def test_preflight_unreachable() -> None:
    port = _free_port()
    with (
        LLMClient(_config(f"http://127.0.0.1:{port}/v1", "json_object")) as client,
        pytest.raises(LLMTransportError, match="connection refused"),
    ):
        client.preflight()


def test_key_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    with (
        FakeOpenAI(api_key="sk-env") as fake,
        LLMClient(_config(fake.base_url, "json_object", api_key=None)) as client,
    ):
        assert client.preflight() == ["fake-model"]


def test_config_hides_the_key() -> None:
    config = _config("http://127.0.0.1:1/v1", "json_object", api_key="sk-secret")
    assert "sk-secret" not in repr(config)


# --- concurrency --------------------------------------------------------------------------


def test_one_client_many_threads(fake: FakeOpenAI) -> None:
    def echo(body: dict[str, Any]) -> str:
        n = int(body["messages"][-1]["content"])
        time.sleep(0.05)
        return json.dumps({**VALID, "offer": {"issue": "border", "value": n}})

    fake.extend(*[echo] * 16)
    results: dict[int, int] = {}
    failures: list[BaseException] = []
    with LLMClient(_config(fake.base_url, "json_object")) as client:

        def work(n: int) -> None:
            try:
                result = client.complete([{"role": "user", "content": str(n)}], Answer)
                results[n] = result.parsed.offer.value
            except BaseException as exc:  # pragma: no cover - reported below
                failures.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
    assert failures == []
    assert results == {n: n for n in range(16)}


# --- helpers ------------------------------------------------------------------------------


def test_extract_json_object() -> None:
    assert extract_json_object('Sure! {"a": {"b": 1}} and {"c": 2}') == {"a": {"b": 1}}
    assert extract_json_object('{broken {"ok": true}') == {"ok": True}
    with pytest.raises(ValueError, match="no JSON object"):
        extract_json_object("[1, 2] no object here")


def test_inline_refs_keeps_sibling_keywords_and_handles_recursion() -> None:
    schema = {
        "type": "object",
        "properties": {"d": {"$ref": "#/$defs/D", "description": "why"}},
        "$defs": {"D": {"enum": ["x", "y"], "type": "string"}},
    }
    assert inline_refs(schema) == {
        "type": "object",
        "properties": {"d": {"enum": ["x", "y"], "type": "string", "description": "why"}},
    }

    class Node(BaseModel):
        children: list[Node]

    recursive = Node.model_json_schema()
    assert inline_refs(recursive) == recursive


def test_grammar_schema_enumerates_small_integer_ranges_and_drops_unanchored_patterns() -> None:
    class M(BaseModel):
        small: int = Field(gt=-3, lt=3)
        even: int = Field(ge=0, le=10, multiple_of=2)
        big: int = Field(ge=0, le=10_000)
        open_ended: int = Field(ge=0)
        ratio: float = Field(ge=0, le=1)
        code: str = Field(pattern=r"^[a-z]+$")
        loose: str = Field(pattern=r"[a-z]+")

    props = grammar_schema(M.model_json_schema())["properties"]
    assert props["small"]["enum"] == [-2, -1, 0, 1, 2]
    assert props["even"]["enum"] == [0, 2, 4, 6, 8, 10]
    assert "enum" not in props["big"]
    assert "enum" not in props["open_ended"]
    assert "enum" not in props["ratio"]
    assert props["code"]["pattern"] == "^[a-z]+$"
    assert "pattern" not in props["loose"]


def test_server_tracebacks_are_cut_from_messages(fake: FakeOpenAI) -> None:
    fake.extend(
        HTTPError(
            500,
            "1 validation error: response_format.type should be 'text' or 'json_object'\n\n"
            '  File "/srv/app.py", line 37, in handler\n    raise exc\n',
        )
    )
    with (
        LLMClient(_config(fake.base_url, "json_schema")) as client,
        pytest.raises(LLMTransportError) as info,
    ):
        client.complete(MESSAGES, Answer)
    message = str(info.value)
    assert "File" not in message and "raise exc" not in message
    assert "should be 'text' or 'json_object'" in message
    assert message.endswith(
        "(the server may not support structured_mode='json_schema'; try 'json_object' or 'prompt')"
    )


@pytest.mark.parametrize("mode", MODES)
def test_raw_control_characters_in_strings_are_accepted(
    fake: FakeOpenAI, mode: StructuredMode
) -> None:
    """llama.cpp's schema grammar lets strings hold raw newlines; the meaning is clear."""
    fake.extend('{"decision": "accept", "offer": {"issue": "a\nb", "value": 1}, "reason": "x\ty"}')
    with LLMClient(_config(fake.base_url, mode)) as client:
        result = client.complete(MESSAGES, Answer)
    assert result.attempts == 1
    assert result.parsed.offer.issue == "a\nb"
    assert result.parsed.reason == "x\ty"
