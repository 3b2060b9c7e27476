"""Negotiation protocols: who proposes, who answers, what each may see; one module each.

A scenario chooses one with `protocol:` (a name, or `{name, params}`); variants can change it.
Built in: `mediated`, `rotating`, `alternating_offers`, `no_talk`, `bilateral_first`. Another
package adds its own by registering a `Protocol` subclass (`detente.registry.PROTOCOLS`).
"""

from __future__ import annotations

from detente.errors import Problem
from detente.protocols.base import Protocol
from detente.registry import PROTOCOLS
from detente.scenario import ProtocolSpec, Scenario, round_problems

__all__ = ["PROTOCOLS", "Protocol", "protocol_for", "protocol_problems"]


def protocol_for(scenario: Scenario, spec: ProtocolSpec | None = None) -> Protocol:
    """The scenario's protocol (or `spec`), built and checked; raises ValueError."""
    spec = spec or scenario.protocol_spec()
    if spec.name not in PROTOCOLS:
        from detente.errors import did_you_mean

        names = PROTOCOLS.names()
        raise ValueError(f"unknown protocol '{spec.name}'{did_you_mean(spec.name, names)}; "
                         f"expected one of: {', '.join(names)}")
    protocol: Protocol = PROTOCOLS.get(spec.name).create(scenario, spec)
    return protocol


def protocol_problems(scenario: Scenario) -> list[Problem]:
    """What is wrong with the scenario's protocol (unknown, bad settings, can't stage it)."""
    try:
        protocol = protocol_for(scenario)
    except ValueError as exc:
        where = "protocol" if "unknown protocol" in str(exc) else "protocol.params"
        return [Problem(where, str(exc))]
    last = protocol.total_rounds(scenario.decision.max_rounds)
    return protocol.problems() + round_problems(scenario, last)
