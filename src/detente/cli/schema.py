"""`detente schema`: the JSON Schema of one line of `events.jsonl`."""

from __future__ import annotations

import json

from detente.cli._app import app, console


@app.command()
def schema() -> None:
    """Print the JSON Schema of the event log format."""
    from detente.events import event_schema

    console.print_json(json.dumps(event_schema()))
