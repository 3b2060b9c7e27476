"""Running and resuming a negotiation: the run folder, the event log, checkpoints, results.

A run folder holds `events.jsonl` (appended and flushed as events happen), `transcript.md`,
`result.json`, `prompts.jsonl` (every model request exactly as sent, with its raw response,
unless turned off) and `checkpoints.sqlite` (LangGraph's durable state). Events are written from the
graph's update stream; after every run (finished, failed or interrupted) the checkpointed state is
reconciled with the log, so the log holds every committed event exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import sqlite3
import threading
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar
from typing import Protocol as TypingProtocol

from detente import __version__
from detente.agents.base import Agent, Turn
from detente.costs import Budget, BudgetExceeded, RunMeter, active_prices, metered, money
from detente.errors import DetenteError, InputError, Problem
from detente.events import (
    LOG_NAME,
    AgentSettings,
    BudgetSetting,
    ErrorEvent,
    Event,
    EventLog,
    Outcome,
    Resumed,
    RunHeader,
    json_line,
    read_events,
    utc_now,
)
from detente.files import DiskError, RunLock, write_atomic
from detente.loading import ScenarioBundle
from detente.protocols.base import Protocol
from detente.protocols.engine import DEFAULT_CONTEXT, NegotiationState, initial_state
from detente.report import RunResult, build_result, final_outcome, render_markdown

if TYPE_CHECKING:
    from detente.agents.human import HumanIO, HumanRequest
    from detente.cache import ResponseCache

EVENTS = LOG_NAME
RESULT = "result.json"
TRANSCRIPT = "transcript.md"
CHECKPOINTS = "checkpoints.sqlite"
PROMPTS = "prompts.jsonl"

AgentFactory = Callable[[str, AgentSettings, ScenarioBundle], Agent]
T = TypeVar("T")


class RunObserver(TypingProtocol):
    """Receives progress for a live display. Library code prints nothing itself."""

    def started(self, run_dir: Path, header: RunHeader) -> None: ...

    def event(self, event: Event) -> None: ...

    def speaking(self, party: str, turn: str, round_: int) -> None: ...


class _Silent:
    def started(self, run_dir: Path, header: RunHeader) -> None:
        pass

    def event(self, event: Event) -> None:
        pass

    def speaking(self, party: str, turn: str, round_: int) -> None:
        pass


class RunFailed(DetenteError):
    """A run that started and then failed; its folder keeps everything written before."""

    exit_code = 1

    def __init__(self, message: str, run_dir: Path) -> None:
        super().__init__(f"{message}\nEverything up to the failure is in {run_dir}; "
                         f"resume with: detente run --resume {run_dir}")
        self.run_dir = run_dir


class RunStoppedByBudget(DetenteError):
    """A run stopped before a model call that could exceed its budget; its folder keeps
    everything so far, and it resumes with a larger budget."""

    exit_code = 3

    def __init__(self, reason: str, run_dir: Path, scope: str = "run") -> None:
        again = ("rerun the sweep with a larger --budget" if scope == "sweep" else
                 f"resume with: detente run --resume {run_dir} --budget MORE")
        super().__init__(f"budget: stopped before {reason}; the run so far is in {run_dir}; "
                         f"{again}")
        self.reason = reason
        self.run_dir = run_dir


class RunInterrupted(DetenteError):
    exit_code = 130

    def __init__(self, run_dir: Path) -> None:
        super().__init__(f"interrupted; the run so far is in {run_dir}\n"
                         f"resume with: detente run --resume {run_dir}")
        self.run_dir = run_dir


@dataclass(frozen=True)
class RunPlan:
    bundle: ScenarioBundle
    agents: Mapping[str, AgentSettings]
    seed: int = 0
    """The run's seed: sent to every LLM agent whose settings do not pin one."""
    max_rounds: int | None = None
    out_root: Path = Path("transcripts")
    context_size: int = DEFAULT_CONTEXT
    log_prompts: bool = True
    """Keep every request and raw response in `prompts.jsonl`."""
    quote_key: str | None = None
    """The secret behind quote delimiters; random unless given (recorded tests fix it)."""
    human: HumanIO | None = None
    """Answers the turns of seats a person plays (`human`); None: such a run cannot start."""
    budget: Budget | None = None
    """A spending limit (`detente.costs.Budget`): the run's own, or its sweep's, shared."""
    cache: ResponseCache | None = None
    """Answers requests already answered (`detente.cache`); None: every call is made."""
    factors: Mapping[str, str] | None = None
    """A run of a sweep design: its level of each factor, recorded in the header."""


