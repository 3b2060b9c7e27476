"""Sweeps: the cross product of scenarios (variants) and seeds, run with bounded concurrency.

A sweep folder holds `sweep.json` (the manifest: what was asked and each run's status) and one
run folder per (scenario, seed): `<scenario id>/seed-<n>/`. Running the same sweep again skips
completed runs, resumes interrupted ones from their checkpoints, and retries failed ones. A
failed run is recorded with its reason and never stops the others.

Executors: `local` runs the negotiations concurrently in this process, on one event loop (model
calls are awaited, so hundreds can be in flight; scripted turns run in threads); `processes`
runs each in a worker process (for CPU-heavy scripted sweeps); `ray` runs each as a Ray task on
a cluster (`detente.ray_executor`).

A sweep's budget (`--budget`, local executor) is one `detente.costs.Budget` shared by all its runs:
the first call it refuses stops every run at its next call (status `budget`), and runs not yet
started are not started; rerunning the sweep with a larger budget goes on. The response cache
(`--cache`, on by default) answers every request a run repeats (see `detente.cache`); a run
started with it gets a quote key derived from its identity, so the same run asked for again
sends the same requests. Each entry records its run's tokens and cost (`SweepEntry.cost`).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel

from detente.agents.base import Agent
from detente.costs import Budget, Cost
from detente.events import AgentSettings
from detente.files import DiskError
from detente.loading import ScenarioBundle

if TYPE_CHECKING:
    from detente.cache import ResponseCache


@dataclass
class DesignCell:
    """A design's cell as a sweep runs it: its folder key, scenario, levels and round limit."""

    key: str
    bundle: ScenarioBundle
    levels: dict[str, str]
    rounds: int | None = None

MANIFEST = "sweep.json"
SWEEP_FORMAT_VERSION = 2
"""2: each entry's cost, the `budget` status and the sweep's budget."""
FINISHED = ("deal", "no_deal", "deadlock")

EntryStatus = Literal["pending", "complete", "failed", "budget"]
"""`budget`: stopped by the sweep's budget, or not started once it was spent."""


class SweepEntry(BaseModel):
    scenario_id: str
    scenario_path: str
    seed: int
    run_dir: str
    """Relative to the sweep folder."""
    status: EntryStatus = "pending"
    outcome: str | None = None
    """deal, no_deal or deadlock, once complete."""
    reason: str | None = None
    """Why the run failed (or stopped at the budget)."""
    seconds: float | None = None
    cost: Cost | None = None
    """Its model calls: requests, tokens and dollars (see `detente.costs`), once it has run."""
    factors: dict[str, str] = {}
    """A design's run: the level of each factor (`scenario` first; see `detente.designs`)."""
    team: str | None = None
    """The key of who plays in `SweepManifest.agents` (None: the scenario id)."""
    rounds: int | None = None
    """A design's run: its round limit (None: the manifest's `rounds`)."""


class SweepManifest(BaseModel):
    format_version: int = SWEEP_FORMAT_VERSION
    name: str
    created: str
    updated: str
    seeds: list[int]
    rounds: int | None
    agents: dict[str, dict[str, AgentSettings]]
    """Per scenario id: who plays each party. An LLM agent's `seed` is None unless pinned: each
    run sends its own seed."""
    entries: list[SweepEntry]
    log_prompts: bool = True
    budget_usd: float | None = None
    """The sweep's spending limit (the last one given; a rerun keeps it unless given another)."""
    factors: dict[str, list[str]] = {}
    """A design's factors and their levels (`scenario` first; empty for a sweep of scenarios
    and seeds alone)."""
    design_file: str | None = None
    """The design file's copy in the sweep folder (see `detente.designs`), if it had one."""

    def team(self, entry: SweepEntry) -> dict[str, AgentSettings]:
        """Who plays in `entry`'s run."""
        return self.agents[entry.team or entry.scenario_id]

    def rounds_of(self, entry: SweepEntry) -> int | None:
        return entry.rounds if entry.rounds is not None else self.rounds

    def counts(self) -> dict[str, int]:
        out = {"pending": 0, "complete": 0, "failed": 0, "budget": 0}
        for e in self.entries:
            out[e.status] += 1
        return out

    def cost(self) -> Cost:
        """The sweep's model calls so far, over every run that has made any."""
        from detente.costs import total

        return total(e.cost for e in self.entries if e.cost is not None)


