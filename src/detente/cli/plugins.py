"""`detente plugins`: every strategy, mediator, protocol and provider that can be named here."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from detente.cli._app import app, console


@app.command("plugins")
def plugins() -> None:
    """List the scripted strategies, mediators, protocols and providers, built in or plugged in."""
    from detente.registry import MEDIATORS, PROTOCOLS, PROVIDERS, STRATEGIES, failures

    table = Table(title="What can be named (built-in, or from installed plug-ins)")
    for column in ("kind", "name", "from", "what it is"):
        table.add_column(column)
    for kind, registry, prefix in (("strategy", STRATEGIES, "scripted:"),
                                   ("mediator", MEDIATORS, "scripted:"),
                                   ("protocol", PROTOCOLS, ""), ("provider", PROVIDERS, "")):
        for entry in registry.entries():
            table.add_row(kind, Text(prefix + entry.name), Text(entry.origin),
                          Text(entry.description))
        table.add_section()
    console.print(table)
    broken = failures()
    for failure in broken:
        console.print(Text(f"plug-in failed to load: {failure}", style="red"))
