"""What model calls cost: the price table, a run's cost from its log, and budgets.

**Prices.** `data/prices.toml` ships with detente (US dollars per million prompt and completion
tokens, with its date and source). A user overrides or extends it, highest first: `--prices FILE`
(`prices_from`), the `DETENTE_PRICES` environment variable (a file of the same shape), and a
`[prices]` section in the config file (`--config`, `DETENTE_CONFIG` or `./detente.toml`). A model
matches by its exact name. The embedded model (detente's own llama.cpp server) is free whatever
its name. A model without a price has an unknown cost, never 0: a total with any unpriced part is
unknown (`Cost.usd` None), and says what the priced part came to (`Cost.priced_usd`), shown as
"≥ $X (+ unknown: model)".

**A run's cost** (`run_cost`) is read from its event log: each turn's `usage` (tokens, summed over
its requests) priced by the model of the party that took it; the part a turn took from the
response cache (`LLMCall.cached_usage`) costs nothing. Prices are not frozen into the log: a
result is priced with the table in effect when it is built (`result.json` lists the prices it
used, and `detente replay` prices a run again).

**Budgets.** A `Budget` is a limit in dollars shared by whoever holds it: one run, or every run
of a sweep. Before each model call the call's worst case is reserved (`worst_case`: the prompt at
one token per three bytes, a pessimistic count, and the whole `max_tokens` as completion); a
call whose worst case would take spent plus reserved past the limit is not made
(`BudgetExceeded`), and once one is refused the budget refuses every later call, so the runs
holding it stop cleanly. A finished call replaces its reservation by what it cost.

Nothing here imports openai, langgraph or numpy.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import math
import os
import threading
import tomllib
import weakref
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel

from detente.errors import DetenteError, InputError, Problem
from detente.events import (
    AgentSettings,
    ErrorEvent,
    Event,
    Proposal,
    RefusedProposal,
    Response,
    RunHeader,
    Statement,
    Usage,
)

PRICES_ENV = "DETENTE_PRICES"
CHARS_PER_TOKEN = 4.0
"""What an estimate takes a token to be: about four characters of English prose or JSON with
OpenAI's tokenizers."""
WORST_BYTES_PER_TOKEN = 3.0
"""What a budget's worst case takes a token to be: three bytes of UTF-8, fewer than any
tokenizer averages on prose, so a reservation is rarely short of the real count."""
MESSAGE_OVERHEAD_CHARS = 16
"""Per message: its role and the separators around it."""
UNBOUNDED_COMPLETION = 16_384
"""The completion a budget assumes for a call without `max_tokens`."""
DRAIN_GRACE = 10.0
"""Seconds a refused call waits, once the calls in flight are back, for the turns that made them
to log their answers (they take milliseconds; the bound only guards against a task that is not
a turn)."""


# --------------------------------------------------------------------------- prices


@dataclass(frozen=True)
class Price:
    """US dollars per million tokens."""

    input: float
    output: float

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input + completion_tokens * self.output) / 1_000_000


FREE = Price(0.0, 0.0)


@dataclass(frozen=True)
class PriceTable:
    """Prices by model name, and where they come from."""

    models: Mapping[str, Price]
    source: str
    """Where the prices come from: the shipped table's date, then each override."""

    def price(self, model: str | None, *, embedded: bool = False) -> Price | None:
        """The price of a call to `model`; None when it has none (unknown, never 0)."""
        if embedded:
            return FREE
        if model is None:
            return None
        return self.models.get(model)

    def for_agent(self, settings: AgentSettings) -> Price | None:
        """What one party's model calls cost: scripted parties and people make none."""
        if settings.kind != "llm":
            return FREE
        return self.price(settings.model, embedded=bool(settings.local_model))


