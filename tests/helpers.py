"""Shared helpers for the engine tests: paths, scenario variants, a schema-driven fake negotiator.

`SchemaResponder` is a responder for `fake_openai.FakeOpenAI`: it reads the JSON schema of the
requested answer from the request (in `response_format` for the json_schema and json_object
modes, inside the prompt text for the prompt mode) and builds a valid JSON object from it. Which
party a request is for is read from the first line of its system prompt ("You are <display_name>
..."), which turn from the properties of the requested schema, and the round from the user
message ("Round N of at most M."). Subclasses override `pick`, `vote`, `text`, `delay` or
`reply` to steer the negotiation; answers depend only on the request content, so runs are
reproducible.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from detente.events import AgentSettings, read_events
from detente.loading import ScenarioBundle, load_bundle
from fake_openai import FakeOpenAI, prompt_text

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "tests" / "data" / "tiny" / "scenario.yaml"
TINY_AGENTS = TINY.parent / "agents"
BASELINE = ROOT / "scenarios" / "baseline.yaml"

SCHEMA_MARK = "It must conform to this JSON schema:\n"
CORRECTION_MARK = "Your previous answer was not valid"
_ROUND = re.compile(r"^Round (\d+) of at most (\d+)\.", re.MULTILINE)
_WHO = re.compile(r"^You are (.+?) in a (?:simulated )?negotiation")


# --------------------------------------------------------------------------- scenarios


def tiny_variant(
    tmp: Path, name: str = "variant", top: Mapping[str, Any] | None = None, **decision: Any
) -> Path:
    """A copy of the tiny scenario with top-level keys (`top`, None removes a key) and its
    decision rule updated; the briefs stay in tests/data/tiny."""
    data = yaml.safe_load(TINY.read_text(encoding="utf-8"))
    data["id"] = name
    data["agents_dir"] = str(TINY_AGENTS)
    for key, value in (top or {}).items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    data["decision"] = {**data["decision"], **decision}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def llm_settings(base_url: str, mode: str = "json_schema", **extra: Any) -> AgentSettings:
    """An LLM agent on the fake server; `extra` overrides any setting."""
    fields: dict[str, Any] = {"kind": "llm", "model": "fake-model", "base_url": base_url,
                              "temperature": 0.0, "seed": 0, "max_tokens": 800,
                              "structured_mode": mode}
    return AgentSettings(**(fields | extra))


def scripted(strategy: str) -> AgentSettings:
    return AgentSettings(kind="scripted", strategy=strategy)


def events_of(run_dir: Path) -> list[dict[str, Any]]:
    """The raw lines of a run's events.jsonl (after checking they parse as events)."""
    read_events(run_dir / "events.jsonl")
    lines = (run_dir / "events.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


REPLAY_URL = "http://127.0.0.1:9/v1"
"""Never contacted on replay: VCR answers before any socket opens."""


def recording(config: pytest.Config) -> bool:
    """Whether this session records cassettes (`--record-mode` other than none)."""
    return config.getoption("--record-mode", None) not in (None, "none")


def run_dirs(out: Path) -> list[Path]:
    return sorted(p.parent for p in out.glob("*/*/events.jsonl"))


# --------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class Req:
    """What a chat completion request is: for whom, which turn, which round."""

    body: dict[str, Any]
    party: str
    kind: str
    """opening, propose, respond or caucus."""
    round: int
    system: str
    text: str
    """All message contents joined."""
    schema: dict[str, Any]
    retry: bool
    """The request carries a correction of an invalid answer."""


message_text = prompt_text


def requested_schema(body: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON schema of the answer a request asks for, whatever the structured mode."""
    rf = body.get("response_format")
    if isinstance(rf, dict):
        if rf.get("type") == "json_schema":
            return dict(rf["json_schema"]["schema"])
        if rf.get("type") == "json_object":
            return dict(rf["schema"])
    text = message_text(body)
    at = text.find(SCHEMA_MARK)
    if at < 0:
        raise AssertionError("no schema in the request")
    schema, _ = json.JSONDecoder().raw_decode(text, at + len(SCHEMA_MARK))
    return dict(schema)


def turn_kind(schema: Mapping[str, Any]) -> str:
    props = set(schema.get("properties", {}))
    if "package" in props:
        return "propose"
    if "vote" in props:
        return "respond"
    if "reply" in props:
        return "caucus"
    return "opening"


def parse_request(body: dict[str, Any], names: Mapping[str, str]) -> Req:
    """`names` maps display names to party ids."""
    messages = body["messages"]
    system = next(m["content"] for m in messages if m["role"] == "system")
    who = _WHO.match(system)
    assert who is not None, system[:100]
    text = message_text(body)
    schema = requested_schema(body)
    found = _ROUND.search(text)
    return Req(
        body=body,
        party=names[who.group(1)],
        kind=turn_kind(schema),
        round=int(found.group(1)) if found else 0,
        system=system,
        text=text,
        schema=schema,
        retry=CORRECTION_MARK in text,
    )


def display_names(bundle: ScenarioBundle) -> dict[str, str]:
    return {brief.display_name: party for party, brief in bundle.briefs.items()}


# --------------------------------------------------------------------------- schema -> answer


def _resolve(node: Mapping[str, Any], root: Mapping[str, Any]) -> dict[str, Any]:
    node = dict(node)
    while "$ref" in node:
        ref = node.pop("$ref")
        assert ref.startswith("#/"), ref
        target: Any = root
        for part in ref[2:].split("/"):
            target = target[part]
        node = {**target, **node}
    return node


def build(
    schema: Mapping[str, Any],
    pick: Any,
    text: Any,
    root: Mapping[str, Any] | None = None,
    path: tuple[str, ...] = (),
) -> Any:
    """A value valid under `schema`: `pick(path, values)` chooses among enums, `text(path)` gives
    strings (cut to maxLength)."""
    root = schema if root is None else root
    node = _resolve(schema, root)
    if "enum" in node:
        return pick(path, list(node["enum"]))
    if "const" in node:
        return node["const"]
    for key in ("anyOf", "oneOf", "allOf"):
        if key in node:
            options = [o for o in node[key] if _resolve(o, root).get("type") != "null"]
            return build(options[0], pick, text, root, path)
    kind = node.get("type")
    if isinstance(kind, list):
        kind = next(k for k in kind if k != "null")
    if kind == "object" or "properties" in node:
        return {
            k: build(v, pick, text, root, (*path, k)) for k, v in node.get("properties", {}).items()
        }
    if kind == "array":
        return [
            build(node["items"], pick, text, root, (*path, "0"))
            for _ in range(node.get("minItems", 0))
        ]
    if kind == "string":
        value = str(text(path))
        return value[: node.get("maxLength", len(value))]
    if kind in ("integer", "number"):
        low = node.get("minimum", node.get("exclusiveMinimum", 0))
        return int(low) if kind == "integer" else float(low)
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    raise AssertionError(f"cannot build a value for {node}")


class SchemaResponder:
    """Answers every request with a valid object built from the request's own schema."""

    def __init__(self, bundle: ScenarioBundle) -> None:
        self.bundle = bundle
        self.names = display_names(bundle)
        self._lock = threading.Lock()
        self.started = 0
        self.finished = 0

    def __call__(self, body: dict[str, Any]) -> Any:
        with self._lock:
            self.started += 1
        try:
            req = parse_request(body, self.names)
            pause = self.delay(req)
            if pause:
                time.sleep(pause)
            answer = self.reply(req)
            return answer if isinstance(answer, str) else json.dumps(answer)
        finally:
            with self._lock:
                self.finished += 1

    def in_flight(self) -> int:
        with self._lock:
            return self.started - self.finished

    # ------------------------------------------------------------------ overridable

    def delay(self, req: Req) -> float:
        return 0.0

    def reply(self, req: Req) -> Any:
        return build(
            req.schema,
            lambda path, values: self.pick(req, path, values),
            lambda path: self.text(req, path),
        )

    def pick(self, req: Req, path: tuple[str, ...], values: Sequence[Any]) -> Any:
        if path == ("vote",):
            return self.vote(req)
        if path == ("caucus_with",):
            return self.caucus_with(req)
        return values[0]

    def vote(self, req: Req) -> str:
        return "accept"

    def caucus_with(self, req: Req) -> str:
        return "none"

    def text(self, req: Req, path: tuple[str, ...]) -> str:
        return f"{path[-1]} of {req.party} in round {req.round}"


def serve(responder: Any, calls: int = 5000, **kwargs: Any) -> FakeOpenAI:
    """A fake server answering up to `calls` chat completions with `responder` (not started)."""
    return FakeOpenAI([responder] * calls, **kwargs)


def load(path: Path) -> ScenarioBundle:
    return load_bundle(path)


@dataclass(frozen=True)
class CliResult:
    """What `detente ARGS` did when run in-process."""

    returncode: int
    stdout: str
    stderr: str


Cli = Callable[..., CliResult]


def invoke(*args: str | Path, cwd: Path | None = None) -> CliResult:
    """`detente ARGS` in this process, from any fixture scope: its exit status and output.

    For tests of what a command does; a subprocess adds only interpreter start-up, so it is
    kept for what needs a process of its own (signals, kills, a second writer, memory limits).
    """
    import contextlib
    import io
    import os
    import sys

    from detente.cli import main

    out, err = io.StringIO(), io.StringIO()
    argv, here = sys.argv, Path.cwd()
    sys.argv = ["detente", *map(str, args)]
    code = 0
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main()
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    finally:
        sys.argv = argv
        os.chdir(here)
    return CliResult(code, out.getvalue(), err.getvalue())
