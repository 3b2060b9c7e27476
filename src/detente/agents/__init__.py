"""Agents: scripted negotiators and mediators, and LLM agents, behind one protocol."""

from __future__ import annotations

from typing import TYPE_CHECKING

from detente.agents.base import Agent, Context, Turn, private_view
from detente.errors import InputError, Problem
from detente.events import AgentSettings
from detente.loading import ScenarioBundle

if TYPE_CHECKING:
    from detente.llm import EndpointConfig

__all__ = ["Agent", "Context", "Turn", "endpoint_config", "make_agent", "private_view"]

DEFAULT_TIMEOUT = 60.0
"""Seconds an HTTP request to a model endpoint may take (openai retries a timeout up to
`max_retries` times): a stalled endpoint costs a turn three minutes at most, not forever."""
EMBEDDED_TIMEOUT = 600.0
"""The embedded server answers one request at a time: a party's request waits behind the
others' (about a minute each on two cores), so its timeout covers the whole queue."""


def endpoint_config(settings: AgentSettings) -> EndpointConfig:
    from detente.llm import EndpointConfig

    if not settings.model:
        raise InputError("agents", [Problem("model", "no model configured")])
    return EndpointConfig(
        model=settings.model,
        base_url=settings.base_url,
        temperature=settings.temperature if settings.temperature is not None else 0.7,
        seed=settings.seed,
        max_tokens=settings.max_tokens,
        max_retries_http=2 if settings.max_retries is None else settings.max_retries,
        structured_mode=settings.structured_mode or "json_schema",
        timeout=settings.timeout or (EMBEDDED_TIMEOUT if settings.local_model else
                                     DEFAULT_TIMEOUT),
        max_connections=settings.max_connections or 64,
    )


def make_agent(party: str, settings: AgentSettings, bundle: ScenarioBundle) -> Agent:
    """Build the agent that plays `party`; it sees only its private view of the scenario."""
    from detente.registry import MEDIATORS, PROVIDERS

    view = private_view(bundle.scenario, party)
    if settings.kind == "scripted":
        from detente.agents.scripted import make_scripted

        # A mediator registered as seeing all (the oracle) knows every party's numbers: it is
        # a reference, not a negotiator.
        strategy = str(settings.strategy)
        sees_all = strategy in MEDIATORS and MEDIATORS.entry(strategy).extra.get("sees_all")
        try:
            return make_scripted(strategy, party, bundle.scenario if sees_all else view)
        except ValueError as exc:
            raise InputError("agents", [Problem(party, str(exc))]) from None
    if settings.kind == "human":
        from detente.agents.human import HumanAgent

        return HumanAgent(party, view, bundle.briefs[party], settings)
    provider = settings.provider or "openai"
    try:
        make = PROVIDERS.get(provider)
    except KeyError:
        raise InputError("agents", [Problem(party, f"unknown provider '{provider}'; expected "
                                            f"one of: {', '.join(PROVIDERS.names())}")]) from None
    agent: Agent = make(party, settings, bundle)
    return agent

