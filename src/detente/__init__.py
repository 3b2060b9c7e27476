"""detente: stage peace negotiations between LLM agents and judge their outcomes.

    import detente

    folder = detente.run("scenarios/baseline.yaml", agents="all=scripted:boulware")
    print(folder.result.status)

The functions are loaded on first use (see `detente.api`), so `import detente` stays fast.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    __version__: str

    from detente.api import (
        Sweep,
        analyze,
        compare,
        estimate,
        load_run,
        load_runs,
        resume,
        run,
        sweep,
    )
    from detente.runs import RunFolder

_API = {"run", "resume", "sweep", "Sweep", "analyze", "compare", "estimate", "load_run",
        "load_runs"}

__all__ = ["RunFolder", "Sweep", "__version__", "analyze", "compare", "estimate", "load_run",
           "load_runs", "resume", "run", "sweep"]


@cache
def _version() -> str:
    # importlib.metadata alone takes longer to import than the CLI's help needs to print.
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("detente")
    except PackageNotFoundError:  # running from a source tree without installation
        return "0+unknown"


def __getattr__(name: str) -> Any:
    if name == "__version__":
        return _version()
    if name in _API:
        from detente import api

        return getattr(api, name)
    if name == "RunFolder":
        from detente.runs import RunFolder

        return RunFolder
    raise AttributeError(f"module 'detente' has no attribute {name!r}")