def _check_price(where: str, name: str, value: Any) -> Price:
    if not isinstance(value, Mapping) or set(value) - {"input", "output"} or \
            not {"input", "output"} <= set(value):
        raise InputError(where, [Problem(f"{name}", "expected { input = USD, output = USD } "
                                         "(dollars per million prompt and completion tokens)")])
    numbers: list[float] = []
    for key in ("input", "output"):
        raw = value[key]
        if isinstance(raw, bool) or not isinstance(raw, int | float) or not \
                0 <= float(raw) < math.inf:
            raise InputError(where, [Problem(f"{name}.{key}", f"expected dollars per million "
                                             f"tokens, 0 or more; got {raw!r}")])
        numbers.append(float(raw))
    return Price(numbers[0], numbers[1])


def _models(where: str, table: Any, prefix: str) -> dict[str, Price]:
    if not isinstance(table, Mapping):
        raise InputError(where, [Problem(prefix.rstrip("."), "expected a table of models")])
    return {str(name): _check_price(where, f"{prefix}{name}", value)
            for name, value in table.items()}


def read_price_file(path: Path) -> tuple[dict[str, Price], str]:
    """A price file (the shape of the shipped one: `date`, `source`, `[models]`); its prices and
    a note of where they come from."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(path, [Problem("", "no such price file")]) from None
    except OSError as exc:
        raise InputError(path, [Problem("", f"cannot read: {exc.strerror}")]) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(path, [Problem("", f"malformed TOML: {exc}")]) from None
    unknown = sorted(set(data) - {"date", "source", "models"})
    if unknown:
        raise InputError(path, [Problem(k, "unknown key; a price file has date, source and "
                                        "[models]") for k in unknown])
    models = _models(str(path), data.get("models", {}), "models.")
    date = f" ({data['date']})" if data.get("date") else ""
    return models, f"{path}{date}"


def shipped_prices() -> tuple[dict[str, Price], str, str]:
    """The table shipped with detente: prices, date, source note."""
    text = resources.files("detente").joinpath("data/prices.toml").read_text(encoding="utf-8")
    data = tomllib.loads(text)
    return (_models("detente/data/prices.toml", data["models"], "models."),
            str(data.get("date", "")), " ".join(str(data.get("source", "")).split()))


def config_prices(path: Path | None = None) -> dict[str, Price]:
    """The `[prices]` section of the config file (`path`, else DETENTE_CONFIG, else
    ./detente.toml, when there is one)."""
    from detente.config import CONFIG_NAME

    if path is None:
        env = os.environ.get("DETENTE_CONFIG")
        path = Path(env) if env else Path(CONFIG_NAME)
        if not path.is_file():
            return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return {}  # the config's own reader reports a broken file with the settings
    return _models(str(path), data.get("prices", {}), "prices.")


@dataclass(frozen=True)
class PriceLayers:
    """The user's price layers given to a command: a price file, and the config file."""

    file: Path | None = None
    config: Path | None = None


_LAYERS = PriceLayers()
_LAYERS_LOCK = threading.Lock()


@contextlib.contextmanager
def prices_from(file: str | Path | None = None, config: str | Path | None = None
                ) -> Iterator[PriceLayers]:
    """`active_prices` reads `file` (`--prices`) and the config file `config` (`--config`) in
    this block, in this process; both are checked now (a bad file is an InputError before
    anything runs). Yields the layers, which worker processes are handed."""
    global _LAYERS
    layers = PriceLayers(Path(file) if file is not None else None,
                         Path(config) if config is not None else None)
    if layers.file is not None:
        read_price_file(layers.file)
    if layers.config is not None and layers.config.is_file():
        config_prices(layers.config)
    with _LAYERS_LOCK:
        before, _LAYERS = _LAYERS, layers
    try:
        yield layers
    finally:
        with _LAYERS_LOCK:
            _LAYERS = before


def price_layers() -> PriceLayers:
    with _LAYERS_LOCK:
        return _LAYERS


def active_prices() -> PriceTable:
    """The shipped table with the user's overrides on top (see the module's docstring and
    `prices_from`)."""
    given = price_layers()
    models, date, _ = shipped_prices()
    notes = [f"detente's table ({date})"]
    found = config_prices(given.config)
    if found:
        models.update(found)
        notes.append("[prices] in the config file")
    env = os.environ.get(PRICES_ENV)
    layers = [Path(env)] if env else []
    if given.file is not None:
        layers.append(given.file)
    for path in layers:
        extra, note = read_price_file(path)
        models.update(extra)
        notes.append(note)
    return PriceTable(models, ", then ".join(notes))


