"""One registry for everything that can be named on the command line or in a scenario.

Scripted strategies and mediators, negotiation protocols and LLM providers are registered by
name, the built-in ones exactly as outside ones are:

    from detente.registry import STRATEGIES

    @STRATEGIES.register("stubborn", description="never concedes")
    def make_stubborn(party, view): ...

An installed package adds its own through the entry-point group `detente.plugins`: each entry
point names a module (or a callable) that registers on import. In its `pyproject.toml`:

    [project.entry-points."detente.plugins"]
    my_plugin = "my_package.detente_plugin"

Built-ins are registered lazily, by import path (`detente.builtins`): naming them costs nothing,
and a built-in's module loads the first time it is used. Plug-ins load the first time a registry
is read; one that fails to load is reported by name, with its error, and the others still work.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from detente.errors import DetenteError

T = TypeVar("T")

ENTRY_POINT_GROUP = "detente.plugins"


class PluginError(DetenteError):
    """An installed plug-in could not be loaded."""


@dataclass
class Entry(Generic[T]):
    name: str
    description: str
    origin: str
    """`detente` for built-ins, else the plug-in's distribution or module."""
    target: str = ""
    """`module:attribute` of a lazily registered entry (loaded on first use)."""
    value: Any = None
    loaded: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def load(self) -> T:
        if not self.loaded:
            module, _, attribute = self.target.partition(":")
            self.value = getattr(importlib.import_module(module), attribute)
            self.loaded = True
        value: T = self.value
        return value


_lock = threading.RLock()
_plugins_loaded = False
_failures: list[str] = []


def load_plugins() -> None:
    """Register the built-ins, then import every plug-in of the entry-point group (once)."""
    global _plugins_loaded
    with _lock:
        if _plugins_loaded:
            return
        _plugins_loaded = True
        importlib.import_module("detente.builtins")
        from importlib.metadata import entry_points

        for point in entry_points(group=ENTRY_POINT_GROUP):
            try:
                loaded = point.load()
                if callable(loaded) and not isinstance(loaded, type):
                    loaded()
            except Exception as exc:  # a broken plug-in must not break detente
                origin = point.dist.name if point.dist is not None else point.value
                _failures.append(f"{point.name} ({origin}): {type(exc).__name__}: {exc}")


class Registry(Generic[T]):
    """Named things of one kind (strategies, mediators, protocols, providers)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, *, description: str = "", origin: str | None = None,
                 **extra: Any) -> Callable[[T], T]:
        """Register the decorated object under `name`. A later registration of the same name
        replaces the earlier one: a plug-in may override a built-in."""

        def decorate(value: T) -> T:
            module = getattr(value, "__module__", "") or ""
            source = origin or ("detente" if module.startswith("detente.") else
                                module.split(".")[0])
            doc = description or (getattr(value, "__doc__", None) or "").strip().split("\n")[0]
            with _lock:
                old = self._entries.get(name)
                keep = {**(old.extra if old is not None else {}), **extra}
                self._entries[name] = Entry(name, doc or (old.description if old else ""),
                                            source, value=value, loaded=True, extra=keep)
            return value

        return decorate

    def lazy(self, name: str, target: str, description: str, **extra: Any) -> None:
        """Register `module:attribute` under `name` without importing it."""
        with _lock:
            if name not in self._entries:
                self._entries[name] = Entry(name, description, "detente", target=target,
                                            extra=extra)

    def entry(self, name: str) -> Entry[T]:
        load_plugins()
        with _lock:
            found = self._entries.get(name)
        if found is None:
            raise KeyError(name)
        return found

    def get(self, name: str) -> T:
        """The thing registered as `name` (imported now if it was lazy); KeyError if none."""
        return self.entry(name).load()

    def __contains__(self, name: object) -> bool:
        load_plugins()
        return name in self._entries

    def names(self) -> list[str]:
        load_plugins()
        return list(self._entries)

    def entries(self) -> Iterator[Entry[T]]:
        load_plugins()
        yield from list(self._entries.values())


def failures() -> list[str]:
    """Plug-ins that failed to load, with why."""
    load_plugins()
    return list(_failures)


STRATEGIES: Registry[Any] = Registry("negotiator strategy")
"""Scripted negotiators: `make(party, view) -> Agent`, named `scripted:<name>` on the CLI."""
MEDIATORS: Registry[Any] = Registry("mediator strategy")
"""Scripted mediators: `make(party, scenario) -> Agent`; `scripted:<name>` for the mediator.
An entry with `sees_all=True` is given the whole scenario (the oracle), every other one only
its private view."""
PROTOCOLS: Registry[Any] = Registry("protocol")
"""Negotiation protocols: `detente.protocols.Protocol` subclasses, chosen by `protocol:`."""
PROVIDERS: Registry[Any] = Registry("provider")
"""LLM providers: `make(party, settings, bundle) -> Agent` for an agent spec `PROVIDER:MODEL`
(a plain model name is `openai:MODEL`)."""
