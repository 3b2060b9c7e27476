"""Errors a user can cause. The CLI prints them as one message and exits with status 2."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


class DetenteError(Exception):
    """Base class of every error the CLI reports without a traceback."""

    exit_code = 2


@dataclass(frozen=True)
class Problem:
    """One thing wrong in an input file: where (a field path) and what was expected."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class InputError(DetenteError):
    """A file the user gave is malformed or inconsistent."""

    def __init__(self, file: Path | str, problems: Sequence[Problem]) -> None:
        self.file = str(file)
        self.problems = list(problems)
        lines = [f"{self.file}: {p}" for p in self.problems]
        super().__init__("\n".join(lines))


def format_path(loc: Sequence[str | int]) -> str:
    """Render a pydantic-style location as `issues[2].options[0].id`."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def path_problem(text: str) -> str | None:
    """Why `text`, a path written in a file, cannot name a file here (a NUL byte, a name over
    255 bytes, the whole over 4,096), or None. Asking the OS about such a path raises instead
    of answering 'no such file'."""
    if "\x00" in text:
        return "a NUL byte in a path"
    if any(len(part.encode()) > 255 for part in text.split("/")):
        return "a file or folder name over 255 bytes"
    if len(text.encode()) > 4096:
        return "a path over 4,096 bytes"
    return None


def did_you_mean(value: str, known: Sequence[str]) -> str:
    """' (did you mean X?)' for the closest known name, or nothing."""
    import difflib

    close = difflib.get_close_matches(value, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""
