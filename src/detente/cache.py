"""The response cache: every exact request a model answered, and its answer, in SQLite.

With `--cache` (on by default for sweeps, off for `detente run`), a request whose exact body
(model, messages, parameters, seed: the request hash) went to the same endpoint (its base URL,
without credentials) within the expiry is answered from here: nothing is sent and nothing is
paid, and the turn's event records it (`LLMCall.cached`). Only chat completions are kept, never
an error or a malformed response. Distinct seeds make distinct requests, so distinct samples stay
distinct.

The cache is one SQLite file, `responses.sqlite`, in the user's cache folder
(`platformdirs.user_cache_dir("detente")`, or `DETENTE_CACHE_DIR`). It is safe for many runs at
once, on one event loop, in threads and in worker processes: write-ahead logging, a busy timeout,
and one connection per thread. Entries expire after `DEFAULT_DAYS` days (`DETENTE_CACHE_DAYS`, or
`[cache] days = N` in the config file); an expired entry is never served, and `detente cache clear`
removes entries (all, or those older than some days).

A run with the cache sends the same requests as the run it repeats only if its prompts are the
same: its quote key (from which each prompt's quote delimiters derive) is then derived from the
run's identity and a secret kept beside the cache (`quote_key`), not drawn at random.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import sqlite3
import threading
import time
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from detente.errors import DetenteError, InputError, Problem

CACHE_DIR_ENV = "DETENTE_CACHE_DIR"
CACHE_DAYS_ENV = "DETENTE_CACHE_DAYS"
DB_NAME = "responses.sqlite"
SECRET_NAME = "quote-secret"
DEFAULT_DAYS = 30.0
BUSY_TIMEOUT_MS = 30_000
_DAY = 86_400.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    base_url TEXT NOT NULL,
    model TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    response TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    created REAL NOT NULL,
    hits INTEGER NOT NULL DEFAULT 0,
    last_hit REAL
);
CREATE INDEX IF NOT EXISTS responses_created ON responses (created);
CREATE TABLE IF NOT EXISTS endpoints (
    key TEXT PRIMARY KEY,
    checked REAL NOT NULL
);
"""

ENDPOINT_CHECK_SECONDS = 3600.0
"""How long an endpoint that answered the check before round one (`GET /models`, see
`detente.endpoints.preflight`) is taken to be up: a run or sweep with the cache skips the check
within this time, so a repeat answered wholly from the cache makes no request at all (a call
the cache cannot answer still fails with the endpoint's own error)."""


class CacheError(DetenteError):
    """The cache folder or file cannot be used."""


def cache_dir() -> Path:
    """Where the cache lives: `DETENTE_CACHE_DIR`, else the user's cache folder."""
    given = os.environ.get(CACHE_DIR_ENV)
    if given:
        return Path(given)
    import platformdirs

    return Path(platformdirs.user_cache_dir("detente"))


def expiry_days(config: Path | None = None) -> float:
    """Days an entry is served: `DETENTE_CACHE_DAYS`, else `[cache] days` in the config file
    (`config`, DETENTE_CONFIG or ./detente.toml), else `DEFAULT_DAYS`."""
    raw = os.environ.get(CACHE_DAYS_ENV)
    where = CACHE_DAYS_ENV
    if not raw:
        from detente.config import CONFIG_NAME

        path = config or Path(os.environ.get("DETENTE_CONFIG") or CONFIG_NAME)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
            data = {}
        section = data.get("cache", {})
        value = section.get("days") if isinstance(section, Mapping) else None
        if value is None:
            return DEFAULT_DAYS
        raw, where = str(value), f"{path}: cache.days"
    try:
        days = float(raw)
    except ValueError:
        days = -1.0
    if not days > 0:
        raise InputError(where, [Problem("", f"expected a number of days above 0, got {raw!r}")])
    return days


