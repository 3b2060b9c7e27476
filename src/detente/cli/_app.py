"""The typer application object and the consoles shared by every command."""

from __future__ import annotations

import typer
from rich.console import Console

app = typer.Typer(
    name="detente",
    help="Stage peace negotiations between LLM agents and judge their outcomes.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)


def agent_help() -> str:
    """The --agent help, from the registry: built-ins and installed plug-ins alike."""
    import detente.builtins  # noqa: F401  (registers the built-ins, lazily)
    from detente.registry import MEDIATORS, PROVIDERS, STRATEGIES

    parties = ", ".join(f"scripted:{n}" for n in STRATEGIES.names())
    mediators = ", ".join(f"scripted:{n}" for n in MEDIATORS.names())
    providers = ", ".join(f"{n}:MODEL" for n in PROVIDERS.names())
    return (f"Who plays a party: a model name ({providers}) or {parties} (parties), "
            f"{mediators} (mediator); all=SPEC. 'detente plugins' lists them all.")