# --------------------------------------------------------------------------- token estimates


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
    return "" if content is None else json.dumps(content)


def request_text_size(body: Mapping[str, Any], *, in_bytes: bool = False) -> int:
    """The size of what a request asks a model to read: every message's text (plus a little
    for its role), the schema of the answer and the tools offered."""
    def size(text: str) -> int:
        return len(text.encode("utf-8")) if in_bytes else len(text)

    total = 0
    for message in body.get("messages", []):
        total += MESSAGE_OVERHEAD_CHARS + size(_content_text(message.get("content")))
        if message.get("tool_calls"):
            total += size(json.dumps(message["tool_calls"], separators=(",", ":")))
    for key in ("response_format", "tools"):
        if body.get(key) is not None:
            total += size(json.dumps(body[key], separators=(",", ":"), ensure_ascii=False))
    return total


def estimate_tokens(text_size: int) -> int:
    """Tokens of a text of `text_size` characters, as an estimate (about four a token)."""
    return math.ceil(text_size / CHARS_PER_TOKEN)


def estimate_prompt_tokens(body: Mapping[str, Any]) -> int:
    return estimate_tokens(request_text_size(body))


def worst_case(body: Mapping[str, Any], price: Price, max_tokens: int | None) -> float:
    """The most a call with this request body is expected to cost: its prompt at one token per
    three bytes, and the whole `max_tokens` (or `UNBOUNDED_COMPLETION`) as completion."""
    prompt = math.ceil(request_text_size(body, in_bytes=True) / WORST_BYTES_PER_TOKEN)
    return price.cost(prompt, max_tokens if max_tokens is not None else UNBOUNDED_COMPLETION)


# --------------------------------------------------------------------------- a run's cost


class Cost(BaseModel):
    """Model calls and what they came to: requests, tokens and dollars."""

    requests: int = 0
    """HTTP requests to a model (corrections and tool follow-ups included)."""
    cached_requests: int = 0
    """Of those, answered from the response cache: nothing sent, nothing paid."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    """Tokens of every request, cached or not (the size of the negotiation)."""
    usd: float | None = 0.0
    """What the requests not answered from the cache cost; None: unknown, some of them went to a
    model without a price."""
    priced_usd: float = 0.0
    """What the priced part cost (equal to `usd` when it is known): a lower bound otherwise."""
    unpriced: list[str] = []
    """Models without a price that were paid for (their cost is unknown)."""

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def add(self, other: Cost) -> Cost:
        unpriced = sorted(set(self.unpriced) | set(other.unpriced))
        priced = self.priced_usd + other.priced_usd
        return Cost(
            requests=self.requests + other.requests,
            cached_requests=self.cached_requests + other.cached_requests,
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            usd=None if unpriced else priced, priced_usd=priced, unpriced=unpriced)


def total(costs: Iterable[Cost]) -> Cost:
    out = Cost()
    for cost in costs:
        out = out.add(cost)
    return out


def turn_cost(usage: Usage, llm: Any, model: str | None, price: Price | None) -> Cost:
    """One turn's cost: its usage, less what came from the cache, at `price`."""
    requests = len(llm.request_hashes) if llm is not None else 0
    cached = getattr(llm, "cached_usage", None) if llm is not None else None
    cached_requests = getattr(llm, "cached_requests", 0) if llm is not None else 0
    paid_prompt = usage.prompt_tokens - (cached.prompt_tokens if cached is not None else 0)
    paid_completion = usage.completion_tokens - (cached.completion_tokens if cached is not None
                                                 else 0)
    paid = max(paid_prompt, 0) + max(paid_completion, 0)
    if price is None and paid:
        unpriced = [model or "(no model)"]
        usd: float | None = None
        priced = 0.0
    else:
        unpriced = []
        priced = price.cost(max(paid_prompt, 0), max(paid_completion, 0)) if price else 0.0
        usd = priced
    return Cost(requests=requests, cached_requests=cached_requests,
                prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
                usd=usd, priced_usd=priced, unpriced=unpriced)


