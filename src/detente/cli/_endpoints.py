"""Clean interrupts for the command line: SIGINT and SIGTERM unwind a run or a sweep."""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Iterator
from types import FrameType

from detente.errors import DetenteError


class _Interrupted(DetenteError):
    exit_code = 130


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGINT and SIGTERM unwind the run, so servers stop and the run folder is finalized."""

    def handler(signum: int, frame: FrameType | None) -> None:
        runner = sys.modules.get("detente.runner")
        # A negotiation on an event loop is cancelled there (it logs the interruption and
        # writes its result); anything else is interrupted where it stands.
        cancelled = runner is not None and runner.interrupt_active()
        # Only a command that imported detente.endpoints can have registered a hook there.
        endpoints = sys.modules.get("detente.endpoints")
        hooks = endpoints.ON_INTERRUPT if endpoints is not None else []
        while hooks:
            hooks.pop()()
        if not cancelled:
            raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    except KeyboardInterrupt:
        raise _Interrupted("interrupted") from None
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        endpoints = sys.modules.get("detente.endpoints")
        if endpoints is not None:
            endpoints.ON_INTERRUPT.clear()
