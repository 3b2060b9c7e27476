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
    from detente.designs import Design
    from detente.estimate import SweepEstimate
    from detente.events import AgentSettings
    from detente.loading import ScenarioBundle
    from detente.runner import RunObserver
    from detente.runs import RunFolder
    from detente.sweeps import DesignCell, Executor, SweepEntry, SweepManifest

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
    from detente.costs import check_amount, prices_from
    from detente.endpoints import embedded_server, preflight
    from detente.loading import load_bundle
    from detente.runner import RunPlan, start_run
    from detente.runs import RunFolder
    from detente.sweeps import cached_quote_key

    check_amount(budget)
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
        store = _cache(cache)
        preflight(served, store)
        limit = _run_budget(budget, served.values())
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
    """The response cache, checked usable (a CacheError otherwise), if it is `on`."""
    from detente.cache import ResponseCache

    if not on:
        return None
    store = ResponseCache()
    store.check()
    return store


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
    from detente.costs import active_prices, check_amount, logged_spend, prices_from
    from detente.endpoints import embedded_server, preflight
    from detente.runner import resume_run
    from detente.runs import RunFolder

    check_amount(budget)
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
        store = _cache(cache)
        preflight(served, store)
        limit = _run_budget(_resumed_budget(folder, budget), served.values(),
                            logged_spend(header, folder.events, active_prices()))

        def factory(party: str, _: AgentSettings, current: ScenarioBundle) -> Any:
            # Today's endpoints: an embedded server listens on a new port every time.
            return make_agent(party, served[party], current)

        record = resume_run(folder.path, factory, observer,
                            Path(scenario) if scenario is not None else None, human,
                            budget=limit, cache=store)
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
    """Scenario files named directly or found in folders (recursively, sorted; a folder's
    sweep designs are left out)."""
    from detente.designs import is_design_file

    files: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*.yaml")
                           if not any(part.startswith(".") for part in p.parts)
                           and not is_design_file(p))
            if not found:
                raise InputError(path, [Problem("", "no .yaml scenario files in this folder")])
            files += found
        else:
            files.append(path)
    return files


Levels = str | float | Sequence[str | float] | None
"""A setting's levels in a sweep: one value, `"0,0.7"` or `[0, 0.7]` (more than one: a
factor of the sweep's design)."""


