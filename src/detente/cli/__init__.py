"""The `detente` command line: thin wrappers over library functions; all output lives here.

Each command lives in its own module, imported when the command is used (see `_app.COMMANDS`).
"""

from __future__ import annotations

import sys

from detente.cli._app import app, err_console
from detente.errors import DetenteError

__all__ = ["app", "main"]


def main() -> None:
    try:
        app()
    except DetenteError as exc:
        err_console.print(f"error: {exc}", markup=False, highlight=False, emoji=False,
                          soft_wrap=True)
        sys.exit(exc.exit_code)
    except OSError as exc:
        # The OS refused a path the user gave (a name over 255 bytes, a folder where a file is
        # expected, no permission...): a command that did not check it first still says so in
        # one line. Failures writing a run are `DiskError`s above, and keep what was written.
        where = f"{exc.filename}: " if exc.filename else ""
        err_console.print(f"error: {where}{exc.strerror or exc}", markup=False,
                          highlight=False, emoji=False, soft_wrap=True)
        sys.exit(2)
