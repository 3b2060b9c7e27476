"""Endpoints for LLM agents: the embedded model server, preflight checks, clean interrupts."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import FrameType

from detente.agents import endpoint_config
from detente.cli._app import console
from detente.errors import DetenteError, InputError, Problem
from detente.events import AgentSettings


@contextlib.contextmanager
def embedded_server(
    settings: Mapping[str, AgentSettings], model_path: Path | None, resuming: bool = False
) -> Iterator[dict[str, AgentSettings]]:
    """Serve the embedded (or given) GGUF model for every LLM agent without an endpoint."""
    local = [p for p, s in settings.items()
             if s.kind == "llm" and (s.local_model or (not s.model and not s.base_url))]
    if not local:
        yield dict(settings)
        return
    from detente.local_server import DEFAULT_ALIAS, LocalServer, default_model_path

    tool = [p for p in local if settings[p].assist == "tool"]
    if tool:
        raise InputError("--assist", [Problem(", ".join(tool), "the embedded llama.cpp server "
                         "offers no tool calling, so 'tool' cannot be used there; use 'table' "
                         "(the exact value of the package on the table) or 'none'")])
    gguf = model_path or default_model_path()
    if not gguf.is_file():
        raise InputError(gguf, [Problem("", "the local model file is missing")])
    console.print(f"Starting the local model server for {', '.join(local)}: {gguf.name} "
                  "(llama.cpp, 127.0.0.1)...", markup=False, highlight=False)
    with LocalServer(gguf) as server:
        _ON_INTERRUPT.append(server.stop)
        console.print(f"Local model server ready at {server.base_url}", markup=False,
                      highlight=False)
        agents = dict(settings)
        for party in local:
            current = agents[party]
            agents[party] = current.model_copy(update={
                "model": current.model if resuming and current.model else DEFAULT_ALIAS,
                "base_url": server.base_url,
                "structured_mode": current.structured_mode or "json_object",
                "prompt": current.prompt or "compact",
                "assist": current.assist or "table",
                "local_model": str(gguf.resolve()),
            })
        yield agents


def preflight(agents: Mapping[str, AgentSettings]) -> None:
    """Fail before round one on a missing key or an endpoint that does not answer."""
    from detente.llm import LLMClient, is_local_url

    checked: set[tuple[str | None, str | None]] = set()
    for party, settings in agents.items():
        if settings.kind != "llm":
            continue
        if not settings.model:
            raise InputError("agents", [Problem(party, "no model configured: pass --model, "
                             "--agent PARTY=MODEL or --base-url, or use scripted agents "
                             "(--agent all=scripted:boulware)")])
        key = (settings.base_url, settings.model)
        if key in checked:
            continue
        checked.add(key)
        base = settings.base_url or os.environ.get("OPENAI_BASE_URL")
        if not is_local_url(base) and not os.environ.get("OPENAI_API_KEY"):
            raise InputError("environment", [Problem("OPENAI_API_KEY", f"not set, and {party} "
                             f"uses {base or 'the OpenAI API'}; export OPENAI_API_KEY or point "
                             "--base-url at a local server")])
        with LLMClient(endpoint_config(settings)) as client:
            client.preflight()


_ON_INTERRUPT: list[Callable[[], None]] = []
"""Run first on SIGINT/SIGTERM: stopping the local server fails in-flight calls at once,
instead of waiting minutes for a slow model to finish them."""


class _Interrupted(DetenteError):
    exit_code = 130


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGINT and SIGTERM unwind the run, so servers stop and the run folder is finalized."""

    def handler(signum: int, frame: FrameType | None) -> None:
        runner = sys.modules.get("detente.runner")
        # A negotiation on an event loop is cancelled there (it logs the interruption and
        # writes its result); anything else is interrupted where it stands.
        cancelled = runner is not None and runner.interrupt_active()
        while _ON_INTERRUPT:
            _ON_INTERRUPT.pop()()
        if not cancelled:
            raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    except KeyboardInterrupt:
        raise _Interrupted("interrupted") from None
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        _ON_INTERRUPT.clear()
