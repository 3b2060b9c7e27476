"""The embedded server's memory settings and the memory bench's /proc sampling (offline, fast)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

import numpy as np
import pytest

from detente.local_server import _GRAMMAR_LAST, _LEAN_CACHE, LocalServer, launcher

BENCH = Path(__file__).parents[1] / "bench" / "bench_memory.py"
MB = 1_000_000


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("detente_bench_memory", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while building
    spec.loader.exec_module(module)
    return module


def _option(cmd: list[str], name: str) -> str:
    assert name in cmd, f"{name} missing from {cmd}"
    return cmd[cmd.index(name) + 1]


def test_default_command_bounds_the_servers_memory(tmp_path: Path) -> None:
    cmd = LocalServer(tmp_path / "model.gguf").command()
    assert _option(cmd, "--n_ctx") == "4096"
    # llama_cpp.server keeps every prompt position's logits by default (n_ctx x vocabulary
    # floats, 0.8 GB at 4096) and copies them into each prompt-cache entry
    assert _option(cmd, "--logits_all") == "false"
    # without logits_all each cache entry still copies n_batch rows of logits (0.2 MB a row)
    assert int(_option(cmd, "--n_batch")) <= 256
    assert _option(cmd, "--cache") == "true"
    cache = int(_option(cmd, "--cache_size"))
    # room for five parties' states of about 3,000 tokens (23 KB a token for this model): the
    # cache keeps one state per party (issue 12)...
    assert cache >= 5 * 3000 * 23_000
    # ...and far from the 1 GB that let the server reach 8 GB
    assert cache <= 450 * MB


def test_the_cache_can_be_turned_off_or_resized(tmp_path: Path) -> None:
    assert "--cache" not in LocalServer(tmp_path / "m.gguf", prompt_cache=False).command()
    resized = LocalServer(tmp_path / "m.gguf", prompt_cache_bytes=64 * MB, n_batch=512)
    cmd = resized.command()
    assert _option(cmd, "--cache_size") == str(64 * MB)
    assert _option(cmd, "--n_batch") == "512"


class _FakeRAMCache:
    def __init__(self, capacity_bytes: int) -> None:
        self.capacity_bytes = capacity_bytes
        self.stored: dict[tuple[int, ...], SimpleNamespace] = {}
        self.cache_state = self.stored

    def __setitem__(self, key: list[int], value: SimpleNamespace) -> None:
        self.stored[tuple(key)] = value


class _FakeLlama:
    @staticmethod
    def longest_token_prefix(a: tuple[int, ...], b: tuple[int, ...]) -> int:
        shared = 0
        for x, y in zip(a, b, strict=False):
            if x != y:
                break
            shared += 1
        return shared


def _launch_lean_cache(monkeypatch: pytest.MonkeyPatch, flags: list[str]) -> type:
    """Run the launcher's cache snippet against a stand-in llama_cpp; the cache class it leaves."""
    fake = ModuleType("llama_cpp")
    fake.LlamaRAMCache = _FakeRAMCache  # type: ignore[attr-defined]
    fake.Llama = _FakeLlama  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "llama_cpp", fake)
    monkeypatch.setattr(sys, "argv", ["launcher", "--model", "m.gguf", *flags])
    exec(_LEAN_CACHE, {"sys": sys})
    cache_class: type = fake.LlamaRAMCache  # type: ignore[attr-defined]
    return cache_class


def test_the_server_is_launched_with_the_lean_cache_and_the_grammar_last_sampler() -> None:
    code = launcher()
    assert _LEAN_CACHE in code and _GRAMMAR_LAST in code
    assert code.index("orphan-watchdog") < code.index(_LEAN_CACHE)
    assert code.index(_LEAN_CACHE) < code.index(_GRAMMAR_LAST) < code.index("run_module")
    assert _GRAMMAR_LAST not in launcher(grammar_last=False)
    server = LocalServer("m.gguf", grammar_last=False)
    server.port = 1
    assert _GRAMMAR_LAST not in server.command()[2]