def effective_settings(agents: Mapping[str, AgentSettings], seed: int) -> dict[str, AgentSettings]:
    """Each party's settings as the run uses them: the run's seed for every LLM agent that pins
    none, and the assist default made explicit."""
    out: dict[str, AgentSettings] = {}
    for party, settings in agents.items():
        if settings.kind == "llm":
            settings = settings.model_copy(update={
                "seed": seed if settings.seed is None else settings.seed,
                "assist": settings.effective_assist(),
            })
        out[party] = settings
    return out


class PromptLog:
    """Append-only `prompts.jsonl`: one line per HTTP exchange, by the event id of its turn."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()

    def record(self, turn_id: str, turn: Turn[object]) -> None:
        self.write(turn_id, turn.exchanges)

    def write(self, turn_id: str, exchanges: Sequence[Any]) -> None:
        if self.path is None or not exchanges:
            return
        lines = []
        for k, exchange in enumerate(exchanges, start=1):
            lines.append(json_line(json.dumps({
                "event": turn_id, "exchange": k, "request_hash": exchange.request_hash,
                "time": utc_now(), "latency": round(exchange.latency_s, 3),
                "request": exchange.request, "response": exchange.response,
                "error": exchange.error,
            }, ensure_ascii=False)))
        with self._lock, self.path.open("a", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")
            handle.flush()
            os.fsync(handle.fileno())


@dataclass(frozen=True)
class RunRecord:
    run_dir: Path
    result: RunResult


def new_run_dir(out_root: Path, scenario_id: str) -> tuple[Path, str]:
    run_id = secrets.token_hex(4)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    run_dir = out_root / scenario_id / f"{stamp}-{run_id}"
    try:
        run_dir.mkdir(parents=True, exist_ok=False)
    except OSError as exc:
        raise DiskError(run_dir, exc) from None
    return run_dir, run_id


def start_run(
    plan: RunPlan,
    agent_factory: AgentFactory,
    observer: RunObserver | None = None,
    run_dir: Path | None = None,
) -> RunRecord:
    """Run a new negotiation to its end; returns the run folder and its result."""
    return run_async(astart_run(plan, agent_factory, observer, run_dir))


def resume_run(
    run_dir: Path, agent_factory: AgentFactory, observer: RunObserver | None = None,
    scenario: Path | None = None, human: HumanIO | None = None,
    budget: Budget | None = None, cache: ResponseCache | None = None,
) -> RunRecord:
    """Continue an interrupted (or paused) run from its last completed step (`scenario`: the
    run's scenario file, if it has moved; its content must be the run's; `budget`, `cache`:
    see `aresume_run`)."""
    return run_async(aresume_run(run_dir, agent_factory, observer, scenario, human, budget,
                                 cache))


async def astart_run(
    plan: RunPlan,
    agent_factory: AgentFactory,
    observer: RunObserver | None = None,
    run_dir: Path | None = None,
) -> RunRecord:
    """`start_run` as a coroutine: many runs can share one event loop (see `detente.sweeps`)."""
    bundle = plan.bundle
    scenario = bundle.scenario
    missing = [p for p in scenario.parties if p not in plan.agents]
    if missing:
        raise InputError(bundle.path, [Problem("parties", f"no agent for: {', '.join(missing)}")])
    protocol = _protocol(bundle)
    _check_human(plan.agents, plan.human)
    settings = effective_settings({p: plan.agents[p] for p in scenario.parties}, plan.seed)
    agents = {p: agent_factory(p, settings[p], bundle) for p in scenario.parties}
    max_rounds = plan.max_rounds or scenario.decision.max_rounds
    if run_dir is None:
        run_dir, run_id = new_run_dir(plan.out_root, scenario.id)
    else:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DiskError(run_dir, exc) from None
        run_id = secrets.token_hex(4)
    header = RunHeader(
        id="header",
        run_id=run_id,
        scenario_id=scenario.id,
        scenario_path=str(bundle.path),
        scenario_hash=bundle.content_hash,
        package_version=__version__,
        seed=plan.seed,
        max_rounds=max_rounds,
        agents={p: a.stored() for p, a in settings.items()},
        bounded_context=plan.context_size,
        quote_key=plan.quote_key or secrets.token_hex(16),
        log_prompts=plan.log_prompts,
        protocol=protocol.name,
        protocol_params=protocol.settings(),
        budget=_budget_setting(plan.budget),
        factors=dict(plan.factors or {}),
    )
    meter = _meter(settings.values(), plan.budget, plan.cache)
    observer = observer or _Silent()
    with RunLock(run_dir), _disk_errors(run_dir), \
            EventLog(run_dir / EVENTS, observer.event) as log:
        log.write(header)
        observer.started(run_dir, header)
        state = initial_state(scenario, plan.seed, max_rounds)
        with metered(meter):
            await _drive(bundle, protocol, agents, header, state, run_dir, log, observer,
                         human=plan.human)
        return RunRecord(run_dir, finish(run_dir, bundle))


def _budget_setting(budget: Budget | None) -> BudgetSetting | None:
    return BudgetSetting(usd=budget.limit, scope=budget.scope) if budget is not None else None


def _meter(agents: Any, budget: Budget | None, cache: ResponseCache | None) -> RunMeter | None:
    """What the run's model calls go through: None without a budget or a cache."""
    if budget is None and cache is None:
        return None
    return RunMeter.for_agents(agents, active_prices(), budget, cache)


