"""Sweeps: the cross product of scenarios (variants) and seeds, run with bounded concurrency.

A sweep folder holds `sweep.json` (the manifest: what was asked and each run's status) and one
run folder per (scenario, seed): `<scenario id>/seed-<n>/`. Running the same sweep again skips
completed runs, resumes interrupted ones from their checkpoints, and retries failed ones. A
failed run is recorded with its reason and never stops the others.
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
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from detente.agents.base import Agent
from detente.events import AgentSettings
from detente.loading import ScenarioBundle

MANIFEST = "sweep.json"
SWEEP_FORMAT_VERSION = 1
FINISHED = ("deal", "no_deal", "deadlock")

EntryStatus = Literal["pending", "complete", "failed"]


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
    """Why the run failed."""
    seconds: float | None = None


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

    def counts(self) -> dict[str, int]:
        out = {"pending": 0, "complete": 0, "failed": 0}
        for e in self.entries:
            out[e.status] += 1
        return out


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
) -> SweepManifest:
    """The manifest for this sweep: the existing one (statuses refreshed) or a new one."""
    now = _now()
    entries = [
        SweepEntry(scenario_id=b.scenario.id, scenario_path=str(b.path), seed=seed,
                   run_dir=f"{b.scenario.id}/seed-{seed}")
        for b in bundles
        for seed in seeds
    ]
    created = now
    path = sweep_dir / MANIFEST
    if path.exists():
        old = SweepManifest.model_validate_json(path.read_text(encoding="utf-8"))
        created = old.created
        previous = {e.run_dir: e for e in old.entries}
        entries = [previous.get(e.run_dir, e) for e in entries]
    manifest = SweepManifest(name=sweep_dir.name, created=created, updated=now,
                             seeds=list(seeds), rounds=rounds,
                             agents={k: dict(v) for k, v in agents.items()}, entries=entries,
                             log_prompts=log_prompts)
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
    try:
        status = json.loads((run_dir / "result.json").read_text(encoding="utf-8"))["status"]
    except (OSError, ValueError, KeyError):
        return None
    return str(status) if status in FINISHED else None


def save_manifest(sweep_dir: Path, manifest: SweepManifest) -> None:
    """Atomic: a crash mid-write never leaves a torn manifest."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    manifest.updated = _now()
    tmp = sweep_dir / f".{MANIFEST}.tmp"
    tmp.write_text(manifest.model_dump_json(indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, sweep_dir / MANIFEST)


def run_sweep(
    sweep_dir: Path,
    manifest: SweepManifest,
    concurrency: int,
    on_done: Callable[[SweepEntry], None] | None = None,
) -> SweepManifest:
    """Run every pending or failed entry, at most `concurrency` at once, in worker processes."""
    todo = [e for e in manifest.entries if e.status != "complete"]
    if not todo:
        return manifest
    # Spawned workers: forking a process that runs threads (rich, langgraph) can deadlock.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=max(1, concurrency), mp_context=context) as pool:
        running: dict[Future[tuple[str, str | None, float]], SweepEntry] = {}
        queue = list(todo)
        while queue or running:
            while queue and len(running) < concurrency:
                entry = queue.pop(0)
                agents = manifest.agents[entry.scenario_id]
                future = pool.submit(
                    run_entry, entry.scenario_path, str(sweep_dir / entry.run_dir),
                    {p: s.model_dump() for p, s in agents.items()}, entry.seed, manifest.rounds,
                    manifest.log_prompts,
                )
                running[future] = entry
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                entry = running.pop(future)
                try:
                    status, detail, seconds = future.result()
                except Exception as exc:  # a worker that died (e.g. killed)
                    status, detail, seconds = "failed", f"{type(exc).__name__}: {exc}", 0.0
                entry.seconds = round(seconds, 3)
                if status == "failed":
                    entry.status, entry.reason, entry.outcome = "failed", detail, None
                else:
                    entry.status, entry.outcome, entry.reason = "complete", detail, None
                save_manifest(sweep_dir, manifest)
                if on_done is not None:
                    on_done(entry)
    return manifest


def run_entry(
    scenario_path: str, run_dir: str, agents: dict[str, dict[str, object]], seed: int,
    rounds: int | None, log_prompts: bool = True,
) -> tuple[str, str | None, float]:
    """One run in a worker process: ("complete", outcome) or ("failed", reason), and seconds."""
    from detente.agents import make_agent
    from detente.errors import DetenteError
    from detente.loading import load_bundle
    from detente.runner import RunPlan, resume_run, start_run

    started = time.perf_counter()
    folder = Path(run_dir)
    settings = {p: AgentSettings.model_validate(s) for p, s in agents.items()}

    def current(party: str, used: AgentSettings, bundle: ScenarioBundle) -> Agent:
        # The run's own settings (its seed among them), at today's endpoint: an embedded
        # server listens on a new port every sweep.
        return make_agent(party, used.model_copy(update={"base_url": settings[party].base_url}),
                          bundle)

    try:
        if (folder / "checkpoints.sqlite").exists() and (folder / "events.jsonl").exists():
            record = resume_run(folder, current)
        else:
            if folder.exists():
                shutil.rmtree(folder)  # a run that never got going: start it afresh
            bundle = load_bundle(Path(scenario_path))
            plan = RunPlan(bundle=bundle, agents=settings, seed=seed, max_rounds=rounds,
                           log_prompts=log_prompts)
            record = start_run(plan, current, run_dir=folder)
    except DetenteError as exc:
        return "failed", str(exc).splitlines()[0], time.perf_counter() - started
    except Exception as exc:
        return "failed", f"{type(exc).__name__}: {exc}", time.perf_counter() - started
    status = record.result.status
    if status not in FINISHED:
        return "failed", record.result.reason, time.perf_counter() - started
    return "complete", status, time.perf_counter() - started


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
