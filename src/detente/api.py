"""The Python front door: run, resume and sweep negotiations, read and compare runs.

    import detente

    run = detente.run("scenarios/baseline.yaml", agents="all=scripted:boulware")
    print(run.result.status, run.result.scores.parties["ukraine"].utility)

    sweep = detente.sweep(["scenarios/baseline.yaml", "scenarios/protocols/"], seeds=2,
                          agents="all=scripted:conceder")
    table = detente.compare(sweep.path)
    for group in table.groups:
        print(group.variant, group.deal_rate.rate)

Settings take the names of the command line's flags (`model`, `base_url`, `temperature`,
`max_tokens`, `max_retries`, `structured_mode`, `assist`, `timeout`, `max_connections`, ...)
and are layered as there: arguments, then the environment, then a config file. With no endpoint,
LLM agents play on the embedded model, started and stopped here. The command line is a thin layer
over these functions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from detente.errors import InputError, Problem

if TYPE_CHECKING:
    from detente.agents.human import HumanIO
    from detente.analysis import Analysis
    from detente.cache import ResponseCache
    from detente.comparison import Comparison, GroupBy
    from detente.config import Layer
    from detente.costs import Budget
    from detente.estimate import SweepEstimate
    from detente.events import AgentSettings
    from detente.loading import ScenarioBundle
    from detente.runner import RunObserver
    from detente.runs import RunFolder
    from detente.sweeps import Executor, SweepEntry, SweepManifest

Agents = str | Sequence[str] | Mapping[str, str] | None
"""Who plays: "all=scripted:boulware", ["us=gpt-4o", "all=scripted:linear"], or a mapping of
party (or "all") to spec."""
Assist = str | Sequence[str] | Mapping[str, str] | None
""""table", ["us=tool", "all=none"], or a mapping of party (or "all") to mode."""


def _specs(values: Agents | Assist) -> list[str]:
    if values is None:
        return []
    if isinstance(values, str):
        return [v for v in values.split(",") if v.strip()]
    if isinstance(values, Mapping):
        return [f"{party}={spec}" for party, spec in values.items()]
    return list(values)


def _layers(agents: Agents, config: str | Path | None, **flags: Any) -> list[Layer]:
    from detente.config import env_layer, file_layer, flag_layer

    assist = _specs(flags.pop("assist", None))
    return [flag_layer(agents=_specs(agents), assist=assist, **flags), env_layer(),
            file_layer(Path(config) if config is not None else None)]


def run(
    scenario: str | Path,
    agents: Agents = None,
    seed: int = 0,
    *,
    rounds: int | None = None,
    model: str | None = None,
    base_url: str | None = None,
    temperature: float | None = None,
    max_tokens: int | None = None,
    max_retries: int | None = None,
    structured_mode: str | None = None,
    assist: Assist = None,
    timeout: float | None = None,
    max_connections: int | None = None,
    config: str | Path | None = None,
    model_path: str | Path | None = None,
    out: str | Path = "transcripts",
    log_prompts: bool = True,
    observer: RunObserver | None = None,
    notice: Callable[[str], None] | None = None,
    human: HumanIO | None = None,
    budget: float | None = None,
    cache: bool = False,
    prices: str | Path | None = None,
) -> RunFolder:
    """Run one negotiation to its end and return its folder (`.result`, `.events`, ...).

    `budget`: a limit in US dollars on what its model calls may cost; the run stops before a
    call that could exceed it (`detente.runner.RunStoppedByBudget`; status `budget`; `resume`
    with a larger one goes on). `cache`: answer requests from the response cache
    (`detente.cache`). `prices`: a price file over the shipped table (`detente.costs`).

    `human` answers the turns of seats a person plays (`agents="ukraine=human"`): it gets a
    `detente.agents.human.HumanRequest` and the scenario, and returns the answer (see
    `parse_answer`), or None to pause the run there (`detente.runner.RunPaused` is raised;
    `resume` asks again).

    Raises `detente.errors.DetenteError` (with one clear message) for bad input, an endpoint
    that does not answer before round one, or a run that fails later (its folder keeps
    everything up to the failure and can be resumed).
    """
    from detente.agents import make_agent
    from detente.config import resolve_agents
    from detente.costs import prices_from
    from detente.endpoints import embedded_server, preflight
    from detente.loading import load_bundle
    from detente.runner import RunPlan, start_run
    from detente.runs import RunFolder
    from detente.sweeps import cached_quote_key

    gguf = Path(model_path) if model_path is not None else None
    if gguf is not None and not gguf.is_file():
        raise InputError(gguf, [Problem("--model-path", "no such GGUF file")])
    bundle = load_bundle(Path(scenario))
    layers = _layers(agents, config, model=model, base_url=base_url, temperature=temperature,
                     max_tokens=max_tokens, max_retries=max_retries,
                     structured_mode=structured_mode, assist=assist, timeout=timeout,
                     max_connections=max_connections)
    settings = resolve_agents(bundle.scenario, layers)
    if gguf is not None:
        settings = {p: s.model_copy(update={"model": None, "base_url": None})
                    if s.kind == "llm" else s for p, s in settings.items()}
    with prices_from(prices, config), \
            embedded_server(settings, gguf, notice=notice or _quiet) as served:
        preflight(served)
        limit = _run_budget(budget, served.values())
        store = _cache(cache)
        plan = RunPlan(bundle=bundle, agents=served, seed=seed, max_rounds=rounds,
                       out_root=Path(out), log_prompts=log_prompts, human=human,
                       budget=limit, cache=store,
                       quote_key=cached_quote_key(store, bundle, served, seed, rounds))
        record = start_run(plan, make_agent, observer)
    return RunFolder(record.run_dir)


def _run_budget(budget: float | None, agents: Iterable[AgentSettings], spent: float = 0.0,
                scope: str = "run") -> Budget | None:
    """A run's (or a sweep's) budget, checked: positive, every model priced, not spent."""
    from detente.costs import Budget, active_prices, check_budget, money

    if budget is None:
        return None
    check_budget(budget, agents, active_prices())
    if spent >= budget:
        raise InputError("--budget", [Problem("", f"the {scope} has already spent "
                                              f"{money(spent)}, which {money(budget, 2)} does "
                                              "not exceed: give a larger budget")])
    return Budget(budget, spent, scope)  # type: ignore[arg-type]


def _cache(on: bool) -> ResponseCache | None:
    from detente.cache import ResponseCache

    return ResponseCache() if on else None


def resume(
    run_dir: str | Path,
    *,
    scenario: str | Path | None = None,
    base_url: str | None = None,
    observer: RunObserver | None = None,
    notice: Callable[[str], None] | None = None,
    human: HumanIO | None = None,
    budget: float | None = None,
    cache: bool = False,
    prices: str | Path | None = None,
) -> RunFolder:
    """Continue an interrupted run from its last completed step (`scenario`: the run's scenario
    file if it has moved, with the same content; `base_url`: the endpoint to resume on, if its
    URL carried credentials, which are never stored).

    `budget`: the run's limit from now on, over everything it has spent (default: the run's
    own, if it had one); a run stopped at its budget goes on with a larger one. `cache`,
    `prices`: as for `run`."""
    from detente.agents import make_agent
    from detente.costs import active_prices, logged_spend, prices_from
    from detente.endpoints import embedded_server, preflight
    from detente.runner import resume_run
    from detente.runs import RunFolder

    folder = RunFolder(run_dir, scenario)
    header = folder.header
    local = {s.local_model for s in header.agents.values() if s.local_model}
    gguf = Path(next(iter(local))) if local else None
    settings = dict(header.agents)
    if base_url is not None:
        settings = {p: s.model_copy(update={"base_url": base_url})
                    if s.kind == "llm" and not s.local_model else s for p, s in settings.items()}
    with prices_from(prices), \
            embedded_server(settings, gguf, resuming=True, notice=notice or _quiet) as served:
        preflight(served)
        limit = _run_budget(_resumed_budget(folder, budget), served.values(),
                            logged_spend(header, folder.events, active_prices()))

        def factory(party: str, _: AgentSettings, current: ScenarioBundle) -> Any:
            # Today's endpoints: an embedded server listens on a new port every time.
            return make_agent(party, served[party], current)

        record = resume_run(folder.path, factory, observer,
                            Path(scenario) if scenario is not None else None, human,
                            budget=limit, cache=_cache(cache))
    return RunFolder(record.run_dir)


def _resumed_budget(folder: RunFolder, given: float | None) -> float | None:
    """The budget a resume applies: the one given, else the run's own last one (a sweep's
    budget was the sweep's, not this run's)."""
    from detente.events import Resumed

    if given is not None:
        return given
    last = folder.header.budget
    for event in folder.events:
        if isinstance(event, Resumed):
            last = event.budget
    return last.usd if last is not None and last.scope == "run" else None


@dataclass(frozen=True)
class Sweep:
    """A sweep's folder and manifest."""

    path: Path
    manifest: SweepManifest

    def runs(self) -> list[RunFolder]:
        from detente.runs import RunFolder

        return [RunFolder(self.path / e.run_dir) for e in self.manifest.entries
                if (self.path / e.run_dir / "events.jsonl").is_file()]

    @property
    def failed(self) -> list[SweepEntry]:
        return [e for e in self.manifest.entries if e.status == "failed"]