def sweep_name(bundles: Sequence[ScenarioBundle], seeds: Sequence[int],
               agents: Mapping[str, Mapping[str, AgentSettings]], rounds: int | None) -> str:
    """A name that is the same whenever the same sweep is asked for again."""
    identity = {
        "scenarios": sorted(b.content_hash for b in bundles),
        "seeds": list(seeds),
        "rounds": rounds,
        "agents": {k: {p: s.model_dump(exclude={"base_url", "local_model"})
                       for p, s in v.items()} for k, v in sorted(agents.items())},
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:10]
    return f"sweep-{digest}"


def plan_sweep(
    sweep_dir: Path,
    bundles: Sequence[ScenarioBundle],
    seeds: Sequence[int],
    agents: Mapping[str, Mapping[str, AgentSettings]],
    rounds: int | None,
    log_prompts: bool = True,
    cells: Sequence[DesignCell] | None = None,
    factors: Mapping[str, Sequence[str]] | None = None,
    design_file: str | None = None,
) -> SweepManifest:
    """The manifest for this sweep: the existing one (statuses refreshed) or a new one.

    `cells`: a design's (see `detente.designs`): each run once per seed into
    `<cell key>/seed-<n>`, played by `agents[cell key]`; `bundles` are then unused."""
    now = _now()
    if cells is None:
        entries = [
            SweepEntry(scenario_id=b.scenario.id, scenario_path=str(b.path), seed=seed,
                       run_dir=f"{b.scenario.id}/seed-{seed}")
            for b in bundles
            for seed in seeds
        ]
    else:
        entries = [
            SweepEntry(scenario_id=c.bundle.scenario.id, scenario_path=str(c.bundle.path),
                       seed=seed, run_dir=f"{c.key}/seed-{seed}", team=c.key,
                       rounds=c.rounds, factors=dict(c.levels))
            for c in cells
            for seed in seeds
        ]
    created = now
    path = sweep_dir / MANIFEST
    old: SweepManifest | None = None
    if path.exists():
        old = SweepManifest.model_validate_json(path.read_text(encoding="utf-8"))
        created = old.created
        previous = {e.run_dir: e for e in old.entries}
        entries = [previous.get(e.run_dir, e) for e in entries]
    manifest = SweepManifest(name=sweep_dir.name, created=created, updated=now,
                             seeds=list(seeds), rounds=rounds,
                             agents={k: dict(v) for k, v in agents.items()}, entries=entries,
                             log_prompts=log_prompts,
                             budget_usd=old.budget_usd if old is not None else None,
                             factors={k: list(v) for k, v in (factors or {}).items()},
                             design_file=design_file)
    for entry in manifest.entries:
        # The folder, not the manifest, says whether a run finished (the manifest may lag).
        status = finished_status(sweep_dir / entry.run_dir)
        if status is not None:
            entry.status, entry.outcome = "complete", status
        elif entry.status == "complete":
            entry.status = "pending"
    save_manifest(sweep_dir, manifest)
    return manifest


def finished_status(run_dir: Path) -> str | None:
    """The status of a finished run as its `result.json` says it; None for a run that has not
    finished, or never started, or whose result cannot be read."""
    from detente.errors import InputError
    from detente.runs import RunFolder

    try:
        status = RunFolder(run_dir).stored_result.status
    except InputError:
        return None
    return str(status) if status in FINISHED else None


