"""A fault-injecting responder for the fake OpenAI server, deterministic without being fragile.

`Faulty` wraps a responder: a share of the calls (`rate`) get a fault instead of an answer, one
of 429, 500, 503, a connection reset, a stall past the client's timeout, a malformed body, a
completion without choices, or an answer that breaks the schema. Which call gets which is
decided from the request body and how many times that same body was seen before, so a retry can
succeed, and the whole run does not depend on thread timing.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import Counter
from typing import Any

from fake_openai import HTTPError, Raw, Reset, Stall

FAULTS = ("429", "500", "503", "reset", "stall", "malformed", "no_choices", "schema")
NO_CHOICES = json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": "m",
                         "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1,
                                                  "total_tokens": 2}})


class Faulty:
    """Answers with `inner`, except for a deterministic share of faults."""

    def __init__(self, inner: Any, rate: float = 0.2, stall: float = 5.0, salt: str = "") -> None:
        self.inner = inner
        self.rate = rate
        self.stall = stall
        self.salt = salt
        self.seen: Counter[str] = Counter()
        self.injected: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __call__(self, body: dict[str, Any]) -> Any:
        key = json.dumps(body, sort_keys=True)
        with self._lock:
            self.seen[key] += 1
            nth = self.seen[key]
        digest = hashlib.sha256(f"{self.salt}|{nth}|{key}".encode()).digest()
        draw = int.from_bytes(digest[:8], "big") / 2**64
        if draw >= self.rate:
            return self.inner(body)
        fault = FAULTS[digest[8] % len(FAULTS)]
        with self._lock:
            self.injected[fault] += 1
        if fault in ("429", "500", "503"):
            return HTTPError(int(fault))
        if fault == "reset":
            return Reset()
        if fault == "stall":
            return Stall(self.stall, self.inner(body))
        if fault == "malformed":
            return Raw('{"id": "chatcmpl-x", "choices": [{"message": ')
        if fault == "no_choices":
            return Raw(NO_CHOICES)
        return '{"not": "what the schema asks for"}'
