"""`detente cache stats|clear`: the response cache (see `detente.cache`)."""

from __future__ import annotations

from datetime import UTC, datetime

import typer

from detente.cli._app import app, console

cache_app = typer.Typer(
    help="The response cache: stats (entries, size, hits) and clear (all, or older than some "
         "days).",
    no_args_is_help=True)
app.add_typer(cache_app, name="cache")


def _say(text: str) -> None:
    console.print(text, markup=False, highlight=False)


def _when(stamp: float | None) -> str:
    if stamp is None:
        return "-"
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _size(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:,} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} bytes"


@cache_app.command("stats")
def stats() -> None:
    """Where the cache is, how many answers it holds, its size, hits and age."""
    from detente.cache import ResponseCache

    found = ResponseCache().stats()
    _say(f"Response cache: {found.path}")
    if not found.entries:
        _say("empty" + ("" if found.path.exists() else " (no cache file yet)"))
        _say(f"Entries are served for {found.days:g} days.")
        return
    _say(f"entries: {found.entries:,} ({found.expired:,} expired, never served)")
    _say(f"size: {_size(found.size_bytes)}")
    _say(f"tokens held: {found.tokens:,}")
    _say(f"hits: {found.hits:,} requests answered from it")
    _say(f"oldest: {_when(found.oldest)}; newest: {_when(found.newest)}")
    _say(f"Entries are served for {found.days:g} days (DETENTE_CACHE_DAYS, or [cache] days in "
         "detente.toml).")


@cache_app.command("clear")
def clear(
    older_than: float | None = typer.Option(
        None, "--older-than", metavar="DAYS", min=0.0,
        help="Remove only the entries older than DAYS days."),
    expired: bool = typer.Option(False, "--expired",
                                 help="Remove only the entries past the expiry."),
) -> None:
    """Remove the cache's entries: all of them, or those older than some days."""
    from detente.cache import ResponseCache
    from detente.errors import InputError, Problem

    if older_than is not None and expired:
        raise InputError("detente cache clear", [Problem("", "give --older-than DAYS or "
                                                         "--expired, not both")])
    cache = ResponseCache()
    removed = cache.clear(older_than, expired)
    which = (f" older than {older_than:g} days" if older_than is not None else
             " past the expiry" if expired else "")
    _say(f"Removed {removed:,} entries{which} from {cache.path}.")