def scenario_files(paths: Sequence[str | Path]) -> list[Path]:
    """Scenario files named directly or found in folders (recursively, sorted)."""
    files: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*.yaml")
                           if not any(part.startswith(".") for part in p.parts))
            if not found:
                raise InputError(path, [Problem("", "no .yaml scenario files in this folder")])
            files += found
        else:
            files.append(path)
    return files


def sweep(
    scenarios: str | Path | Sequence[str | Path],
    seeds: int = 3,
    *,
    agents: Agents = None,
    concurrency: int = 2,
    rounds: int | None = None,
    model: str | None = None,
    base_url: str | None = None,
    assist: Assist = None,
    timeout: float | None = None,
    max_connections: int | None = None,
    config: str | Path | None = None,
    out: str | Path = "transcripts/sweeps",
    name: str | None = None,
    log_prompts: bool = True,
    executor: Executor = "local",
    address: str | None = None,
    on_start: Callable[[SweepManifest], None] | None = None,
    on_done: Callable[[SweepEntry], None] | None = None,
    notice: Callable[[str], None] | None = None,
    budget: float | None = None,
    cache: bool = True,
    prices: str | Path | None = None,
) -> Sweep:
    """Every scenario (file or folder of variants) x seeds 0..seeds-1, into one sweep folder;
    running the same sweep again skips what is complete and resumes or retries the rest.

    `budget`: a limit in US dollars on what the whole sweep's model calls cost (with the
    `local` executor), shared by its runs; once a call could exceed it every run stops (status
    `budget`) and the rest are not started; running the sweep again with a larger one goes on
    (without one, the sweep's last budget holds). `cache` (on by default): the response cache
    answers every request it has seen, so a sweep run again, or in another folder, repeats no
    call already paid for. `prices`: a price file over the shipped table (`detente.costs`)."""
    from detente.config import resolve_agents
    from detente.costs import prices_from
    from detente.endpoints import embedded_server, preflight
    from detente.files import RunLock
    from detente.loading import load_bundle
    from detente.sweeps import (
        logged_sweep_spend,
        plan_sweep,
        run_sweep,
        save_manifest,
        sweep_name,
    )

    given = [scenarios] if isinstance(scenarios, str | Path) else list(scenarios)
    bundles = [load_bundle(f) for f in scenario_files(given)]
    ids = [b.scenario.id for b in bundles]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise InputError("detente sweep", [Problem("SCENARIO", "scenario ids must be unique in a "
                                                   f"sweep; repeated: {', '.join(dupes)}")])
    layers = _layers(agents, config, model=model, base_url=base_url, assist=assist,
                     timeout=timeout, max_connections=max_connections)
    # No seed here: every run of the sweep sends its own seed to the model.
    teams = {b.scenario.id: resolve_agents(b.scenario, layers) for b in bundles}
    seats = sorted({p for team in teams.values() for p, a in team.items() if a.kind == "human"})
    if seats:
        raise InputError("agents", [Problem(", ".join(seats), "a person cannot play a seat in a "
                                            "sweep (its runs go on at once, unattended); use "
                                            "detente run")])
    seed_list = list(range(seeds))
    sweep_dir = Path(out) / (name or sweep_name(bundles, seed_list, teams, rounds))
    every = {f"{sid}/{p}": s for sid, team in teams.items() for p, s in team.items()}
    if budget is not None and executor != "local":
        raise InputError("--budget", [Problem("", "a sweep's budget is kept by one process: use "
                                              "it with --executor local")])
    with prices_from(prices, config), RunLock(sweep_dir, "sweep"), \
            embedded_server(every, None, notice=notice or _quiet) as served:
        preflight(served)
        for key, settings in served.items():
            sid, party = key.split("/", 1)
            teams[sid][party] = settings
        manifest = plan_sweep(sweep_dir, bundles, seed_list, teams, rounds, log_prompts)
        limit = budget if budget is not None else manifest.budget_usd
        if limit is not None and executor != "local":
            raise InputError("--budget", [Problem("", f"this sweep has a budget "
                                                  f"(${limit:g}), which is kept by one "
                                                  "process: run it with --executor local")])
        shared = _run_budget(limit, served.values(), logged_sweep_spend(sweep_dir, manifest)
                             if limit is not None else 0.0, "sweep")
        if budget is not None:
            manifest.budget_usd = budget
            save_manifest(sweep_dir, manifest)
        if on_start is not None:
            on_start(manifest)
        manifest = run_sweep(sweep_dir, manifest, concurrency, on_done, executor, address,
                             budget=shared, cache=cache)
    return Sweep(sweep_dir, manifest)