@dataclass(frozen=True)
class CacheStats:
    path: Path
    entries: int
    expired: int
    """Entries past the expiry (never served; `detente cache clear --expired` removes them)."""
    size_bytes: int
    hits: int
    """Requests answered from the cache, over the entries still held."""
    tokens: int
    """Prompt and completion tokens of the entries held."""
    oldest: float | None
    newest: float | None
    """Unix times of the oldest and newest entry."""
    days: float


class ResponseCache:
    """The cache file (see the module's docstring). Opened on first use."""

    def __init__(self, folder: Path | None = None, days: float | None = None) -> None:
        self.folder = folder if folder is not None else cache_dir()
        self.path = self.folder / DB_NAME
        self.days = days if days is not None else expiry_days()
        self._local = threading.local()
        self._lock = threading.Lock()
        self._ready = False

    # ------------------------------------------------------------------ plumbing

    def _connect(self) -> sqlite3.Connection:
        """This thread's connection (SQLite connections are not shared across threads)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000,
                                   isolation_level=None)
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            with self._lock:
                if not self._ready:
                    conn.execute("PRAGMA journal_mode=WAL")
                    conn.executescript(_SCHEMA)
                    self._ready = True
            conn.execute("PRAGMA synchronous=NORMAL")
        except (OSError, sqlite3.Error) as exc:
            raise CacheError(f"the response cache {self.path} cannot be used: {exc} (set "
                             f"{CACHE_DIR_ENV} to another folder, or run with --no-cache)"
                             ) from None
        self._local.conn = conn
        return conn

    @staticmethod
    def key(base_url: str, digest: str) -> str:
        return hashlib.sha256(f"{base_url}\n{digest}".encode()).hexdigest()

    def _fail(self, exc: sqlite3.Error) -> CacheError:
        return CacheError(f"the response cache {self.path} failed: {exc} (run with --no-cache "
                          "to go on without it)")

    # ------------------------------------------------------------------ use

    def get(self, base_url: str, digest: str) -> str | None:
        """The response text kept for this request at this endpoint, if not expired."""
        conn = self._connect()
        now = time.time()
        key = self.key(base_url, digest)
        try:
            row = conn.execute("SELECT response, created FROM responses WHERE key = ?",
                               (key,)).fetchone()
            if row is None or row[1] < now - self.days * _DAY:
                return None
            conn.execute("UPDATE responses SET hits = hits + 1, last_hit = ? WHERE key = ?",
                         (now, key))
        except sqlite3.Error as exc:
            raise self._fail(exc) from None
        return str(row[0])

    def put(self, base_url: str, digest: str, model: str, text: str, prompt_tokens: int,
            completion_tokens: int) -> None:
        """Keep a chat completion (the caller never passes an error or a malformed body)."""
        conn = self._connect()
        try:
            conn.execute(
                "INSERT OR REPLACE INTO responses (key, base_url, model, request_hash, response, "
                "prompt_tokens, completion_tokens, created, hits, last_hit) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, NULL)",
                (self.key(base_url, digest), base_url, model, digest, text, prompt_tokens,
                 completion_tokens, time.time()))
        except sqlite3.Error as exc:
            raise self._fail(exc) from None

    @staticmethod
    def _endpoint_key(base_url: str, model: str, credential: str) -> str:
        # The credential is hashed with the rest: a new API key is checked again.
        return hashlib.sha256(f"{base_url}\n{model}\n{credential}".encode()).hexdigest()

    def endpoint_checked(self, base_url: str, model: str, credential: str) -> bool:
        """Whether this endpoint, model and key passed the check within
        `ENDPOINT_CHECK_SECONDS`."""
        conn = self._connect()
        try:
            row = conn.execute("SELECT checked FROM endpoints WHERE key = ?",
                               (self._endpoint_key(base_url, model, credential),)).fetchone()
        except sqlite3.Error as exc:
            raise self._fail(exc) from None
        return row is not None and row[0] >= time.time() - ENDPOINT_CHECK_SECONDS

    def mark_endpoint(self, base_url: str, model: str, credential: str) -> None:
        """Record that this endpoint, model and key passed the check now."""
        conn = self._connect()
        try:
            conn.execute("INSERT OR REPLACE INTO endpoints (key, checked) VALUES (?, ?)",
                         (self._endpoint_key(base_url, model, credential), time.time()))
        except sqlite3.Error as exc:
            raise self._fail(exc) from None

    def stats(self) -> CacheStats:
        if not self.path.exists():
            return CacheStats(self.path, 0, 0, 0, 0, 0, None, None, self.days)
        conn = self._connect()
        cutoff = time.time() - self.days * _DAY
        try:
            entries, hits, tokens, oldest, newest = conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(hits), 0), "
                "COALESCE(SUM(prompt_tokens + completion_tokens), 0), MIN(created), "
                "MAX(created) FROM responses").fetchone()
            (expired,) = conn.execute("SELECT COUNT(*) FROM responses WHERE created < ?",
                                      (cutoff,)).fetchone()
        except sqlite3.Error as exc:
            raise self._fail(exc) from None
        size = sum(p.stat().st_size for p in self.folder.glob(f"{DB_NAME}*") if p.is_file())
        return CacheStats(self.path, int(entries), int(expired), size, int(hits), int(tokens),
                          oldest, newest, self.days)

    def clear(self, older_than_days: float | None = None, expired: bool = False) -> int:
        """Remove every entry, or those older than `older_than_days`, or the expired ones;
        returns how many were removed."""
        if not self.path.exists():
            return 0
        conn = self._connect()
        days = self.days if expired else older_than_days
        try:
            if days is None:
                removed = conn.execute("DELETE FROM responses").rowcount
                conn.execute("DELETE FROM endpoints")
            else:
                removed = conn.execute("DELETE FROM responses WHERE created < ?",
                                       (time.time() - days * _DAY,)).rowcount
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.execute("VACUUM")
        except sqlite3.Error as exc:
            raise self._fail(exc) from None
        return int(removed)

    def check(self) -> None:
        """Open the cache file and its secret now: a CacheError says what is wrong before
        anything runs, rather than at each run's first request."""
        self._connect()
        self._secret()

    def close(self) -> None:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # ------------------------------------------------------------------ quote keys

    def quote_key(self, identity: Mapping[str, Any]) -> str:
        """The quote key of a run with this identity (scenario hash, seed, settings): the same
        whenever the same run is asked for on this machine, so its prompts (and requests) are
        too; unknowable without the secret kept beside the cache."""
        message = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str)
        return hmac.new(self._secret(), message.encode(), hashlib.sha256).hexdigest()[:32]

    def _secret(self) -> bytes:
        path = self.folder / SECRET_NAME
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            try:
                # Exclusive creation: two processes starting at once agree on one secret.
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass
            else:
                with os.fdopen(fd, "w", encoding="ascii") as handle:
                    handle.write(secrets.token_hex(32))
            for _ in range(50):  # a writer that just created it may not have written yet
                text = path.read_text(encoding="ascii").strip()
                if text:
                    return text.encode()
                time.sleep(0.01)
        except OSError as exc:
            raise CacheError(f"the response cache's secret {path} cannot be used: "
                             f"{exc.strerror} (run with --no-cache)") from None
        raise CacheError(f"the response cache's secret {path} is empty: delete it")


def run_identity(scenario_hash: str, seed: int, agents: Mapping[str, Any], max_rounds: int,
                 context_size: int) -> dict[str, Any]:
    """What makes two runs the same run for the cache: the scenario's content, the seed, who
    plays with which settings (endpoint addresses left out), the round limit and the context."""
    return {"scenario": scenario_hash, "seed": seed, "max_rounds": max_rounds,
            "context": context_size,
            "agents": {p: (a.identity() if hasattr(a, "identity") else a)
                       for p, a in sorted(agents.items())}}
