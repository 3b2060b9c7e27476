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