def test_cached_states_keep_one_logits_row_without_logits_all(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cache_class = _launch_lean_cache(monkeypatch, ["--logits_all", "true", "--logits_all", "false"])
    assert cache_class is not _FakeRAMCache and issubclass(cache_class, _FakeRAMCache)
    cache = cache_class(capacity_bytes=1 << 20)
    rows = np.arange(128 * 6, dtype=np.single).reshape(128, 6)  # n_batch x vocabulary
    cache[[1, 2, 3]] = SimpleNamespace(scores=rows, n_tokens=300)
    kept = cache.stored[(1, 2, 3)].scores
    assert kept.shape == (1, 6)
    assert kept.base is None  # a copy: the 128 rows can be freed
    np.testing.assert_array_equal(kept[0], rows[-1])
    restored = np.zeros((128, 6), dtype=np.single)
    restored[:300, :] = kept  # Llama.load_state's assignment broadcasts the row back
    np.testing.assert_array_equal(restored[5], rows[-1])


@pytest.mark.parametrize("flags", [[], ["--logits_all", "true"], ["--logits_all", "false",
                                                                   "--logits_all", "True"]])
def test_the_cache_is_left_alone_with_logits_all(
    monkeypatch: pytest.MonkeyPatch, flags: list[str]
) -> None:
    assert _launch_lean_cache(monkeypatch, flags) is _FakeRAMCache


def test_bench_can_override_every_setting_it_documents() -> None:
    defaults = LocalServer.__init__.__kwdefaults__
    assert defaults is not None
    assert {"n_ctx", "n_batch", "prompt_cache", "prompt_cache_bytes", "extra_args"} <= set(defaults)
    bench = _bench()
    assert bench.parse_overrides(["n_ctx=2048", "prompt_cache=False", "chat_format=chatml",
                                  'extra_args=["--n_batch", "64"]']) == {
        "n_ctx": 2048, "prompt_cache": False, "chat_format": "chatml",
        "extra_args": ["--n_batch", "64"]}


# A parent that starts a child holding 150 MB, which starts a grandchild holding 60 MB. Each
# process prints "LEVEL PID" once it holds its memory (relaying its descendants' lines first);
# the parent then waits for its stdin to close, the others for their parent to exit.
_TREE = """\
import os, subprocess, sys, time
level, script = int(sys.argv[1]), sys.argv[2]
held = b"x" * SIZES[level]  # bytes * n writes every page: all of it resident
if level < 2:
    child = subprocess.Popen([sys.executable, "-c", script, str(level + 1), script],
                             stdout=subprocess.PIPE, text=True)
    for _ in range(2 - level):
        print(child.stdout.readline().strip(), flush=True)
print(level, os.getpid(), flush=True)
if level == 0:
    sys.stdin.readline()
else:
    parent = os.getppid()
    while os.getppid() == parent:
        time.sleep(0.05)
"""


def test_sampling_sums_a_process_tree() -> None:
    bench = _bench()
    sizes = [0, 150 * MB, 60 * MB]
    script = _TREE.replace("SIZES", repr(sizes))
    parent = subprocess.Popen([sys.executable, "-c", script, "0", script],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        pids: dict[int, int] = {}
        for _ in range(3):
            level, pid = parent.stdout.readline().split()
            pids[int(level)] = int(pid)
        assert pids[0] == parent.pid
        assert bench.descendants(parent.pid) == sorted([pids[1], pids[2]])

        sizes_now = bench.tree_rss(parent.pid)
        assert set(sizes_now) == set(pids.values())
        assert sizes_now[pids[1]] >= 150 * MB
        assert 60 * MB <= sizes_now[pids[2]] < 150 * MB
        assert sizes_now[pids[0]] < 60 * MB  # the parent holds little of its own

        trace = bench.Trace(parent.pid)
        taken = trace.sample(0.0)
        assert taken.processes == 3
        assert taken.main < 60 * MB
        assert taken.children >= 210 * MB
        assert taken.total == taken.main + taken.children
        assert trace.peak("total") == taken.total
        assert trace.hwm[pids[1]] >= 150 * MB  # VmHWM: each process's own peak
    finally:
        if parent.stdin is not None:
            parent.stdin.close()
        parent.wait(timeout=30)  # its child and grandchild exit after it


def test_a_process_that_is_gone_counts_as_nothing() -> None:
    bench = _bench()
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    pid = int(done.stdout)
    assert bench.rss_bytes(pid) == 0
    assert bench.hwm_bytes(pid) == 0
    assert bench.descendants(pid) == []


def test_bench_script_has_help() -> None:
    done = subprocess.run([sys.executable, str(BENCH), "--help"], capture_output=True, text=True,
                          check=True)
    assert "--rounds" in done.stdout
    assert "1.5 GB" in done.stdout