def estimate(
    scenarios: str | Path | Sequence[str | Path],
    seeds: int = 3,
    *,
    agents: Agents = None,
    rounds: int | None = None,
    model: str | None = None,
    base_url: str | None = None,
    assist: Assist = None,
    config: str | Path | None = None,
    prices: str | Path | None = None,
) -> SweepEstimate:
    """What `sweep` with these arguments would cost, estimated before anything is spent:
    model calls, prompt and completion tokens and dollars per scenario, and their upper bounds
    (see `detente.estimate`). Nothing is called, started or written."""
    from detente.config import resolve_agents
    from detente.costs import prices_from
    from detente.estimate import estimate_sweep
    from detente.loading import load_bundle

    given = [scenarios] if isinstance(scenarios, str | Path) else list(scenarios)
    bundles = [load_bundle(f) for f in scenario_files(given)]
    layers = _layers(agents, config, model=model, base_url=base_url, assist=assist)
    teams = {b.scenario.id: resolve_agents(b.scenario, layers) for b in bundles}
    seats = sorted({p for team in teams.values() for p, a in team.items() if a.kind == "human"})
    if seats:
        raise InputError("agents", [Problem(", ".join(seats), "a person cannot play a seat in a "
                                            "sweep; use detente run")])
    with prices_from(prices, config):
        return estimate_sweep(bundles, teams, seeds, rounds)