def sweep(
    scenarios: str | Path | Sequence[str | Path],
    seeds: int | None = None,
    *,
    agents: Agents = None,
    concurrency: int = 2,
    rounds: int | Sequence[int] | str | None = None,
    model: str | Sequence[str] | None = None,
    base_url: str | None = None,
    assist: Assist = None,
    temperature: Levels = None,
    protocol: str | Sequence[str] | None = None,
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
    """Every scenario (file or folder of variants) x seeds 0..seeds-1 (default 3), into one
    sweep folder; running the same sweep again skips what is complete and resumes or retries
    the rest.

    A factorial design (`detente.designs`): a design file as the one scenario
    (`sweep("design.yaml")`), or settings with more than one level: `agents="russia=gpt-4o,
    scripted:boulware"` (comma-separated levels of one seat), `temperature="0,0.7"`,
    `assist="none,table"`, `model=[...]`, `protocol=[...]`, `rounds=[4, 8]`. The sweep runs the
    cross product and records each run's levels in `sweep.json` and its header.

    `budget`: a limit in US dollars on what the whole sweep's model calls cost (with the
    `local` executor), shared by its runs; once a call could exceed it every run stops (status
    `budget`) and the rest are not started; running the sweep again with a larger one goes on
    (without one, the sweep's last budget holds). `cache` (on by default): the response cache
    answers every request it has seen, so a sweep run again, or in another folder, repeats no
    call already paid for. `prices`: a price file over the shipped table (`detente.costs`)."""
    from detente.config import resolve_agents
    from detente.loading import load_bundle
    from detente.sweeps import plan_sweep, sweep_name

    given = [scenarios] if isinstance(scenarios, str | Path) else list(scenarios)
    design = design_of(given, seeds, agents=agents, rounds=rounds, model=model, assist=assist,
                       temperature=temperature, protocol=protocol)
    if design is not None:
        return _design_sweep(
            design, config=config, base_url=base_url, timeout=timeout,
            max_connections=max_connections, concurrency=concurrency, out=out, name=name,
            log_prompts=log_prompts, executor=executor, address=address, on_start=on_start,
            on_done=on_done, notice=notice, budget=budget, cache=cache, prices=prices)
    rounds = _one_round_limit(rounds)
    seeds = 3 if seeds is None else seeds
    bundles = [load_bundle(f) for f in scenario_files(given)]
    _unique_ids(bundles)
    layers = _layers(agents, config, model=_one(model), base_url=base_url, assist=assist,
                     timeout=timeout, max_connections=max_connections,
                     temperature=_one_temperature(temperature))
    # No seed here: every run of the sweep sends its own seed to the model.
    teams = {b.scenario.id: resolve_agents(b.scenario, layers) for b in bundles}
    seats = sorted({p for team in teams.values() for p, a in team.items() if a.kind == "human"})
    if seats:
        raise InputError("agents", [Problem(", ".join(seats), "a person cannot play a seat in a "
                                            "sweep (its runs go on at once, unattended); use "
                                            "detente run")])
    _refuse_unplayable((b, teams[b.scenario.id]) for b in bundles)
    seed_list = list(range(seeds))
    sweep_dir = Path(out) / (name or sweep_name(bundles, seed_list, teams, rounds))
    return _run_planned(sweep_dir, teams, lambda served: plan_sweep(
        sweep_dir, bundles, seed_list, served, rounds, log_prompts), config=config,
        concurrency=concurrency, executor=executor, address=address, on_start=on_start,
        on_done=on_done, notice=notice, budget=budget, cache=cache, prices=prices)


def _run_planned(
    sweep_dir: Path, teams: dict[str, dict[str, AgentSettings]],
    plan: Callable[[dict[str, dict[str, AgentSettings]]], SweepManifest], *,
    config: str | Path | None, concurrency: int, executor: Executor, address: str | None,
    on_start: Callable[[SweepManifest], None] | None,
    on_done: Callable[[SweepEntry], None] | None, notice: Callable[[str], None] | None,
    budget: float | None, cache: bool, prices: str | Path | None,
) -> Sweep:
    """Serve the embedded model if some agent needs it, plan the manifest with the agents as
    served (`plan`), and run the sweep under its budget."""
    from detente.costs import check_amount, prices_from
    from detente.endpoints import embedded_server, preflight
    from detente.files import RunLock
    from detente.sweeps import logged_sweep_spend, run_sweep, save_manifest

    check_amount(budget)
    checked = None
    if cache and any(s.kind == "llm" for team in teams.values() for s in team.values()):
        checked = _cache(True)  # one message now, rather than every run failing on it
        assert checked is not None
    # A team key may hold a slash (a design's cell): the party is after the last one.
    every = {f"{key}/{p}": s for key, team in teams.items() for p, s in team.items()}
    if budget is not None and executor != "local":
        raise InputError("--budget", [Problem("", "a sweep's budget is kept by one process: use "
                                              "it with --executor local")])
    with prices_from(prices, config), RunLock(sweep_dir, "sweep"), \
            embedded_server(every, None, notice=notice or _quiet) as served:
        preflight(served, checked)
        if checked is not None:
            checked.close()
        for key, settings in served.items():
            team, party = key.rsplit("/", 1)
            teams[team][party] = settings
        manifest = plan(teams)
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


def _refuse_unplayable(cells: Iterable[tuple[ScenarioBundle, dict[str, AgentSettings]]]) -> None:
    """Refuse a sweep before anything runs if a scripted seat of one of its cells cannot be
    built (an incentive no scripted strategy plays, say): `detente run` refuses the same when
    it builds its agents, and otherwise that cell's runs would fail one by one."""
    from detente.agents import make_agent

    problems: list[Problem] = []
    seen: set[tuple[str, str, str]] = set()
    for bundle, team in cells:
        for party, settings in team.items():
            key = (bundle.scenario.id, party, settings.label())
            if settings.kind != "scripted" or key in seen:
                continue
            seen.add(key)
            try:
                make_agent(party, settings, bundle)
            except InputError as exc:
                problems += [Problem(f"{bundle.scenario.id}: {p.path}" if p.path else
                                     bundle.scenario.id, p.message) for p in exc.problems]
    if problems:
        raise InputError("agents", problems)


def _unique_ids(bundles: Sequence[ScenarioBundle]) -> None:
    ids = [b.scenario.id for b in bundles]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise InputError("detente sweep", [Problem("SCENARIO", "scenario ids must be unique in a "
                                                   f"sweep; repeated: {', '.join(dupes)}")])


def _one(value: str | Sequence[str] | None) -> str | None:
    """A setting given once (a design has taken any with several levels)."""
    from detente.designs import comma_levels

    levels = comma_levels(value)
    return levels[0] if levels else None


def _one_temperature(value: Levels) -> float | None:
    text = _one(value)  # type: ignore[arg-type]
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        raise InputError("--temperature", [Problem(text, "expected a number, e.g. 0.7, or "
                                                   "comma-separated levels: 0,0.7")]) from None


def _one_round_limit(value: int | Sequence[int] | str | None) -> int | None:
    from detente.designs import comma_levels

    levels = comma_levels(value)
    return _round_limit(levels[0], "--rounds") if levels else None


def _round_limit(text: str, where: str) -> int:
    try:
        rounds = int(text)
    except ValueError:
        rounds = 0
    if not 1 <= rounds <= 100:
        raise InputError(where, [Problem(text, "expected a whole number of rounds from 1 to "
                                         "100")])
    return rounds


def design_of(
    given: Sequence[str | Path], seeds: int | None, *, agents: Agents = None,
    rounds: int | Sequence[int] | str | None = None, model: str | Sequence[str] | None = None,
    assist: Assist = None, temperature: Levels = None,
    protocol: str | Sequence[str] | None = None,
) -> Design | None:
    """The sweep's design (`detente.designs`), or None for a sweep of scenarios and seeds
    alone: a design file given as the one scenario, or a setting with several levels (more
    than one spec for a seat, temperatures, assist modes, models, protocols, round limits).
    What the command line gives once is a fixed setting; with several levels, a factor that
    replaces the design file's."""
    from detente.designs import (
        Design,
        comma_levels,
        is_design_file,
        load_design,
        split_levels,
    )

    files = [Path(g) for g in given]
    design: Design | None = None
    if len(files) == 1 and is_design_file(files[0]):
        design = load_design(files[0])
    elif any(is_design_file(f) for f in files):
        raise InputError("detente sweep", [Problem("SCENARIO", "a design file is the sweep's "
                                                   "only argument: list scenarios in it")])
    fixed, factors = split_levels(_level_specs(agents))
    assist_specs = _specs(assist)
    whole = [a for a in assist_specs if "=" not in a or a.startswith("all=")]
    assist_levels = [lv for a in whole for lv in comma_levels(a.removeprefix("all="))]
    if any("," in a for a in assist_specs if a not in whole):
        raise InputError("--assist", [Problem("", "levels of one party's assist are not a "
                                              "factor; give levels for every LLM agent: "
                                              "--assist none,table")])
    for name, levels in (("model", comma_levels(model)), ("temperature",
                         comma_levels(temperature)), ("assist", assist_levels),
                         ("protocol", comma_levels(protocol)),
                         ("max_rounds", comma_levels(rounds))):
        if len(levels) > 1 or (name == "protocol" and levels):
            factors[name] = levels
    if design is None and not factors:
        return None
    if design is None:
        design = Design(scenarios=files, seeds=list(range(3 if seeds is None else seeds)))
    elif seeds is not None:
        design.seeds = list(range(seeds))
    design.factors.update(factors)
    design.agents = [*design.agents, *fixed]
    if "max_rounds" not in factors and (one := comma_levels(rounds)):
        design.settings["rounds"] = one[0]
    if "model" not in factors and (one := comma_levels(model)):
        design.settings["model"] = one[0]
    if "temperature" not in factors and (one := comma_levels(temperature)):
        design.settings["temperature"] = one[0]
    if "assist" not in factors and assist_levels:
        design.settings["assist"] = assist_levels[0]
    design.settings["_assist_parties"] = [a for a in assist_specs if a not in whole]
    return design


def _level_specs(agents: Agents | Mapping[str, str | Sequence[str]]) -> list[str]:
    """`PARTY=SPEC[,SPEC...]` values, commas kept (they separate a seat's levels)."""
    if agents is None:
        return []
    if isinstance(agents, str):
        return [agents]
    if isinstance(agents, Mapping):
        return [f"{p}={v if isinstance(v, str) else ','.join(v)}" for p, v in agents.items()]
    return list(agents)


@dataclass
class _DesignPlan:
    cells: list[DesignCell]
    teams: dict[str, dict[str, AgentSettings]]
    factors: dict[str, list[str]]
    name: str


def _plan_design(design: Design, layers: list[Layer], folder: Path | None,
                 sweep_folder: Callable[[str], Path]) -> _DesignPlan:
    """Every cell of `design` with who plays it and its round limit; protocol levels become
    variants of their scenario in `folder / "scenarios"` (the sweep folder, named by
    `sweep_folder(identity)` once the cells are known, when `folder` is None)."""
    from detente.config import Layer, resolve_agents
    from detente.designs import AGENT_PREFIX, LLM_LEVEL, cells, design_identity
    from detente.errors import did_you_mean
    from detente.events import ASSIST_MODES
    from detente.loading import load_bundle
    from detente.protocols import PROTOCOLS
    from detente.sweeps import DesignCell

    bundles = {f: load_bundle(f) for f in scenario_files(design.scenarios)}
    _unique_ids(list(bundles.values()))
    where = str(design.source or "detente sweep")
    for name, levels in design.factors.items():
        for level in levels:
            problem = None
            if name == "temperature":
                try:
                    float(level)
                except ValueError:
                    problem = "expected a number"
            elif name == "assist" and level not in ASSIST_MODES:
                problem = f"expected one of: {', '.join(ASSIST_MODES)}"
            elif name == "protocol" and level not in PROTOCOLS.names():
                problem = (f"unknown protocol{did_you_mean(level, PROTOCOLS.names())}; "
                           f"expected one of: {', '.join(PROTOCOLS.names())}")
            elif name == "max_rounds":
                _round_limit(level, f"{where}: factors.{name}")
            if problem:
                raise InputError(where, [Problem(f"factors.{name}", f"level {level!r}: "
                                                 f"{problem}")])
    fixed_rounds = design.settings.get("rounds")
    if fixed_rounds is not None:
        fixed_rounds = _round_limit(str(fixed_rounds), f"{where}: settings.rounds")

    def default_model(party: str, cell_model: str | None) -> str | None:
        if cell_model is not None:
            return cell_model
        for layer in layers:
            found = layer.per_party.get(party, {}).get("model") or layer.defaults.get("model")
            if found:
                return str(found)
        return None

    planned = cells(design, [(b.path, b.scenario.id) for b in bundles.values()])
    teams: dict[str, dict[str, AgentSettings]] = {}
    recorded: dict[str, dict[str, str]] = {}
    rounds: dict[str, int | None] = {}
    placeholder = "detente-design-llm"
    for cell in planned:
        top = Layer("design")
        llm_seats: list[str] = []
        for name, level in cell.levels.items():
            if name.startswith(AGENT_PREFIX):
                party = name[len(AGENT_PREFIX):]
                if level == LLM_LEVEL:
                    found = default_model(party, cell.levels.get("model"))
                    top.specs[party] = found or placeholder
                    if found is None:
                        llm_seats.append(party)
                else:
                    top.specs[party] = level
            elif name == "model":
                top.defaults["model"] = level
            elif name == "temperature":
                top.defaults["temperature"] = float(level)
            elif name == "assist":
                top.defaults["assist"] = level
        bundle = bundles[cell.scenario]
        team = resolve_agents(bundle.scenario, [top, *layers])
        for party in llm_seats:
            team[party] = team[party].model_copy(update={"model": None})
        teams[cell.key] = team
        as_played = dict(cell.levels)
        for name in as_played:
            if name.startswith(AGENT_PREFIX) and name[len(AGENT_PREFIX):] in team:
                played = team[name[len(AGENT_PREFIX):]]
                as_played[name] = "embedded model" if played.kind == "llm" and \
                    played.model is None else played.label()
        recorded[cell.key] = as_played
        rounds[cell.key] = (_round_limit(cell.levels["max_rounds"], "max_rounds")
                            if "max_rounds" in cell.levels else fixed_rounds)
    hashes = {b.scenario.id: b.content_hash for b in bundles.values()}
    identity = design_identity(design, hashes, {
        k: {p: s.model_dump(exclude={"base_url", "local_model"}) for p, s in t.items()}
        for k, t in teams.items()})
    target = folder if folder is not None else sweep_folder(identity)
    variants: dict[tuple[Path, str], ScenarioBundle] = {}
    out: list[DesignCell] = []
    for cell in planned:
        bundle = bundles[cell.scenario]
        chosen = cell.levels.get("protocol")
        if chosen is not None and chosen != bundle.scenario.protocol_spec().name:
            from detente.designs import protocol_variant

            key = (cell.scenario, chosen)
            if key not in variants:
                variants[key] = load_bundle(protocol_variant(
                    bundle.path, bundle.scenario.id, chosen, target / "scenarios"))
            bundle = variants[key]
        out.append(DesignCell(key=cell.key, bundle=bundle, levels=recorded[cell.key],
                              rounds=rounds[cell.key]))
    factors = {"scenario": [b.scenario.id for b in bundles.values()], **design.factors}
    for name in factors:
        if name.startswith(AGENT_PREFIX):  # the levels as recorded: who played
            factors[name] = list(dict.fromkeys(c.levels[name] for c in out))
    return _DesignPlan(cells=out, teams=teams, factors=factors, name=identity)


def _design_layers(design: Design, config: str | Path | None, **flags: Any) -> list[Layer]:
    """The layers under a design's cells: the command line, the design file's fixed agents
    and settings, the environment, the config file."""
    from detente.config import Layer, env_layer, file_layer, flag_layer, parse_agent_flags

    settings = {k: v for k, v in design.settings.items() if not k.startswith("_")}
    per_party_assist = design.settings.get("_assist_parties", [])
    command = flag_layer(agents=[], assist=per_party_assist, model=None,
                         **{k: v for k, v in flags.items() if v is not None})
    from_file = Layer(str(design.source or "design"),
                      defaults={k: v for k, v in settings.items() if k != "rounds"},
                      specs=parse_agent_flags(design.agents,
                                              str(design.source or "--agent")))
    if "temperature" in from_file.defaults:
        from_file.defaults["temperature"] = _one_temperature(str(from_file.defaults[
            "temperature"]))
    return [command, from_file, env_layer(),
            file_layer(Path(config) if config is not None else None)]


def _design_sweep(
    design: Design, *, config: str | Path | None, base_url: str | None,
    timeout: float | None, max_connections: int | None, concurrency: int, out: str | Path,
    name: str | None, log_prompts: bool, executor: Executor, address: str | None,
    on_start: Callable[[SweepManifest], None] | None,
    on_done: Callable[[SweepEntry], None] | None, notice: Callable[[str], None] | None,
    budget: float | None, cache: bool, prices: str | Path | None,
) -> Sweep:
    """A sweep of a design's cells x seeds (see `sweep`)."""
    import shutil

    from detente.designs import DESIGN_FILE
    from detente.sweeps import plan_sweep

    layers = _design_layers(design, config, base_url=base_url, timeout=timeout,
                            max_connections=max_connections)
    named = name or design.name
    plan = _plan_design(design, layers, Path(out) / named if named else None,
                        lambda identity: Path(out) / identity)
    sweep_dir = Path(out) / (named or plan.name)
    seats = sorted({p for team in plan.teams.values() for p, a in team.items()
                    if a.kind == "human"})
    if seats:
        raise InputError("agents", [Problem(", ".join(seats), "a person cannot play a seat in a "
                                            "sweep (its runs go on at once, unattended); use "
                                            "detente run")])
    _refuse_unplayable((cell.bundle, plan.teams[cell.key]) for cell in plan.cells)
    copied: str | None = None
    if design.source is not None:
        sweep_dir.mkdir(parents=True, exist_ok=True)
        target = sweep_dir / DESIGN_FILE
        if design.source.resolve() != target.resolve():
            shutil.copyfile(design.source, target)
        copied = DESIGN_FILE
    return _run_planned(sweep_dir, plan.teams, lambda served: plan_sweep(
        sweep_dir, [], design.seeds, served, None, log_prompts, cells=plan.cells,
        factors=plan.factors, design_file=copied), config=config, concurrency=concurrency,
        executor=executor, address=address, on_start=on_start, on_done=on_done, notice=notice,
        budget=budget, cache=cache, prices=prices)


def estimate(
    scenarios: str | Path | Sequence[str | Path],
    seeds: int | None = None,
    *,
    agents: Agents = None,
    rounds: int | Sequence[int] | str | None = None,
    model: str | Sequence[str] | None = None,
    base_url: str | None = None,
    assist: Assist = None,
    temperature: Levels = None,
    protocol: str | Sequence[str] | None = None,
    config: str | Path | None = None,
    prices: str | Path | None = None,
) -> SweepEstimate:
    """What `sweep` with these arguments would cost, estimated before anything is spent:
    model calls, prompt and completion tokens and dollars per scenario (per cell of a design),
    and their upper bounds (see `detente.estimate`). Nothing is called, started or written."""
    from detente.config import resolve_agents
    from detente.costs import prices_from
    from detente.estimate import estimate_sweep
    from detente.loading import load_bundle

    given = [scenarios] if isinstance(scenarios, str | Path) else list(scenarios)
    design = design_of(given, seeds, agents=agents, rounds=rounds, model=model, assist=assist,
                       temperature=temperature, protocol=protocol)
    if design is not None:
        return _estimate_design(design, config=config, base_url=base_url, prices=prices)
    bundles = [load_bundle(f) for f in scenario_files(given)]
    layers = _layers(agents, config, model=_one(model), base_url=base_url, assist=assist,
                     temperature=_one_temperature(temperature))
    teams = {b.scenario.id: resolve_agents(b.scenario, layers) for b in bundles}
    _no_person(teams)
    with prices_from(prices, config):
        return estimate_sweep(bundles, teams, 3 if seeds is None else seeds,
                              _one_round_limit(rounds))


def _no_person(teams: Mapping[str, Mapping[str, AgentSettings]]) -> None:
    seats = sorted({p for team in teams.values() for p, a in team.items() if a.kind == "human"})
    if seats:
        raise InputError("agents", [Problem(", ".join(seats), "a person cannot play a seat in a "
                                            "sweep; use detente run")])


def _estimate_design(design: Design, *, config: str | Path | None, base_url: str | None,
                     prices: str | Path | None) -> SweepEstimate:
    """A design's estimate: one line per cell (its scenario id and levels), nothing kept."""
    import tempfile

    from detente.costs import active_prices, prices_from
    from detente.estimate import SweepEstimate, estimate_scenario

    layers = _design_layers(design, config, base_url=base_url)
    with tempfile.TemporaryDirectory(prefix="detente-design-") as scratch, \
            prices_from(prices, config):
        plan = _plan_design(design, layers, Path(scratch), lambda _: Path(scratch))
        _no_person(plan.teams)
        table = active_prices()
        lines = []
        for cell in plan.cells:
            line = estimate_scenario(cell.bundle, plan.teams[cell.key], len(design.seeds),
                                     cell.rounds, table)
            shown = ", ".join(f"{k}={v}" for k, v in cell.levels.items() if k != "scenario")
            lines.append(line.model_copy(update={
                "scenario_id": f"{cell.levels['scenario']} [{shown}]" if shown
                else cell.levels["scenario"]}))
        return SweepEstimate(scenarios=lines, price_source=table.source)


def analyze(scenario: str | Path, *, frontier: bool = True) -> Analysis:
    """The outcome space of a scenario: ZOPA, Pareto frontier, Nash and Kalai-Smorodinsky."""
    from detente.analysis import analyze as analyze_scenario
    from detente.loading import load_scenario

    return analyze_scenario(load_scenario(Path(scenario)), frontier=frontier)


def compare(
    *paths: str | Path, by: GroupBy | str | Sequence[str] = "scenario",
    against: str | None = None,
) -> Comparison:
    """Finished runs under `paths`, compared per group (see `detente compare`): by scenario,
    `agents`, `scenario+agents`, or any factor (`by="agent:russia"`, `by=["temperature",
    "scenario"]`); with more than one group tested against the reference (`against`), each
    measure's p-values are Holm-corrected."""
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
