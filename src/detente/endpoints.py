"""Endpoints for LLM agents: the embedded model server, preflight checks, interrupt hooks.

Used by the Python API (`detente.run`, `detente.sweep`) and so by the CLI. Nothing here prints:
progress notes go to a `notice` callback.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from detente.agents import endpoint_config
from detente.errors import InputError, Problem
from detente.events import AgentSettings

if TYPE_CHECKING:
    from detente.cache import ResponseCache

Notice = Callable[[str], None]


def _quiet(text: str) -> None:
    return None


@contextlib.contextmanager
def embedded_server(
    settings: Mapping[str, AgentSettings], model_path: Path | None, resuming: bool = False,
    notice: Notice = _quiet,
) -> Iterator[dict[str, AgentSettings]]:
    """Serve the embedded (or given) GGUF model for every LLM agent without an endpoint; the
    agents' settings, pointed at it, are what the block receives. The server stops on leaving
    the block, and at once on an interrupt (see `ON_INTERRUPT`)."""
    local = embedded_parties(settings)
    if not local:
        yield dict(settings)
        return
    from detente.local_server import LocalServer, default_model_path

    tool = [p for p in local if settings[p].assist == "tool"]
    if tool:
        raise InputError("--assist", [Problem(", ".join(tool), "the embedded llama.cpp server "
                         "offers no tool calling, so 'tool' cannot be used there; use 'table' "
                         "(the exact value of the package on the table) or 'none'")])
    gguf = model_path or default_model_path()
    if not gguf.is_file():
        raise InputError(gguf, [Problem("", "the local model file is missing")])
    notice(f"Starting the local model server for {', '.join(local)}: {gguf.name} "
           "(llama.cpp, 127.0.0.1)...")
    with LocalServer(gguf) as server:
        ON_INTERRUPT.append(server.stop)
        notice(f"Local model server ready at {server.base_url}")
        agents = dict(settings)
        for party in local:
            agents[party] = on_embedded(agents[party], gguf, server.base_url, resuming)
        yield agents


def embedded_parties(settings: Mapping[str, AgentSettings]) -> list[str]:
    """The LLM parties the embedded model plays: those without a model or an endpoint."""
    return [p for p, s in settings.items()
            if s.kind == "llm" and (s.local_model or (not s.model and not s.base_url))]


def on_embedded(current: AgentSettings, gguf: Path, base_url: str | None,
                resuming: bool = False) -> AgentSettings:
    """An LLM party's settings on the embedded model (served from `gguf` at `base_url`):
    compact prompts, grammar-constrained answers and the table's value, unless set."""
    from detente.local_server import DEFAULT_ALIAS

    return current.model_copy(update={
        "model": current.model if resuming and current.model else DEFAULT_ALIAS,
        "base_url": base_url,
        "structured_mode": current.structured_mode or "json_object",
        "prompt": current.prompt or "compact",
        "assist": current.assist or "table",
        "local_model": str(gguf.resolve()),
    })


def preflight(agents: Mapping[str, AgentSettings], cache: ResponseCache | None = None) -> None:
    """Fail before round one on a missing key or an endpoint that does not answer. With the
    response `cache`, an endpoint (and model and key) that answered within the last hour is not
    asked again (see `detente.cache.ENDPOINT_CHECK_SECONDS`)."""
    import hashlib

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
        credential = hashlib.sha256(os.environ.get("OPENAI_API_KEY", "").encode()).hexdigest()
        where = (base or "https://api.openai.com/v1", settings.model, credential)
        if cache is not None and cache.endpoint_checked(*where):
            continue
        with LLMClient(endpoint_config(settings)) as client:
            client.preflight()
        if cache is not None:
            cache.mark_endpoint(*where)


ON_INTERRUPT: list[Callable[[], None]] = []
"""Run first on SIGINT/SIGTERM: stopping the local server fails in-flight calls at once,
instead of waiting minutes for a slow model to finish them."""