def analyze(scenario: str | Path, *, frontier: bool = True) -> Analysis:
    """The outcome space of a scenario: ZOPA, Pareto frontier, Nash and Kalai-Smorodinsky."""
    from detente.analysis import analyze as analyze_scenario
    from detente.loading import load_scenario

    return analyze_scenario(load_scenario(Path(scenario)), frontier=frontier)


def compare(
    *paths: str | Path, by: GroupBy = "scenario", against: str | None = None
) -> Comparison:
    """Finished runs under `paths`, compared per group (see `detente compare`)."""
    from detente.comparison import compare_runs, load_runs_with_skipped

    loaded = load_runs_with_skipped(list(paths))
    comparison = compare_runs(loaded.runs, against, by=by)
    comparison.skipped = loaded.skipped
    return comparison


def load_run(path: str | Path, scenario: str | Path | None = None) -> RunFolder:
    """A run folder (`scenario`: the run's scenario file, if it has moved)."""
    from detente.runs import RunFolder

    return RunFolder(path, scenario)


def load_runs(*paths: str | Path, finished: bool = True) -> list[RunFolder]:
    """Every run folder under `paths` (run folders, sweep folders, glob patterns); finished runs
    only unless `finished=False`."""
    from detente.runs import load_runs as find_runs

    return find_runs(*paths, finished=finished)


def _quiet(text: str) -> None:
    return None
