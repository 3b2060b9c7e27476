"""The `detente` command line: thin wrappers over library functions; all output lives here."""

from __future__ import annotations

import sys

from detente.cli import analyze as _analyze  # noqa: F401  (registers the command)
from detente.cli import compare as _compare  # noqa: F401
from detente.cli import diff as _diff  # noqa: F401
from detente.cli import plot as _plot  # noqa: F401
from detente.cli import plugins as _plugins  # noqa: F401
from detente.cli import replay as _replay  # noqa: F401
from detente.cli import report as _report  # noqa: F401
from detente.cli import run as _run  # noqa: F401
from detente.cli import schema as _schema  # noqa: F401
from detente.cli import sources as _sources  # noqa: F401
from detente.cli import sweep as _sweep  # noqa: F401
from detente.cli import validate as _validate  # noqa: F401
from detente.cli._app import app, err_console
from detente.errors import DetenteError

__all__ = ["app", "main"]


def main() -> None:
    try:
        app()
    except DetenteError as exc:
        err_console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