class RoundCost(Cost):
    round: int
    """0: the opening statements."""


class PriceUsed(BaseModel):
    input: float | None
    output: float | None
    """None: the model has no price (its cost is unknown)."""
    embedded: bool = False
    """The embedded model: free, whatever its name."""


class RunCost(BaseModel):
    """A run's model calls and their cost, in all, per party and per round."""

    total: Cost
    parties: dict[str, Cost]
    rounds: list[RoundCost]
    """Every round with a model call (0: the openings), in order."""
    prices: dict[str, PriceUsed]
    """The price each model was charged at, by model name."""
    price_source: str
    """Where the prices come from (see `detente.costs`)."""


_TURNS = (Statement, Proposal, RefusedProposal, Response, ErrorEvent)


def run_cost(header: RunHeader, events: Iterable[Event], prices: PriceTable | None = None
             ) -> RunCost:
    """The cost of a run's logged model calls (see the module's docstring). An error event
    carries the requests of a turn cut short (a failed call, or a budget stop) that were made
    and paid for."""
    table = prices if prices is not None else active_prices()
    agents = header.agents
    parties: dict[str, Cost] = {p: Cost() for p in agents}
    rounds: dict[int, Cost] = defaultdict(Cost)
    used: dict[str, PriceUsed] = {}
    for event in events:
        if not isinstance(event, _TURNS):
            continue
        usage: Usage = getattr(event, "usage", Usage())
        llm = getattr(event, "llm", None)
        if not usage.total and llm is None:
            continue
        speaker = event.speaker or ""
        settings = agents.get(speaker)
        model = settings.model if settings is not None else None
        embedded = bool(settings is not None and settings.local_model)
        price = table.for_agent(settings) if settings is not None else None
        cost = turn_cost(usage, llm, model, price)
        parties[speaker] = parties.get(speaker, Cost()).add(cost)
        rounds[event.round or 0] = rounds[event.round or 0].add(cost)
        if model is not None and settings is not None and settings.kind == "llm":
            used[model] = PriceUsed(input=price.input if price else None,
                                    output=price.output if price else None, embedded=embedded)
    return RunCost(
        total=total(parties.values()),
        parties=parties,
        rounds=[RoundCost(round=r, **rounds[r].model_dump()) for r in sorted(rounds)],
        prices=used,
        price_source=table.source,
    )


def logged_spend(header: RunHeader, events: Iterable[Event], prices: PriceTable) -> float:
    """What a run's logged calls cost, for a budget: unknown parts count as 0 (a budget needs
    every model priced, which is checked before it starts)."""
    return run_cost(header, events, prices).total.priced_usd


def format_usd(cost: Cost | None, *, digits: int = 4) -> str:
    """`$0.0123`, `unknown`, or `≥ $0.0123 (+ unknown: model)` (see `Cost`)."""
    if cost is None:
        return "unknown"
    if cost.usd is not None:
        return money(cost.usd, digits)
    names = ", ".join(cost.unpriced)
    if cost.priced_usd > 0:
        return f"≥ {money(cost.priced_usd, digits)} (+ unknown: {names})"
    return f"unknown ({names} has no price)" if len(cost.unpriced) == 1 else \
        f"unknown ({names} have no price)"


def money(usd: float, digits: int = 4) -> str:
    """Dollars with `digits` decimals (more for amounts below a cent, so they never read 0)."""
    if usd == 0:
        return "$0"
    if 0 < usd < 10 ** -digits:
        return f"${usd:.2g}"
    return f"${usd:,.{digits}f}"


# --------------------------------------------------------------------------- budgets


class BudgetExceeded(DetenteError):
    """A model call was not made: it could take the spending past the budget."""

    exit_code = 3

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.exchanges: list[Any] = []
        """The exchanges of the turn made before the refused call (filled in by the client)."""


BudgetScope = Literal["run", "sweep"]


