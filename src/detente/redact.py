"""Secrets never reach a file or a terminal: API keys, bearer tokens and URL passwords.

Every error text from an endpoint and every raw response a run keeps passes through a
`Redactor`; every endpoint URL stored (run headers, sweep manifests) or printed loses its
`user:password@` part.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from urllib.parse import urlsplit, urlunsplit

_SECRET_PATTERNS = (
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{6,}"),
    re.compile(r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]+"),
    re.compile(r"(?i)(api[_-]?key[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]+"),
    re.compile(r"\b(sk-)[A-Za-z0-9_-]{8,}"),
)


class Redactor:
    """Removes secrets from any text before it is stored or shown: the API key and URL
    passwords given, and anything that looks like a bearer token, an Authorization value, an
    api_key field or an OpenAI-style key."""

    def __init__(self, secrets: Sequence[str]) -> None:
        self.secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "[redacted]")
        for pattern in _SECRET_PATTERNS:
            text = pattern.sub(lambda m: m.group(1) + "[redacted]", text)
        return text


def url_secrets(url: str | None) -> list[str]:
    """The password (and user) a URL carries, if any."""
    if not url:
        return []
    parts = urlsplit(url)
    return [s for s in (parts.password, parts.username) if s]


def strip_credentials(url: str | None) -> str | None:
    """`url` without `user:password@`: such credentials are never stored or printed."""
    if not url:
        return url
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