RESUMABLE = ("error", "budget")
"""Outcomes a resume goes on from: a failure, and a stop at the budget."""


def _protocol(bundle: ScenarioBundle) -> Protocol:
    from detente.protocols import protocol_for

    try:
        return protocol_for(bundle.scenario)
    except ValueError as exc:
        raise InputError(bundle.path, [Problem("protocol", str(exc))]) from None


@contextlib.contextmanager
def _disk_errors(run_dir: Path) -> Iterator[None]:
    """Writing the run folder failed (full or read-only disk): one clear message."""
    try:
        yield
    except (OSError, sqlite3.Error) as exc:
        raise DiskError(run_dir, exc) from None


async def aresume_run(
    run_dir: Path, agent_factory: AgentFactory, observer: RunObserver | None = None,
    scenario: Path | None = None, human: HumanIO | None = None,
    budget: Budget | None = None, cache: ResponseCache | None = None,
) -> RunRecord:
    """`resume_run` as a coroutine. `budget`: the limit from here on (its `spent` must count
    what the run's log already cost: see `detente.api.resume`); `cache`: the response cache."""
    from detente.runs import RunFolder

    with RunLock(run_dir), _disk_errors(run_dir):
        folder = RunFolder(run_dir, scenario)
        events, header, bundle = folder.events, folder.header, folder.bundle
        protocol = _protocol(bundle)
        outcome = final_outcome(events)
        observer = observer or _Silent()
        observer.started(run_dir, header)
        if outcome is not None and outcome.status not in RESUMABLE:
            return RunRecord(run_dir, finish(run_dir, bundle))
        _check_human(header.agents, human)
        agents = {p: agent_factory(p, header.agents[p], bundle)
                  for p in bundle.scenario.parties}
        with EventLog(run_dir / EVENTS, observer.event) as log:
            n = sum(1 for e in events if isinstance(e, Resumed)) + 1
            note = "resumed from the last completed step"
            if log.repaired:
                note += f" (cut a torn last line of {log.repaired} bytes from the log)"
            if budget is not None:
                note += f"; budget {money(budget.limit, 2)} ({budget.scope})"
            log.write(Resumed(id=f"resumed/{n}", note=note, budget=_budget_setting(budget)))
            # A run killed before its first checkpoint starts over; the log keeps its turns.
            fresh = initial_state(bundle.scenario, header.seed, header.max_rounds)
            with metered(_meter(header.agents.values(), budget, cache)):
                await _drive(bundle, protocol, agents, header, fresh, run_dir, log, observer,
                             resuming=True, human=human)
        return RunRecord(run_dir, finish(run_dir, bundle))


def finish(run_dir: Path, bundle: ScenarioBundle) -> RunResult:
    """(Re)write `result.json` and `transcript.md` from the event log, each atomically."""
    events = read_events(run_dir / EVENTS)
    result = build_result(bundle.scenario, events)
    write_atomic(run_dir / RESULT, result.model_dump_json(indent=2) + "\n")
    write_atomic(run_dir / TRANSCRIPT, render_markdown(bundle.scenario, events, result))
    return result