@dataclass
class Hold:
    """A reservation against a budget, for one call."""

    amount: float
    settled: bool = False


@dataclass
class Budget:
    """A spending limit in US dollars, shared (thread-safe) by every run holding it."""

    limit: float
    spent: float = 0.0
    """Paid before this process started (the runs' logs), then every call made since."""
    scope: BudgetScope = "run"
    reserved: float = 0.0
    refused: str | None = None
    """Why a call was refused: from then on every call is (the runs stop)."""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def reserve(self, worst: float, what: str) -> Hold:
        with self._lock:
            if self.refused is None and self.spent + self.reserved + worst > self.limit:
                self.refused = (
                    f"a call that could take the spending past the {self.scope}'s budget of "
                    f"{money(self.limit, 2)} ({money(self.spent)} spent, "
                    f"{money(self.reserved)} held by calls in flight, the next call to {what} "
                    f"up to {money(worst)})")
            if self.refused is not None:
                raise BudgetExceeded(self.refused)
            self.reserved += worst
            return Hold(worst)

    def settle(self, hold: Hold, actual: float | None) -> None:
        """Replace a reservation by what the call cost (None: unknown, the reservation stays
        spent)."""
        with self._lock:
            if hold.settled:
                return
            hold.settled = True
            self.reserved -= hold.amount
            self.spent += hold.amount if actual is None else actual

    def release(self, hold: Hold) -> None:
        """A call that was never answered (an HTTP error, a cancellation): nothing spent."""
        with self._lock:
            if hold.settled:
                return
            hold.settled = True
            self.reserved -= hold.amount

    @property
    def left(self) -> float:
        with self._lock:
            return self.limit - self.spent


def unpriced_models(agents: Iterable[AgentSettings], prices: PriceTable) -> list[str]:
    """The models among `agents` without a price (a budget cannot be kept for them)."""
    return sorted({str(a.model) for a in agents if a.kind == "llm"
                   and prices.for_agent(a) is None})


def check_amount(budget: float | None, source: str = "--budget") -> None:
    """A budget must be a positive, finite amount: InputError otherwise (checked before
    anything is started or written)."""
    if budget is not None and not 0 < budget < math.inf:
        raise InputError(source, [Problem("", f"expected a positive amount of US dollars, got "
                                          f"{budget!r}")])


def check_budget(budget: float | None, agents: Iterable[AgentSettings], prices: PriceTable,
                 source: str = "--budget") -> None:
    """A budget must be positive and every LLM agent's model priced: InputError otherwise."""
    if budget is None:
        return
    check_amount(budget, source)
    missing = unpriced_models(agents, prices)
    if missing:
        raise InputError(source, [Problem("", f"no price for {', '.join(missing)}, so a budget "
                                          "cannot be kept: add it to the price table (--prices "
                                          "FILE, DETENTE_PRICES or [prices] in detente.toml)")])


class CallMeter(Protocol):
    """What every request of a run goes through (see `detente.costs.RunMeter`)."""

    def lookup(self, base_url: str, digest: str) -> str | None:
        """A cached response text for this request at this endpoint, or None."""

    def store(self, base_url: str, digest: str, model: str, text: str, prompt_tokens: int,
              completion_tokens: int) -> None:
        """Keep a valid chat completion for this request."""

    def reserve(self, model: str, body: Mapping[str, Any], max_tokens: int | None) -> Any:
        """Hold the call's worst case against the budget; raises BudgetExceeded."""

    def settle(self, hold: Any, model: str, prompt_tokens: int | None,
               completion_tokens: int | None) -> None:
        """The call came back: what it cost (None: unknown)."""

    def release(self, hold: Any) -> None:
        """The call got no answer: nothing spent."""

    async def drain(self) -> None:
        """Wait until this run's calls in flight have come back (a refused call waits, so that
        the turns it would cancel keep the answers already paid for)."""


METER: contextvars.ContextVar[CallMeter | None] = contextvars.ContextVar("detente_meter",
                                                                          default=None)
"""The meter of the run whose task (or thread) makes a call (see `detente.llm`); None: calls
go out as asked."""