def save_manifest(sweep_dir: Path, manifest: SweepManifest) -> None:
    """Atomic: a crash mid-write never leaves a torn manifest."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    manifest.updated = _now()
    # Endpoint credentials are never written: the running sweep keeps them in memory.
    stored = manifest.model_copy(update={"agents": {
        sid: {p: a.stored() for p, a in team.items()} for sid, team in manifest.agents.items()}})
    tmp = sweep_dir / f".{MANIFEST}.tmp"
    try:
        with tmp.open("w", encoding="utf-8") as handle:
            handle.write(stored.model_dump_json(indent=2) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, sweep_dir / MANIFEST)
    except OSError as exc:
        raise DiskError(sweep_dir / MANIFEST, exc) from None


Executor = Literal["local", "processes", "ray"]
EXECUTORS: tuple[str, ...] = ("local", "processes", "ray")


def run_sweep(
    sweep_dir: Path,
    manifest: SweepManifest,
    concurrency: int,
    on_done: Callable[[SweepEntry], None] | None = None,
    executor: Executor = "local",
    address: str | None = None,
    budget: Budget | None = None,
    cache: bool = False,
) -> SweepManifest:
    """Run every entry not complete, at most `concurrency` at once (see the executors in the
    module's docstring). `budget` (local executor only) is shared by every run; `cache`: the
    response cache answers what it has seen."""
    todo = [e for e in manifest.entries if e.status != "complete"]
    if not todo:
        return manifest
    if budget is not None and executor != "local":
        from detente.errors import InputError, Problem

        raise InputError("--budget", [Problem("", "a sweep's budget is kept by one process: use "
                                              "it with --executor local")])
    if executor == "local":
        import asyncio

        from detente.runner import run_async

        try:
            return run_async(_run_local(sweep_dir, manifest, todo, concurrency, on_done,
                                        budget, cache))
        except asyncio.CancelledError:  # Ctrl-C: each run logged it; a rerun resumes them
            raise KeyboardInterrupt from None
    if executor == "ray":
        from detente.ray_executor import run_on_ray

        done: SweepManifest = run_on_ray(sweep_dir, manifest, todo, concurrency, on_done,
                                         address, cache)
        return done
    return _run_processes(sweep_dir, manifest, todo, concurrency, on_done, cache)


def _record(sweep_dir: Path, manifest: SweepManifest, entry: SweepEntry, status: str,
            detail: str | None, seconds: float,
            on_done: Callable[[SweepEntry], None] | None) -> None:
    entry.seconds = round(seconds, 3)
    if status in ("failed", "budget"):
        entry.status, entry.reason, entry.outcome = status, detail, None  # type: ignore[assignment]
    else:
        entry.status, entry.outcome, entry.reason = "complete", detail, None
    entry.cost = run_folder_cost(sweep_dir / entry.run_dir) or entry.cost
    save_manifest(sweep_dir, manifest)
    if on_done is not None:
        on_done(entry)


async def _run_local(
    sweep_dir: Path, manifest: SweepManifest, todo: list[SweepEntry], concurrency: int,
    on_done: Callable[[SweepEntry], None] | None, budget: Budget | None = None,
    cache: bool = False,
) -> SweepManifest:
    """Every entry a task on this event loop, at most `concurrency` running at once; once the
    budget refuses a call, the runs not yet started are not started."""
    import asyncio

    from detente.cache import ResponseCache

    gate = asyncio.Semaphore(max(1, concurrency))
    store = ResponseCache() if cache else None

    async def one(entry: SweepEntry) -> None:
        async with gate:
            if budget is not None and budget.refused is not None:
                _record(sweep_dir, manifest, entry, "budget",
                        f"not started: {budget.refused}", 0.0, on_done)
                return
            agents = manifest.team(entry)
            status, detail, seconds = await arun_entry(
                entry.scenario_path, str(sweep_dir / entry.run_dir),
                {p: s.model_dump() for p, s in agents.items()}, entry.seed,
                manifest.rounds_of(entry), manifest.log_prompts, budget=budget, cache=store,
                factors=entry.factors)
            _record(sweep_dir, manifest, entry, status, detail, seconds, on_done)

    await asyncio.gather(*(one(entry) for entry in todo))
    return manifest


def _run_processes(
    sweep_dir: Path, manifest: SweepManifest, todo: list[SweepEntry], concurrency: int,
    on_done: Callable[[SweepEntry], None] | None, cache: bool = False,
) -> SweepManifest:
    """Each entry in a worker process, at most `concurrency` at once.

    A worker process that dies (killed, out of memory) takes down its pool: every run it held is
    recorded as failed (a rerun resumes them), a new pool replaces it, and the sweep goes on.
    """
    # Spawned workers: forking a process that runs threads (rich, langgraph) can deadlock.
    context = multiprocessing.get_context("spawn")
    workers = max(1, concurrency)
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context)
    running: dict[Future[tuple[str, str | None, float]], SweepEntry] = {}
    queue = list(todo)

    def record(entry: SweepEntry, status: str, detail: str | None, seconds: float) -> None:
        _record(sweep_dir, manifest, entry, status, detail, seconds, on_done)

    try:
        while queue or running:
            while queue and len(running) < workers:
                entry = queue.pop(0)
                agents = manifest.team(entry)
                future = pool.submit(
                    run_entry, entry.scenario_path, str(sweep_dir / entry.run_dir),
                    {p: s.model_dump() for p, s in agents.items()}, entry.seed,
                    manifest.rounds_of(entry), manifest.log_prompts, cache, worker_prices(),
                    entry.factors,
                )
                running[future] = entry
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            broken = False
            for future in done:
                entry = running.pop(future)
                try:
                    status, detail, seconds = future.result()
                except BrokenProcessPool:
                    broken = True
                    status, detail, seconds = "failed", WORKER_DIED, 0.0
                except Exception as exc:  # recorded, never raised
                    status, detail, seconds = "failed", f"{type(exc).__name__}: {exc}", 0.0
                record(entry, status, detail, seconds)
            if broken:
                # The dead worker's pool is gone with every run it held: record them, go on.
                for entry in running.values():
                    record(entry, "failed", WORKER_DIED, 0.0)
                running.clear()
                pool.shutdown(wait=False, cancel_futures=True)
                pool = ProcessPoolExecutor(max_workers=workers, mp_context=context)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return manifest


WORKER_DIED = ("its worker process died (killed or out of memory) and took the runs it held "
               "with it; run the sweep again to resume them")


def worker_prices() -> tuple[str | None, str | None]:
    """The price layers of this process (`detente.costs.prices_from`), for a worker."""
    from detente.costs import price_layers

    layers = price_layers()
    return (str(layers.file) if layers.file is not None else None,
            str(layers.config) if layers.config is not None else None)


def run_entry(
    scenario_path: str, run_dir: str, agents: dict[str, dict[str, object]], seed: int,
    rounds: int | None, log_prompts: bool = True, cache: bool = False,
    prices: tuple[str | None, str | None] = (None, None),
    factors: dict[str, str] | None = None,
) -> tuple[str, str | None, float]:
    """One run in a worker process: ("complete", outcome) or ("failed", reason), and seconds.
    `prices`: the price file and config file of the sweep's process; `factors`: the run's
    levels of its design's factors."""
    from detente.cache import ResponseCache
    from detente.costs import prices_from
    from detente.runner import run_async

    store = ResponseCache() if cache else None
    try:
        with prices_from(*prices):
            return run_async(arun_entry(scenario_path, run_dir, agents, seed, rounds,
                                        log_prompts, cache=store, factors=factors))
    finally:
        if store is not None:
            store.close()


async def arun_entry(
    scenario_path: str, run_dir: str, agents: dict[str, dict[str, object]], seed: int,
    rounds: int | None, log_prompts: bool = True, budget: Budget | None = None,
    cache: ResponseCache | None = None, factors: Mapping[str, str] | None = None,
) -> tuple[str, str | None, float]:
    """One run on the running event loop: started, or resumed from its folder. ("complete",
    outcome), ("failed", reason) or ("budget", reason: stopped by the budget), and seconds."""
    from detente.agents import make_agent
    from detente.errors import DetenteError
    from detente.loading import load_bundle
    from detente.runner import RunPlan, RunStoppedByBudget, aresume_run, astart_run

    started = time.perf_counter()
    folder = Path(run_dir)
    settings = {p: AgentSettings.model_validate(s) for p, s in agents.items()}

    def current(party: str, used: AgentSettings, bundle: ScenarioBundle) -> Agent:
        # The run's own settings (its seed among them), at today's endpoint: an embedded
        # server listens on a new port every sweep.
        return make_agent(party, used.model_copy(update={"base_url": settings[party].base_url}),
                          bundle)

    try:
        if _started(folder):
            # The log carries it on, with its own quote key: a cache answers what it repeats.
            record = await aresume_run(folder, current, budget=budget, cache=cache)
        else:
            if folder.exists():
                shutil.rmtree(folder)  # a run that never got going: start it afresh
            bundle = load_bundle(Path(scenario_path))
            plan = RunPlan(bundle=bundle, agents=settings, seed=seed, max_rounds=rounds,
                           log_prompts=log_prompts, budget=budget, cache=cache,
                           quote_key=cached_quote_key(cache, bundle, settings, seed, rounds),
                           factors=factors)
            record = await astart_run(plan, current, run_dir=folder)
    except RunStoppedByBudget as exc:
        return "budget", exc.reason, time.perf_counter() - started
    except DetenteError as exc:
        return "failed", str(exc).splitlines()[0], time.perf_counter() - started
    except Exception as exc:
        return "failed", f"{type(exc).__name__}: {exc}", time.perf_counter() - started
    status = record.result.status
    if status not in FINISHED:
        return "failed", record.result.reason, time.perf_counter() - started
    return "complete", status, time.perf_counter() - started


def cached_quote_key(cache: ResponseCache | None, bundle: ScenarioBundle,
                     agents: Mapping[str, AgentSettings], seed: int, rounds: int | None,
                     context_size: int | None = None) -> str | None:
    """A run's quote key when it uses the cache: the same whenever the same run is asked for
    (see `detente.cache.ResponseCache.quote_key`); None (random) without a cache."""
    if cache is None:
        return None
    from detente.cache import run_identity
    from detente.protocols.engine import DEFAULT_CONTEXT
    from detente.runner import effective_settings

    used = effective_settings({p: agents[p] for p in bundle.scenario.parties if p in agents},
                              seed)
    return cache.quote_key(run_identity(
        bundle.content_hash, seed, used, rounds or bundle.scenario.decision.max_rounds,
        context_size if context_size is not None else DEFAULT_CONTEXT))


def run_folder_cost(run_dir: Path) -> Cost | None:
    """The cost `result.json` records for a run (None: no result, or one without a cost)."""
    from detente.errors import InputError
    from detente.runs import RunFolder

    try:
        cost = RunFolder(run_dir).stored_result.cost
    except InputError:
        return None
    return cost.total if cost is not None else None


def logged_sweep_spend(sweep_dir: Path, manifest: SweepManifest) -> float:
    """What the sweep's runs on disk have paid (priced now), for its budget."""
    from detente.costs import active_prices, logged_spend
    from detente.errors import InputError
    from detente.runs import RunFolder

    prices = active_prices()
    spent = 0.0
    for entry in manifest.entries:
        folder = sweep_dir / entry.run_dir
        if not _started(folder):
            continue
        try:
            run = RunFolder(folder)
            spent += logged_spend(run.header, run.events, prices)
        except InputError:
            continue
    return spent


def _started(run_dir: Path) -> bool:
    """The run's log opens with a header (see `RunFolder.started`): resume it."""
    from detente.errors import InputError
    from detente.runs import RunFolder

    try:
        return RunFolder(run_dir).started
    except InputError:
        return False


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
