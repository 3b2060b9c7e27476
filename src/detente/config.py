"""Who plays each party and how: from flags, environment and a config file, in that order.

An agent spec is `scripted:<strategy>`, `human` (a person, in the terminal) or a model name.
`all=SPEC` applies to every party; a scripted negotiator strategy given to `all` leaves the
mediator to the scripted Nash mediator.

Config file (TOML, `--config FILE`, or `detente.toml` in the working folder):

    [defaults]            # every LLM agent
    model = "gpt-4o-mini"
    base_url = "https://..."   # any OpenAI-compatible endpoint
    temperature = 0.7
    max_tokens = 800
    structured_mode = "json_schema"   # or json_object (llama.cpp server), prompt
    assist = "none"                   # or table, tool

    [agents.russia]       # one party
    spec = "scripted:boulware"

    [agents.ukraine]
    seed = 7              # pins this party's seed; otherwise every LLM agent gets the run's seed

    [prices]              # US dollars per million tokens (see detente.costs)
    "my-model" = { input = 0.20, output = 0.80 }

    [cache]               # the response cache (see detente.cache)
    days = 30             # how long an answer is served

Environment: OPENAI_API_KEY, OPENAI_BASE_URL, DETENTE_MODEL, DETENTE_AGENTS ("us=...,all=..."),
DETENTE_TEMPERATURE, DETENTE_MAX_TOKENS, DETENTE_MAX_RETRIES, DETENTE_STRUCTURED_MODE,
DETENTE_ASSIST ("table" or "us=tool,all=table"), DETENTE_TIMEOUT (seconds per request),
DETENTE_CONFIG.

The run's seed (`--seed`, or each seed of a sweep) reaches every LLM agent as the request's
`seed`, unless the party's own settings pin one; it is not a default setting, so a sweep's seeds
are always distinct samples.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

from detente.errors import InputError, Problem, did_you_mean
from detente.events import ASSIST_MODES, AgentSettings, StructuredMode
from detente.registry import MEDIATORS, PROVIDERS, STRATEGIES
from detente.scenario import Scenario

SCRIPTED_PREFIX = "scripted:"
HUMAN_SPEC = "human"
"""A person plays the seat, in the terminal (`--agent ukraine=human`)."""
DEFAULT_MEDIATOR_STRATEGY = "nash"
CONFIG_NAME = "detente.toml"

_ENDPOINT_KEYS = ("model", "base_url", "temperature", "max_tokens", "max_retries",
                  "structured_mode", "prompt", "assist", "timeout", "max_connections")
_PARTY_KEYS = (*_ENDPOINT_KEYS, "seed", "spec")


@dataclass
class Layer:
    """One source of settings: endpoint defaults plus per-party specs and overrides."""

    name: str
    defaults: dict[str, Any] = field(default_factory=dict)
    specs: dict[str, str] = field(default_factory=dict)
    """Party (or `all`) -> agent spec."""
    per_party: dict[str, dict[str, Any]] = field(default_factory=dict)


def parse_agent_flags(values: Sequence[str], source: str = "--agent") -> dict[str, str]:
    specs: dict[str, str] = {}
    for value in values:
        party, sep, spec = value.partition("=")
        if not sep or not party.strip() or not spec.strip():
            raise InputError(source, [Problem(value, "expected PARTY=SPEC, e.g. "
                                              "russia=scripted:boulware or all=gpt-4o-mini")])
        specs[party.strip()] = spec.strip()
    return specs


def flag_layer(
    *, model: str | None, agents: Sequence[str], base_url: str | None = None,
    temperature: float | None = None, max_tokens: int | None = None,
    max_retries: int | None = None, structured_mode: str | None = None,
    assist: Sequence[str] = (), timeout: float | None = None,
    max_connections: int | None = None,
) -> Layer:
    defaults = {
        k: v for k, v in {
            "model": model, "base_url": base_url, "temperature": temperature,
            "max_tokens": max_tokens, "max_retries": max_retries,
            "structured_mode": structured_mode, "timeout": timeout,
            "max_connections": max_connections,
        }.items() if v is not None
    }
    layer = Layer("command line", defaults=defaults, specs=parse_agent_flags(agents))
    _add_assist(layer, assist, "--assist")
    return layer


def _add_assist(layer: Layer, values: Sequence[str], source: str) -> None:
    """`MODE` or `all=MODE` for every LLM agent, `PARTY=MODE` for one."""
    for value in values:
        party, sep, mode = value.rpartition("=")
        party, mode = party.strip(), mode.strip()
        if mode not in ASSIST_MODES or (sep and not party):
            raise InputError(source, [Problem(value, "expected MODE or PARTY=MODE with MODE one "
                                              f"of: {', '.join(ASSIST_MODES)}")])
        if not sep or party == "all":
            layer.defaults["assist"] = mode
        else:
            layer.per_party.setdefault(party, {})["assist"] = mode


def env_layer(env: Mapping[str, str] | None = None) -> Layer:
    env = os.environ if env is None else env
    defaults: dict[str, Any] = {}
    if env.get("DETENTE_MODEL"):
        defaults["model"] = env["DETENTE_MODEL"]
    if env.get("OPENAI_BASE_URL"):
        defaults["base_url"] = env["OPENAI_BASE_URL"]
    for key, cast in (("temperature", float), ("max_tokens", int), ("max_retries", int),
                      ("timeout", float), ("max_connections", int)):
        raw = env.get(f"DETENTE_{key.upper()}")
        if raw:
            try:
                defaults[key] = cast(raw)
            except ValueError:
                problem = Problem(f"DETENTE_{key.upper()}",
                                  f"expected a {cast.__name__}, got {raw!r}")
                raise InputError("environment", [problem]) from None
    if env.get("DETENTE_STRUCTURED_MODE"):
        defaults["structured_mode"] = env["DETENTE_STRUCTURED_MODE"]
    specs = parse_agent_flags(
        [s for s in env.get("DETENTE_AGENTS", "").split(",") if s.strip()], "DETENTE_AGENTS"
    )
    layer = Layer("environment", defaults=defaults, specs=specs)
    _add_assist(layer, [s for s in env.get("DETENTE_ASSIST", "").split(",") if s.strip()],
                "DETENTE_ASSIST")
    return layer


def file_layer(path: Path | None) -> Layer:
    if path is None:
        env_path = os.environ.get("DETENTE_CONFIG")
        path = Path(env_path) if env_path else Path(CONFIG_NAME)
        if not path.exists():
            return Layer("config file")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(path, [Problem("", "no such file")]) from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(path, [Problem("", f"malformed TOML: {exc}")]) from None
    # [prices] and [cache] are read by detente.costs and detente.cache.
    unknown = set(data) - {"defaults", "agents", "prices", "cache"}
    if unknown:
        raise InputError(path, [Problem(k, "unknown section; expected [defaults], "
                                        "[agents.PARTY], [prices] or [cache]")
                                for k in sorted(unknown)])
    defaults = dict(data.get("defaults", {}))
    if "seed" in defaults:
        raise InputError(path, [Problem("defaults.seed", "a seed for every agent would make "
                                        "every run of a sweep the same sample; give the run's "
                                        "seed with --seed, or pin one party's in "
                                        "[agents.PARTY]")])
    _check_keys(path, "defaults", defaults, _ENDPOINT_KEYS)
    specs: dict[str, str] = {}
    per_party: dict[str, dict[str, Any]] = {}
    for party, table in data.get("agents", {}).items():
        table = dict(table)
        _check_keys(path, f"agents.{party}", table, _PARTY_KEYS)
        if "spec" in table:
            specs[party] = str(table.pop("spec"))
        per_party[party] = table
    return Layer(str(path), defaults=defaults, specs=specs, per_party=per_party)


def _check_keys(path: Path, where: str, table: Mapping[str, Any], allowed: Sequence[str]) -> None:
    bad = [k for k in table if k not in allowed]
    if bad:
        raise InputError(path, [Problem(f"{where}.{k}", f"unknown key; expected one of: "
                                        f"{', '.join(allowed)}") for k in bad])


def _positive_int(party: str, key: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError("agents", [Problem(f"{party}.{key}", f"expected a whole number above "
                                            f"0, got {value!r}")])
    return value


def resolve_agents(scenario: Scenario, layers: Sequence[Layer]) -> dict[str, AgentSettings]:
    """Settings for every party. `layers` go from highest precedence to lowest.

    A party with no spec anywhere gets the default model; without one, `local` (the embedded
    model, decided by the caller) is signalled by `model=None`. `seed` stays None unless a
    party pins one: the run fills in its own seed (`RunPlan.seed`) when it starts.
    """
    parties = scenario.parties
    for layer in layers:
        for party in list(layer.specs) + list(layer.per_party):
            if party != "all" and party not in parties:
                raise InputError(layer.name, [Problem(
                    party, f"unknown party{did_you_mean(party, parties)}; expected 'all' or one "
                    f"of: {', '.join(parties)}")])

    def lookup(party: str, key: str) -> Any:
        for layer in layers:
            if key in layer.per_party.get(party, {}):
                return layer.per_party[party][key]
            if key in layer.defaults:
                return layer.defaults[key]
        return None

    settings: dict[str, AgentSettings] = {}
    for party in parties:
        spec = next((layer.specs[party] for layer in layers if party in layer.specs), None)
        spec_from_all = False
        if spec is None:
            spec = next((layer.specs["all"] for layer in layers if "all" in layer.specs), None)
            spec_from_all = spec is not None
        is_mediator = party == scenario.mediator
        if spec is not None and spec.startswith(SCRIPTED_PREFIX):
            strategy = spec[len(SCRIPTED_PREFIX):]
            negotiators, mediators = STRATEGIES.names(), MEDIATORS.names()
            allowed = mediators if is_mediator else negotiators
            if is_mediator and spec_from_all and strategy in negotiators:
                strategy = DEFAULT_MEDIATOR_STRATEGY
            if strategy not in allowed:
                role = "the mediator" if is_mediator else "a negotiating party"
                names = [SCRIPTED_PREFIX + s for s in allowed]
                raise InputError("agents", [Problem(party, f"unknown strategy '{spec}' for "
                                 f"{role}{did_you_mean(spec, names)}; expected one of: "
                                 f"{', '.join(names)}")])
            settings[party] = AgentSettings(kind="scripted", strategy=strategy)
            continue
        if spec == HUMAN_SPEC:
            settings[party] = AgentSettings(kind="human")
            continue
        model = spec if spec is not None else lookup(party, "model")
        provider = None
        if isinstance(model, str):
            prefix, sep, rest = model.partition(":")
            if sep and rest and prefix in PROVIDERS:  # `openai:gpt-4o`; `llama3.1:8b` is a model
                provider, model = prefix, rest
        mode = lookup(party, "structured_mode")
        if mode is not None and mode not in get_args(StructuredMode):
            raise InputError("agents", [Problem(f"{party}.structured_mode", f"expected one of: "
                             f"{', '.join(get_args(StructuredMode))}, got {mode!r}")])
        timeout = lookup(party, "timeout")
        if timeout is not None and (not isinstance(timeout, int | float) or isinstance(
                timeout, bool) or not 0 < float(timeout) < float("inf")):
            raise InputError("agents", [Problem(f"{party}.timeout", "expected a number of "
                             f"seconds above 0, got {timeout!r}")])
        assist = lookup(party, "assist")
        if assist is not None and assist not in ASSIST_MODES:
            raise InputError("agents", [Problem(f"{party}.assist", f"expected one of: "
                             f"{', '.join(ASSIST_MODES)}, got {assist!r}")])
        temperature = lookup(party, "temperature")
        max_tokens = lookup(party, "max_tokens")
        max_retries = lookup(party, "max_retries")
        party_seed = lookup(party, "seed")
        settings[party] = AgentSettings(
            kind="llm",
            provider=provider,
            model=model,
            base_url=lookup(party, "base_url"),
            temperature=0.7 if temperature is None else float(temperature),
            seed=None if party_seed is None else int(party_seed),
            max_tokens=800 if max_tokens is None else int(max_tokens),
            max_retries=None if max_retries is None else int(max_retries),
            structured_mode=mode,
            prompt=lookup(party, "prompt"),
            assist=assist,
            timeout=None if timeout is None else float(timeout),
            max_connections=_positive_int(party, "max_connections",
                                          lookup(party, "max_connections")),
        )
    return settings