@contextlib.contextmanager
def metered(meter: CallMeter | None) -> Iterator[None]:
    """Every model call made in this block (and the tasks and threads it starts) goes through
    `meter`."""
    token = METER.set(meter)
    if isinstance(meter, RunMeter):
        meter.owner = _current_task()
    try:
        yield
    finally:
        METER.reset(token)


def _current_task() -> Any:
    """The asyncio task running here, or None (a worker thread, no event loop)."""
    import asyncio

    try:
        return asyncio.current_task()
    except RuntimeError:
        return None


class RunMeter:
    """What one run's model calls go through (`METER`): the response cache, and
    the budget with this run's prices."""

    def __init__(self, prices: Mapping[str, Price | None], budget: Budget | None = None,
                 cache: Any = None) -> None:
        self.prices = dict(prices)
        """By model name, as this run's agents use them."""
        self.budget = budget
        self.cache = cache
        """A `detente.cache.ResponseCache`, or None."""
        self._inflight = 0
        self._lock = threading.Lock()
        self.owner: Any = None
        """The task driving the run (`metered`): never waited for by `drain`."""
        self._paying: weakref.WeakSet[Any] = weakref.WeakSet()
        """The tasks (turns) that made a call: `drain` waits until they have finished."""
        self._draining: weakref.WeakSet[Any] = weakref.WeakSet()

    @classmethod
    def for_agents(cls, agents: Iterable[AgentSettings], table: PriceTable,
                   budget: Budget | None = None, cache: Any = None) -> RunMeter:
        prices: dict[str, Price | None] = {}
        for settings in agents:
            if settings.kind == "llm" and settings.model is not None:
                prices[settings.model] = table.for_agent(settings)
        return cls(prices, budget, cache)

    def lookup(self, base_url: str, digest: str) -> str | None:
        return self.cache.get(base_url, digest) if self.cache is not None else None

    def store(self, base_url: str, digest: str, model: str, text: str,
              prompt_tokens: int, completion_tokens: int) -> None:
        if self.cache is not None:
            self.cache.put(base_url, digest, model, text, prompt_tokens, completion_tokens)

    def reserve(self, model: str, body: Mapping[str, Any], max_tokens: int | None
                ) -> Hold | None:
        if self.budget is None:
            return None
        price = self.prices.get(model)
        if price is None:
            raise BudgetExceeded(f"a call to {model}, which has no price, so the budget cannot "
                                 "be kept")
        hold = self.budget.reserve(worst_case(body, price, max_tokens), model)
        task = _current_task()
        with self._lock:
            self._inflight += 1
            if task is not None:
                self._paying.add(task)
        return hold

    def settle(self, hold: Hold | None, model: str, prompt_tokens: int | None,
               completion_tokens: int | None) -> None:
        if self.budget is None or hold is None:
            return
        price = self.prices.get(model)
        actual = None if price is None or prompt_tokens is None or completion_tokens is None \
            else price.cost(prompt_tokens, completion_tokens)
        if not hold.settled:
            with self._lock:
                self._inflight -= 1
        self.budget.settle(hold, actual)

    def release(self, hold: Hold | None) -> None:
        if self.budget is not None and hold is not None:
            if not hold.settled:
                with self._lock:
                    self._inflight -= 1
            self.budget.release(hold)

    async def drain(self) -> None:
        """Wait until the run's calls in flight have come back, then (for at most
        `DRAIN_GRACE` seconds) until the other turns that made calls have finished, so that
        their events, with the answers paid for, are logged before the run stops."""
        import asyncio
        import time

        me = _current_task()
        if me is not None:
            self._draining.add(me)
        while True:
            with self._lock:
                if self._inflight <= 0:
                    break
            await asyncio.sleep(0.02)
        deadline = time.monotonic() + DRAIN_GRACE
        while time.monotonic() < deadline:
            with self._lock:
                busy = [t for t in list(self._paying) if t is not me and t is not self.owner
                        and not t.done() and t not in self._draining]
            if not busy:
                break
            await asyncio.sleep(0.02)