# --------------------------------------------------------------------------- the event loop

_ACTIVE: list[tuple[asyncio.AbstractEventLoop, asyncio.Task[Any]]] = []
_ACTIVE_LOCK = threading.Lock()
_INTERRUPTING = threading.Event()
"""Set by `interrupt_active`: a failure that follows (a stopped server) is the interruption."""


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` to its end on a new event loop; `interrupt_active` can cancel it."""

    _INTERRUPTING.clear()

    async def main() -> T:
        task = asyncio.current_task()
        assert task is not None
        entry = (asyncio.get_running_loop(), task)
        with _ACTIVE_LOCK:
            _ACTIVE.append(entry)
        try:
            return await coro
        finally:
            with _ACTIVE_LOCK:
                _ACTIVE.remove(entry)

    return asyncio.run(main())


def interrupt_active() -> bool:
    """Cancel every running negotiation (from a signal handler): each logs that it was
    interrupted, writes its result and raises `RunInterrupted`. False if none is running."""
    with _ACTIVE_LOCK:
        active = list(_ACTIVE)
    if active:
        _INTERRUPTING.set()
    for loop, task in active:
        loop.call_soon_threadsafe(task.cancel)
    return bool(active)


async def _drive(
    bundle: ScenarioBundle,
    protocol: Protocol,
    agents: Mapping[str, Agent],
    header: RunHeader,
    state: NegotiationState,
    run_dir: Path,
    log: EventLog,
    observer: RunObserver,
    resuming: bool = False,
    human: HumanIO | None = None,
) -> None:
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
    from langgraph.types import Command

    from detente.protocols.engine import RunContext

    prompts = PromptLog(run_dir / PROMPTS if header.log_prompts else None)
    context = RunContext(scenario=bundle.scenario, agents=agents, log=log,
                         context_size=header.bounded_context, quote_key=header.quote_key,
                         on_turn=prompts.record)
    config: Any = {
        "configurable": {"thread_id": header.run_id},
        "recursion_limit": protocol.recursion_limit(header.max_rounds),
    }
    async with AsyncSqliteSaver.from_conn_string(str(run_dir / CHECKPOINTS)) as saver:
        # The event log (fsynced) is the run's record and resume takes finished turns from it,
        # so a checkpoint need not reach the disk before the next step: WAL without an fsync
        # per commit survives a killed process, and costs no disk flush per step.
        await saver.setup()
        await saver.conn.execute("PRAGMA synchronous=NORMAL")
        app = protocol.build().compile(checkpointer=saver)
        start: NegotiationState | Command[Any] | None = state
        if resuming and (await app.aget_state(config)).created_at is not None:
            start = None  # continue from the last checkpoint (a pending human turn asks again)
        try:
            try:
                while True:
                    async for chunk in app.astream(start, config, stream_mode="custom",
                                                   durability="sync", context=context):
                        payload: Any = chunk
                        observer.speaking(payload["speaking"], payload["turn"], payload["round"])
                    # The graph stops at every seat a person plays: ask them, then go on.
                    pending = (await app.aget_state(config)).interrupts
                    if not pending:
                        break
                    start = Command(resume=await _ask_humans(pending, bundle, human, run_dir))
            finally:
                await context.settle()  # answers being written land before the run's end
        except RunPaused:
            finish(run_dir, bundle)
            raise
        except (asyncio.CancelledError, KeyboardInterrupt):
            _interrupted(log, run_dir, bundle)
        except DiskError:
            raise
        except BudgetExceeded as exc:
            prompts.write(getattr(exc, "turn_id", "budget"), exc.exchanges)
            _stop_at_budget(log, run_dir, bundle, exc)
        except (OSError, sqlite3.Error) as exc:
            # The log or the checkpoints could not be written: what is on disk stays readable.
            raise DiskError(run_dir, exc) from None
        except DetenteError as exc:
            if _INTERRUPTING.is_set():  # the call failed because Ctrl-C stopped its server
                _interrupted(log, run_dir, bundle)
            # A failed model call keeps what it sent (and any answer) for the post-mortem.
            prompts.write(getattr(exc, "turn_id", "failed"), getattr(exc, "exchanges", []))
            _fail(log, run_dir, bundle, str(exc), cut_short=exc)
            raise RunFailed(str(exc), run_dir) from None
        except Exception as exc:
            _fail(log, run_dir, bundle, f"internal error: {type(exc).__name__}: {exc}")
            raise


class RunPaused(DetenteError):
    """A person left a run at their turn: it is checkpointed there and resumes there."""

    exit_code = 0

    def __init__(self, run_dir: Path, request: HumanRequest) -> None:
        self.run_dir = run_dir
        self.request = request
        super().__init__(f"paused at {request.party}'s turn ({request.turn_id}); continue with: "
                         f"detente run --resume {run_dir}")


def _check_human(agents: Mapping[str, AgentSettings], human: HumanIO | None) -> None:
    seats = [p for p, a in agents.items() if a.kind == "human"]
    if seats and human is None:
        raise InputError("agents", [Problem(", ".join(seats), "a person plays this seat, and "
                                            "nothing can ask them: run it from a terminal with "
                                            "detente run, or pass human= to detente.run")])


async def _ask_humans(pending: Sequence[Any], bundle: ScenarioBundle, human: HumanIO | None,
                      run_dir: Path) -> dict[str, Any]:
    """Every pending human turn answered (asked again until the answer is valid), by interrupt
    id; RunPaused if the person leaves."""
    from detente.agents.human import HumanRequest, parse_answer

    answers: dict[str, Any] = {}
    for item in pending:
        request = HumanRequest.from_payload(item.value, item.id)
        if human is None:
            raise RunPaused(run_dir, request)
        while True:
            answer = await asyncio.to_thread(human, request, bundle.scenario)
            if answer is None:
                raise RunPaused(run_dir, request)
            try:
                parse_answer(bundle.scenario, request, answer)
            except ValueError as exc:
                request.problem = str(exc)
                continue
            answers[item.id] = dict(answer)
            break
    return answers


def _interrupted(log: EventLog, run_dir: Path, bundle: ScenarioBundle) -> NoReturn:
    n = sum(1 for e in log.raw() if e["type"] == "error") + 1
    log.write(ErrorEvent(id=f"interrupted/{n}", message="the run was interrupted"))
    finish(run_dir, bundle)
    raise RunInterrupted(run_dir) from None


def _cut_short(exc: BaseException | None) -> dict[str, Any]:
    """What a turn cut short had already spent (see `LLMAgent._cut_short`), for its error
    event: its party, tokens and requests."""
    spent: Any = exc
    party = getattr(spent, "party", None)
    if party is None:
        return {}
    if spent.llm is None or not spent.llm.request_hashes:
        return {"speaker": party}  # stopped before its first request
    return {"speaker": party, "usage": spent.usage, "llm": spent.llm}


def _stop_at_budget(log: EventLog, run_dir: Path, bundle: ScenarioBundle,
                    exc: BudgetExceeded) -> NoReturn:
    """The budget refused a call: record it (with what the turn had spent), write the result
    (status `budget`) and stop; a resume with a larger budget goes on from here."""
    events = log.raw()
    n = sum(1 for e in events if e["type"] == "outcome" and e.get("status") == "budget") + 1
    rounds = max((e.get("round") or 0 for e in events), default=0)
    reason = str(exc)
    turn = getattr(exc, "turn_id", None)
    where = f"{turn}: " if turn else ""
    log.write(ErrorEvent(id=f"budget/{n}", round=rounds, message=f"{where}{reason}",
                         **_cut_short(exc)),
              Outcome(id=f"outcome/budget/{n}", status="budget", package=None, rounds=rounds,
                      reason=f"stopped before a model call: {reason}"))
    finish(run_dir, bundle)
    scope = "sweep" if "sweep's budget" in reason else "run"
    raise RunStoppedByBudget(reason, run_dir, scope) from None


def _fail(log: EventLog, run_dir: Path, bundle: ScenarioBundle, message: str,
          cut_short: BaseException | None = None) -> None:
    events = log.raw()
    n = sum(1 for e in events if e["type"] == "error") + 1
    rounds = max((e.get("round") or 0 for e in events), default=0)
    log.write(ErrorEvent(id=f"error/{n}", round=rounds, message=message,
                         **_cut_short(cut_short)),
              Outcome(id=f"outcome/error/{n}", status="error", package=None, rounds=rounds,
                      reason=message))
    finish(run_dir, bundle)
