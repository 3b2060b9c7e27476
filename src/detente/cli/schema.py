"""`detente schema`: the JSON Schema of one line of `events.jsonl`."""

from __future__ import annotations

import json

from detente.cli._app import app, console
from detente.events import event_schema


@app.command()
def schema() -> None:
    """Print the JSON Schema of the event log format."""
    console.print_json(json.dumps(event_schema()))
