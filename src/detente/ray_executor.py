"""The `ray` executor of `detente sweep`: every run a Ray task on an existing Ray cluster.

Use it for many endpoints or CPU-heavy scripted sweeps; a single remote endpoint is served well
by one process (the `local` executor). The cluster's workers need detente installed and the
sweep folder on a file system they share; the manifest, skip-on-rerun and resume work as with
any executor, since each run is started or resumed from its folder.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from detente.errors import DetenteError
from detente.sweeps import (
    WORKER_DIED,
    SweepEntry,
    SweepManifest,
    _record,
    run_entry,
    worker_prices,
)

RAY_HINT = "pip install 'detente[ray]'"


class RayError(DetenteError):
    """Ray is missing, or the cluster cannot be reached."""


def run_on_ray(
    sweep_dir: Path, manifest: SweepManifest, todo: list[SweepEntry], concurrency: int,
    on_done: Callable[[SweepEntry], None] | None, address: str | None, cache: bool = False,
) -> SweepManifest:
    """Submit every entry as a Ray task, at most `concurrency` in flight; record each as it
    ends. `address`: the cluster (`ray://host:10001`, `host:6379` or `auto`); None starts a
    local Ray instance. `cache`: each worker uses the response cache of its own machine."""
    try:
        import ray
    except ImportError:
        raise RayError(f"the ray executor needs Ray: {RAY_HINT}") from None
    try:
        ray.init(address=address, ignore_reinit_error=True, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
    except Exception as exc:  # Ray raises many kinds: one message is what a user needs
        raise RayError(f"cannot reach the Ray cluster at {address or 'a new local instance'}: "
                       f"{type(exc).__name__}: {exc}") from None
    task: Any = ray.remote(num_cpus=1, max_retries=0)(run_entry)
    queue = list(todo)
    running: dict[Any, tuple[SweepEntry, float]] = {}
    while queue or running:
        while queue and len(running) < max(1, concurrency):
            entry = queue.pop(0)
            agents = manifest.team(entry)
            ref = task.remote(entry.scenario_path, str((sweep_dir / entry.run_dir).resolve()),
                              {p: s.model_dump() for p, s in agents.items()}, entry.seed,
                              manifest.rounds_of(entry), manifest.log_prompts, cache,
                              worker_prices(), entry.factors)
            running[ref] = (entry, time.perf_counter())
        ready, _ = ray.wait(list(running), num_returns=1)
        for ref in ready:
            entry, started = running.pop(ref)
            try:
                status, detail, seconds = ray.get(ref)
            except Exception as exc:  # a worker that died, a task that failed in Ray
                name = type(exc).__name__
                detail = WORKER_DIED if "Crash" in name or "Died" in name else f"{name}: {exc}"
                status, seconds = "failed", time.perf_counter() - started
            _record(sweep_dir, manifest, entry, status, detail, seconds, on_done)
    return manifest
