"""Shared pytest configuration: cassette matching and filtering for recorded model traffic."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import REPLAY_URL, Cli, CliResult, recording

SECRET_HEADERS = [
    "authorization",
    "api-key",
    "x-api-key",
    "openai-organization",
    "openai-project",
    "cookie",
    "set-cookie",
]


def _json_body(r1: Any, r2: Any) -> None:
    """Requests match when their JSON bodies are equal: a changed prompt is a mismatch."""

    def parse(body: Any) -> Any:
        if body is None or body == b"" or body == "":
            return None
        if isinstance(body, bytes):
            body = body.decode("utf-8")
        try:
            return json.loads(body)
        except ValueError:
            return body

    assert parse(r1.body) == parse(r2.body), "request bodies differ"


def pytest_configure(config: pytest.Config) -> None:
    """The response cache (on by default for sweeps) never touches the user's cache folder:
    a session-wide folder here, and each test its own (`_own_response_cache`)."""
    import os
    import tempfile

    os.environ["DETENTE_CACHE_DIR"] = tempfile.mkdtemp(prefix="detente-test-cache-")


@pytest.fixture(autouse=True)
def _own_response_cache(monkeypatch: pytest.MonkeyPatch,
                        tmp_path_factory: pytest.TempPathFactory) -> None:
    """Each test its own response cache: one test's answers never serve another's requests."""
    monkeypatch.setenv("DETENTE_CACHE_DIR", str(tmp_path_factory.mktemp("response-cache")))


def pytest_recording_configure(config: pytest.Config, vcr: Any) -> None:
    vcr.register_matcher("json_body", _json_body)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """When recording, skip `replay_only` tests before any fixture runs: in rewrite mode the
    cassette fixture deletes its cassette on setup, and such a test shares another test's."""
    if not recording(config):
        return
    skip = pytest.mark.skip(reason="replay only: skipped while recording cassettes")
    for item in items:
        if item.get_closest_marker("replay_only") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def embedded_endpoint(request: pytest.FixtureRequest) -> Iterator[str]:
    """For cassette tests: the embedded server when recording; a dead address when replaying."""
    if not recording(request.config):
        yield REPLAY_URL
        return
    pytest.importorskip("llama_cpp")
    from detente.local_server import LocalServer, default_model_path

    with LocalServer(default_model_path()) as server:
        yield server.base_url


def _scrub_response(response: dict[str, Any]) -> dict[str, Any]:
    headers = response.get("headers", {})
    for name in list(headers):
        if name.lower() in SECRET_HEADERS:
            del headers[name]
    return response


@pytest.fixture(scope="module")
def vcr_config() -> dict[str, Any]:
    # No record_mode here: the command line decides (`--record-mode=none` in CI).
    return {
        # Host and port are left out: the embedded server listens on a new port every run.
        "match_on": ["method", "path", "json_body"],
        "filter_headers": SECRET_HEADERS,
        "before_record_response": _scrub_response,
        "decode_compressed_response": True,
        # With --block-network only loopback stays open: the fake servers of the tests live
        # there, and a replay that misses its cassette fails on a closed port, never online.
        "allowed_hosts": ["127.0.0.1", "localhost", "::1"],
    }


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Cli:
    """`detente ARGS` through `detente.cli.main`, in this process, 200 columns wide."""
    from detente.cli import main
    from detente.cli._app import console

    monkeypatch.setattr(console, "width", 200)

    def invoke(*args: str | Path) -> CliResult:
        monkeypatch.setattr(sys, "argv", ["detente", *map(str, args)])
        capsys.readouterr()
        code = 0
        try:
            main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        out = capsys.readouterr()
        return CliResult(code, out.out, out.err)

    return invoke
