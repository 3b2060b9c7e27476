"""One registry for everything that can be named on the command line or in a scenario.

Scripted strategies and mediators, negotiation protocols and LLM providers register with a
decorator, the built-in ones exactly as outside ones do:

    from detente.registry import STRATEGIES

    @STRATEGIES.register("stubborn", description="never concedes")
    def make_stubborn(party, view): ...

An installed package adds its own through the entry-point group `detente.plugins`: each entry
point names a module (or a callable) that registers on import. In its `pyproject.toml`:

    [project.entry-points."detente.plugins"]
    my_plugin = "my_package.detente_plugin"

Built-ins and plug-ins load the first time a registry is read, so naming them costs nothing until
then. A plug-in that fails to load is reported by name, with the error, when it is needed.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from detente.errors import DetenteError

T = TypeVar("T")

ENTRY_POINT_GROUP = "detente.plugins"


class PluginError(DetenteError):
    """An installed plug-in could not be loaded."""


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    value: T
    description: str
    origin: str
    """`detente` for built-ins, else the plug-in's distribution or module."""


_BUILTINS = (
    "detente.agents.scripted",
    "detente.protocols",
    "detente.providers",
)
_loaded = False
_lock = threading.RLock()
_failures: list[str] = []


def load_all() -> None:
    """Import the built-ins, then every plug-in of the entry-point group (once)."""
    global _loaded
    with _lock:
        if _loaded:
            return
        _loaded = True
        for module in _BUILTINS:
            importlib.import_module(module)
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

    def register(self, name: str, *, description: str = "",
                 origin: str | None = None) -> Callable[[T], T]:
        """Register the decorated object under `name` (a later registration of the same name
        replaces it: a plug-in may override a built-in)."""

        def decorate(value: T) -> T:
            module = getattr(value, "__module__", "") or ""
            source = origin or ("detente" if module.startswith("detente.") else module)
            doc = description or (getattr(value, "__doc__", None) or "").strip().split("\n")[0]
            with _lock:
                self._entries[name] = Entry(name, value, doc, source)
            return value

        return decorate

    def get(self, name: str) -> T:
        """The thing registered as `name`; KeyError if none is."""
        load_all()
        with _lock:
            entry = self._entries.get(name)
        if entry is None:
            raise KeyError(name)
        return entry.value

    def __contains__(self, name: object) -> bool:
        load_all()
        return name in self._entries

    def names(self) -> list[str]:
        load_all()
        return list(self._entries)

    def entries(self) -> Iterator[Entry[T]]:
        load_all()
        yield from list(self._entries.values())

    def describe(self) -> str:
        """`name (description)` for every entry, for help texts and error messages."""
        return ", ".join(e.name for e in self.entries())


def failures() -> list[str]:
    """Plug-ins that failed to load, with why."""
    load_all()
    return list(_failures)


STRATEGIES: Registry[Any] = Registry("negotiator strategy")
"""Scripted negotiators: `make(party, view) -> Agent`, named `scripted:<name>` on the CLI."""
MEDIATORS: Registry[Any] = Registry("mediator strategy")
"""Scripted mediators: `make(party, scenario) -> Agent`; `scripted:<name>` for the mediator."""
PROTOCOLS: Registry[Any] = Registry("protocol")
"""Negotiation protocols: `detente.protocols.Protocol` subclasses, chosen by `protocol:`."""
PROVIDERS: Registry[Any] = Registry("provider")
"""LLM providers: how an agent spec that is not `scripted:` becomes an agent."""
