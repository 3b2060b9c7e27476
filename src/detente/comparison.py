"""Comparing many finished runs: per-variant outcome statistics with intervals, and tests.

`load_runs_with_skipped` finds run folders (given directly, below a sweep folder, or by glob
pattern; see `detente.runs`) and sums each finished one up in a `RunSummary`: who played, the
outcome, and the value of every metric of the table in `detente.metrics` (deal, rounds to
agreement, distance to the Nash package, each party's utility and red-line violations, ...).
`compare_runs` groups the summaries by scenario id (one group per variant) and pools every metric
per group, with 95% intervals (Wilson for rates, percentile bootstrap for means), plus the agreed
options and the red lines broken; then it tests every other group against a reference group on
the metrics marked `tested` (Fisher's exact test for rates, Mann-Whitney U for means). With more
than one group tested against the reference, each measure's p-values are Holm-corrected over
those comparisons (`MetricTest.p_holm`; `Comparison.correction`), and what is called
significant is judged on the corrected ones.

Groups may also be the levels of any factor (`compare_runs(by=["agent:russia"])`): `scenario`,
`seed`, `agent:PARTY` (who played the seat), `model`, `temperature`, `assist`, `protocol`,
`max_rounds`; a run of a sweep design records its levels in its header, and any other run's are
read from its header (`run_factors`). A factor's group pools its runs over the levels of the
other factors (a main effect); runs are then refused only when runs of one cell (the same level
of every factor) differ in their inputs.

A group never pools runs made from different inputs: runs whose scenario hash (the scenario and
every brief) or whose settings (who played each party with which model, temperature, prompt,
structured mode, assist; the round limit and context size) differ are refused, naming what
differs. Seeds and endpoint addresses may differ: they are what makes runs distinct samples.

Identical runs are counted once. Two runs of a group are copies when their event logs are the
same once times, latencies, token counts, model-call provenance (request hashes carry the seed and
the run's quote key), run ids, seeds and paths are left out (`run_fingerprint`): scripted agents
ignore the seed, so every seed of a scripted variant repeats one run. Statistics are over the
distinct runs of a group (`VariantStats.n`; `runs` counts them all), and a group is tested only
when it has at least `MIN_TEST_RUNS` distinct runs, so copies never look like evidence.

Conventions: utilities and distances are averaged over every distinct finished run of a group (a
run without a deal scores every party at its reservation utility); a run without a deal breaks
no red line; rounds to agreement are over deals only. Nothing here prints.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args

from pydantic import BaseModel, SerializerFunctionWrapHandler, model_serializer, model_validator

from detente.errors import InputError, Problem
from detente.events import AgentSettings, RunHeader
from detente.metrics import (
    METRICS,
    MeanCI,
    Metric,
    Proportion,
    RoundsStats,
    Stat,
    format_diff,
    has_deal,
    party_metrics,
    proportion,
    variant_metrics,
)
from detente.runs import FINISHED, RunFolder, load_runs

FINISHED_STATUSES = FINISHED
"""Statuses of runs that are compared; runs with any other status are skipped."""
DEFAULT_REFERENCE = "baseline"
MIN_TEST_RUNS = 2
"""Distinct runs each group needs before it is tested against another."""
SIGNIFICANT = 0.05
"""The p-value below which a difference is shown as significant (not corrected for multiple
comparisons)."""
IGNORED_EVENT_FIELDS = frozenset({"time", "latency", "usage", "llm"})
"""Left out when two runs are compared for identity: when and how fast things happened, token
counts, and the provenance of model calls (request hashes carry the seed and the quote key)."""
IGNORED_EVENT_TYPES = frozenset({"header", "resumed"})
"""The header holds the run id, seed, quote key and paths (what must match of it is compared
through `run_settings`); a resume note does not change the negotiation."""
SCRIPTED_SEEDS_NOTE = ("scripted strategies ignore the seed, so each seed repeats the same run; "
                       "use LLM agents for distinct samples")
"""What `compare`, the report (and a sweep) say when every agent of a variant is scripted."""

GroupBy = Literal["scenario", "agents", "scenario+agents"]
"""What makes a group: the scenario id (the default), who played, or both (see also factors:
`compare_runs(by=[...])`)."""
FACTORS = ("scenario", "seed", "model", "temperature", "assist", "protocol", "max_rounds")
"""Factors every run has (read from its header when its design did not record them), beside
`agent:PARTY` for each seat."""
NO_LLM = "-"
"""The level of `model`, `temperature` and `assist` in a run without an LLM agent."""


# --------------------------------------------------------------------------- one run


class RunSummary(BaseModel):
    """What a comparison needs from one finished run."""

    run_dir: str
    run_id: str
    scenario_id: str
    scenario_hash: str
    seed: int
    agents: str
    """Who played, e.g. `all=scripted:boulware, un_mediator=scripted:nash`."""
    status: str
    deal: bool
    package: dict[str, dict[str, str | float]] | None
    """The agreed package as {"options": {...}, "terms": {...}}; None without a deal."""
    parties: list[str] = []
    """The parties the outcome scores."""
    red_lines_broken: dict[str, list[str]]
    """Ids of the red lines the outcome breaks, per party (empty lists without a deal)."""
    values: dict[str, Any] = {}
    """The run's value of every metric of `detente.metrics.METRICS`, by key (per-party
    metrics: by party); a metric the run does not measure is absent or None."""
    settings: dict[str, Any] = {}
    """What must match for two runs to be pooled: each party's `AgentSettings.identity()`,
    the round limit and the context size."""
    upper_bound: bool = False
    """The mediator was the oracle: a reference run."""
    fingerprint: str | None = None
    """`run_fingerprint` of the run: equal fingerprints mean identical runs (None: unknown,
    never equal to another run's)."""
    factors: dict[str, str] = {}
    """The run's level of every factor (`run_factors`)."""


class SkippedRun(BaseModel):
    """A run folder that was found but not compared, and why."""

    run_dir: str
    status: str | None
    """The result's status (running, interrupted, error), or None if it could not be read."""
    reason: str


class LoadedRuns(BaseModel):
    runs: list[RunSummary]
    """Finished runs (deal, no_deal, deadlock), in folder order."""
    skipped: list[SkippedRun]
    """Unfinished or unreadable run folders."""


def agents_label(agents: Mapping[str, AgentSettings]) -> str:
    """A short label of who played: the most common player as `all=...`, then the exceptions."""
    labels = {party: settings.label() for party, settings in agents.items()}
    if not labels:
        return "-"
    counts = Counter(labels.values())
    common, times = counts.most_common(1)[0]
    if len(labels) == 1 or times == 1:
        return ", ".join(f"{p}={label}" for p, label in labels.items())
    rest = [f"{p}={label}" for p, label in labels.items() if label != common]
    return ", ".join([f"all={common}", *rest])


def normalized_events(events: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The events two identical runs share: no header or resume notes, none of
    `IGNORED_EVENT_FIELDS`, in the order of their ids (concurrent answers land in the log in
    the order they finish)."""
    kept = [{k: v for k, v in ev.items() if k not in IGNORED_EVENT_FIELDS}
            for ev in events if ev.get("type") not in IGNORED_EVENT_TYPES]
    return sorted(kept, key=lambda ev: (str(ev.get("id", "")), _canonical(ev)))


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def run_fingerprint(summary: RunSummary, header: RunHeader,
                    events: Iterable[Mapping[str, Any]]) -> str:
    """A hash of what makes a run this negotiation: its scenario contents and settings (not its
    seed, run id, quote key or paths), its events (`normalized_events`) and its outcome."""
    # Not its factors either: a scripted run's seed and temperature levels change nothing.
    outcome = summary.model_dump(mode="json", exclude={"run_dir", "run_id", "seed",
                                                       "fingerprint", "factors"})
    # What a run cost differs between copies (an answer from the cache is free).
    outcome["values"] = {k: v for k, v in outcome["values"].items()
                         if k not in {m.key for m in METRICS if not m.in_fingerprint}}
    document = {"scenario_hash": header.scenario_hash, "settings": run_settings(header),
                "events": normalized_events(events), "outcome": outcome}
    return hashlib.sha256(_canonical(document).encode("utf-8")).hexdigest()


def _number(value: float | None) -> str:
    return "default" if value is None else f"{value:g}"


def run_factors(header: RunHeader) -> dict[str, str]:
    """The run's level of every factor (see `FACTORS`): those its sweep design recorded
    (`RunHeader.factors`), the others read from the header. `model`, `temperature` and
    `assist` are its LLM agents' (joined with `+` when they differ; `-` without any)."""
    llm = [a for a in header.agents.values() if a.kind == "llm"]

    def joined(values: Iterable[str]) -> str:
        return "+".join(sorted(set(values))) or NO_LLM

    derived = {
        "scenario": header.scenario_id,
        "seed": str(header.seed),
        "model": joined(a.label() for a in llm),
        "temperature": joined(_number(a.temperature) for a in llm),
        "assist": joined(a.effective_assist() for a in llm),
        "protocol": header.protocol or "default",
        "max_rounds": str(header.max_rounds),
    }
    for party, settings in header.agents.items():
        derived[f"agent:{party}"] = settings.label()
    return {**derived, **header.factors}


def summarize_run(run: RunFolder, events: Iterable[Mapping[str, Any]] | None = None
                  ) -> RunSummary:
    """The `RunSummary` of a run folder: its header and result, each metric's value, and its
    fingerprint from `events` (the log's events as JSON objects; by default the run's own)."""
    header, result = run.header, run.result
    deal = has_deal(result)
    package: dict[str, dict[str, str | float]] | None = None
    if deal and result.package is not None:
        package = {"options": dict(result.package.options), "terms": dict(result.package.terms)}
    broken = {party: (list(ids) if deal else [])
              for party, ids in result.red_lines_broken.items()}
    for party in result.scores.parties:
        broken.setdefault(party, [])
    summary = RunSummary(
        run_dir=str(run.path),
        run_id=result.run_id,
        scenario_id=result.scenario_id,
        scenario_hash=result.scenario_hash,
        seed=header.seed,
        agents=agents_label(header.agents),
        status=result.status,
        deal=deal,
        package=package,
        parties=list(result.scores.parties),
        red_lines_broken=broken,
        values={m.key: m.read(run) for m in METRICS},
        settings=run_settings(header),
        upper_bound=result.upper_bound,
        factors=run_factors(header),
    )
    if events is None:
        events = [e.model_dump(mode="json") for e in run.events]
    summary.fingerprint = run_fingerprint(summary, header, events)
    return summary


def summarize_runs(runs: Iterable[RunFolder]) -> LoadedRuns:
    """The summaries of the finished runs among `runs`, and the others as skipped: unfinished
    (with the result's status and reason) or unreadable (with the first line of the error)."""
    summaries: list[RunSummary] = []
    skipped: list[SkippedRun] = []
    for run in runs:
        try:
            result = run.result
            if result.status not in FINISHED_STATUSES:
                skipped.append(SkippedRun(run_dir=str(run.path), status=result.status,
                                          reason=result.reason))
                continue
            summaries.append(summarize_run(run))
        except InputError as exc:
            skipped.append(SkippedRun(run_dir=str(run.path), status=None,
                                      reason=str(exc).splitlines()[0]))
    return LoadedRuns(runs=summaries, skipped=skipped)


def load_runs_with_skipped(paths: Sequence[str | Path]) -> LoadedRuns:
    """The finished runs under `paths` (see `detente.runs.load_runs`) summed up, and the run
    folders skipped (unfinished or unreadable).

    Raises InputError when a path is missing or holds no run folder, or when none of the runs
    found has finished.
    """
    loaded = summarize_runs(load_runs(paths, finished=False))
    if not loaded.runs:
        counts = Counter(s.status or "unreadable" for s in loaded.skipped)
        what = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
        raise InputError(", ".join(str(p) for p in paths),
                         [Problem("", f"found {len(loaded.skipped)} run folders but none "
                                  f"finished ({what})")])
    return loaded


def all_scripted(agents: Iterable[AgentSettings]) -> bool:
    """Whether every party is played by a scripted strategy: the run's seed changes nothing."""
    players = list(agents)
    return bool(players) and all(a.kind == "scripted" for a in players)


def run_settings(header: RunHeader) -> dict[str, Any]:
    """The settings that must match for runs to be pooled (see `RunSummary.settings`)."""
    return {
        "agents": {p: a.identity() for p, a in header.agents.items()},
        "max_rounds": header.max_rounds,
        "bounded_context": header.bounded_context,
    }


def _flatten(settings: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in settings.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def pooling_problems(key: str, runs: Sequence[RunSummary]) -> list[Problem]:
    """Why the runs of one group cannot be pooled (empty when they can)."""
    problems: list[Problem] = []
    hashes = Counter(r.scenario_hash for r in runs)
    if len(hashes) > 1:
        parts = "; ".join(f"{h[:12]} in {n} run{'s' if n > 1 else ''} (e.g. "
                          f"{next(r.run_dir for r in runs if r.scenario_hash == h)})"
                          for h, n in hashes.most_common())
        problems.append(Problem(key, "runs made from different scenario or brief contents "
                                f"cannot be pooled; content hashes: {parts}"))
    flat = [_flatten(r.settings) for r in runs if r.settings]
    if len(flat) == len(runs) and flat:
        names = sorted({name for f in flat for name in f})
        differ: list[str] = []
        for name in names:
            values = Counter(json.dumps(f.get(name)) for f in flat)
            if len(values) > 1:
                shown = ", ".join(f"{v} in {n} run{'s' if n > 1 else ''}"
                                  for v, n in values.most_common())
                differ.append(f"{name.removeprefix('agents.')}: {shown}")
        if differ:
            more = f" (and {len(differ) - 6} more)" if len(differ) > 6 else ""
            problems.append(Problem(key, "runs made with different settings cannot be pooled; "
                                    f"they differ in {'; '.join(differ[:6])}{more}. Compare "
                                    "them separately"))
    return problems


# --------------------------------------------------------------------------- statistics models


class _MetricStats(BaseModel):
    """A model holding one statistic per metric of the table (`metrics`, by key). Its JSON has
    each at the top level under the metric's key, as when they were fields of their own."""

    PER_PARTY: ClassVar[bool] = False

    metrics: dict[str, Stat | None] = {}
    """Every metric of `detente.metrics.METRICS` of this scope, pooled over the distinct runs
    (None: no run measured it)."""

    @model_serializer(mode="wrap")
    def _flatten_metrics(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        stats = data.pop("metrics", {}) or {}
        return {**data, **stats}

    @model_validator(mode="before")
    @classmethod
    def _gather_metrics(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "metrics" in data:
            return data
        keys = [m.key for m in METRICS if m.per_party == cls.PER_PARTY]
        return {**{k: v for k, v in data.items() if k not in keys},
                "metrics": {k: data[k] for k in keys if k in data}}

    def stat(self, key: str) -> Stat | None:
        """The statistic of metric `key` (None: not measured, or no such metric)."""
        return self.metrics.get(key)

    def _proportion(self, key: str) -> Proportion | None:
        value = self.metrics.get(key)
        return value if isinstance(value, Proportion) else None

    def _mean(self, key: str) -> MeanCI | None:
        value = self.metrics.get(key)
        return value if isinstance(value, MeanCI) else None


class PartyStats(_MetricStats):
    """One party's statistics in a group: every per-party metric (`metrics`: mean utility,
    red-line violation rate, invalid-answer rate, value-estimate error, ...) and the red lines
    broken."""

    PER_PARTY: ClassVar[bool] = True

    red_lines: dict[str, Proportion]
    """Per red line id (every id broken in any compared run): share of runs breaking it."""

    @property
    def utility(self) -> MeanCI:
        """Mean utility over every run of the group (no deal: the reservation utility)."""
        value = self._mean("utility")
        assert value is not None, "every scored party has a utility"
        return value

    @property
    def violation_rate(self) -> Proportion:
        """Share of runs whose outcome breaks at least one of the party's red lines."""
        value = self._proportion("violation_rate")
        assert value is not None, "every scored party has a violation rate"
        return value

    @property
    def invalid_rate(self) -> Proportion | None:
        """Turns without a valid answer (format failures), pooled over the group's runs."""
        return self._proportion("invalid_rate")

    @property
    def estimation_error(self) -> MeanCI | None:
        """Mean over runs of the party's mean absolute value-estimate error (LLM parties)."""
        return self._mean("estimation_error")


class VariantStats(_MetricStats):
    """One group's statistics: every per-variant metric (`metrics`: deal rate, rounds to
    agreement, distance to Nash, ...), each party's, and what the deals agreed on."""

    variant: str
    """The group's key: a scenario id (or an agents label, see `GroupBy`)."""
    n: int
    """Distinct runs: the samples every statistic of the group is over (identical runs count
    once)."""
    runs: int = 0
    """Every finished run of the group, copies included."""
    identical: list[list[str]] = []
    """Runs with identical events, as lists of run ids (the first is the one counted)."""
    scripted: bool = False
    """Every party of every run was scripted: the group's seeds cannot differ."""
    deals: int
    statuses: dict[str, int]
    """Runs per status (deal, no_deal, deadlock)."""
    parties: dict[str, PartyStats]
    options: dict[str, dict[str, int]]
    """Per issue: how many deals agreed on each option."""
    terms: dict[str, dict[str, int]]
    """Per numeric term: how many deals agreed on each value (formatted with `g`)."""
    seeds: list[int]
    agents: list[str]
    """Distinct agent labels in the group (more than one: the group mixes who played)."""
    scenario_hashes: list[str]
    """Distinct scenario contents in the group (always one: groups never pool different
    contents)."""
    upper_bound: bool = False
    """The group's runs had the oracle mediator: reference runs, an upper bound."""

    @property
    def deal_rate(self) -> Proportion:
        value = self._proportion("deal_rate")
        assert value is not None, "every group has a deal rate"
        return value

    @property
    def rounds_to_agreement(self) -> RoundsStats | None:
        """Over deals only; None without any deal."""
        value = self.metrics.get("rounds_to_agreement")
        return value if isinstance(value, RoundsStats) else None

    @property
    def distance_to_nash(self) -> MeanCI | None:
        """Mean Euclidean distance of the outcome's utilities to the Nash package's (None: no
        run has a Nash package)."""
        return self._mean("distance_to_nash")

    @property
    def deal_any_round(self) -> Proportion | None:
        """Runs in which some table lay in the zone of agreement."""
        return self._proportion("deal_any_round")

    @property
    def deal_final_round(self) -> Proportion | None:
        """Runs whose last table lay in the zone of agreement."""
        return self._proportion("deal_final_round")

    @property
    def red_line_proposals(self) -> Proportion | None:
        """Proposals breaking a needed party's red line, pooled over the group's runs."""
        return self._proportion("red_line_proposals")


class MetricTest(BaseModel):
    """One metric of group `a` tested against group `b`."""

    diff: float | None
    """`a`'s rate or mean minus `b`'s (None: a group has no value)."""
    p: float | None
    """Two-sided p-value: Fisher's exact test for rates, Mann-Whitney U for means (None: not
    tested, see `PairTest.note`, or no variation)."""
    p_holm: float | None = None
    """`p` Holm-corrected over the comparison's groups tested against the reference on this
    measure (None: not corrected: one group tested, or no p-value)."""

    @property
    def p_judged(self) -> float | None:
        """The p-value significance is judged on: the corrected one, when there is one."""
        return self.p_holm if self.p_holm is not None else self.p


class _MetricTests(BaseModel):
    """A model holding the tests of the metrics marked `tested` (`metrics`, by key). Its JSON
    has `<stem>_diff` and `<stem>_p` for each at the top level, as when they were fields."""

    PER_PARTY: ClassVar[bool] = False

    metrics: dict[str, MetricTest] = {}

    @model_serializer(mode="wrap")
    def _flatten_tests(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        tests = data.pop("metrics", {}) or {}
        stems = {m.key: m.test_stem for m in METRICS}
        for key, test in tests.items():
            stem = stems.get(key, key)
            data[f"{stem}_diff"] = test["diff"] if isinstance(test, dict) else None
            data[f"{stem}_p"] = test["p"] if isinstance(test, dict) else None
            if isinstance(test, dict) and test.get("p_holm") is not None:
                data[f"{stem}_p_holm"] = test["p_holm"]
        return data

    @model_validator(mode="before")
    @classmethod
    def _gather_tests(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "metrics" in data:
            return data
        data = dict(data)
        tests: dict[str, dict[str, Any]] = {}
        for m in METRICS:
            if m.tested and m.per_party == cls.PER_PARTY and (
                    f"{m.test_stem}_p" in data or f"{m.test_stem}_diff" in data):
                tests[m.key] = {"diff": data.pop(f"{m.test_stem}_diff", None),
                                "p": data.pop(f"{m.test_stem}_p", None),
                                "p_holm": data.pop(f"{m.test_stem}_p_holm", None)}
        return {**data, "metrics": tests}

    def _diff(self, key: str) -> float:
        test = self.metrics.get(key)
        assert test is not None and test.diff is not None, f"no difference in {key}"
        return test.diff

    def _p(self, key: str) -> float | None:
        test = self.metrics.get(key)
        return test.p if test is not None else None


class PartyTest(_MetricTests):
    """A party's per-party metrics of group `a` tested against group `b`."""

    PER_PARTY: ClassVar[bool] = True

    @property
    def utility_diff(self) -> float:
        """Mean utility of `a` minus that of `b`."""
        return self._diff("utility")

    @property
    def utility_p(self) -> float | None:
        """Two-sided Mann-Whitney U p-value; None when a group has fewer than `MIN_TEST_RUNS`
        distinct runs or every value is the same."""
        return self._p("utility")

    @property
    def violation_diff(self) -> float:
        """Violation rate of `a` minus that of `b`."""
        return self._diff("violation_rate")

    @property
    def violation_p(self) -> float | None:
        """Fisher's exact test p-value on the violation rates."""
        return self._p("violation_rate")


class PairTest(_MetricTests):
    """Group `a` tested against group `b` on every metric marked `tested`."""

    a: str
    """The variant tested."""
    b: str
    """The reference it is tested against."""
    parties: dict[str, PartyTest]
    """Parties scored in both groups."""
    note: str | None = None
    """Why no p-value was computed: a group has fewer than `MIN_TEST_RUNS` distinct runs."""

    @property
    def deal_rate_diff(self) -> float:
        return self._diff("deal_rate")

    @property
    def deal_rate_p(self) -> float | None:
        """Fisher's exact test p-value on the deal rates (None: not tested, see `note`)."""
        return self._p("deal_rate")

    @property
    def distance_to_nash_p(self) -> float | None:
        """Two-sided Mann-Whitney U p-value on the distances to the Nash package."""
        return self._p("distance_to_nash")


class Comparison(BaseModel):
    reference: str
    group_by: str = "scenario"
    """`scenario`, `agents`, `scenario+agents`, or the factors grouped by, joined with ` x `."""
    factors: list[str] = []
    """The factors grouped by (empty for `scenario`, `agents` and `scenario+agents`)."""
    pooled_over: list[str] = []
    """Factors grouped by: the other factors whose levels vary within some group (pooled)."""
    groups: list[VariantStats]
    """The reference first, then the others in order of their keys."""
    tests: list[PairTest]
    """Each other group against the reference."""
    correction: Literal["holm"] | None = None
    """`holm`: more than one group was tested against the reference, and each measure's
    p-values are Holm-corrected over them (`MetricTest.p_holm`)."""
    notes: list[str] = []
    """What the reader must know of the grouping (a factor scripted agents ignore, ...)."""
    skipped: list[SkippedRun] = []
    """Filled by callers that loaded the runs with `load_runs_with_skipped`."""


# --------------------------------------------------------------------------- comparison


def group_key(run: RunSummary, by: GroupBy = "scenario") -> str:
    if by == "scenario":
        return run.scenario_id
    if by == "agents":
        return run.agents
    return f"{run.scenario_id} [{run.agents}]"


def known_factors(runs: Iterable[RunSummary]) -> list[str]:
    """Every factor the runs have a level of: `FACTORS`, each seat's `agent:PARTY`, and any
    other their designs recorded."""
    found: dict[str, None] = dict.fromkeys(FACTORS)
    for run in runs:
        found.update(dict.fromkeys(run.factors))
    return list(found)


def check_factors(by: Sequence[str], runs: Sequence[RunSummary]) -> list[str]:
    """The factors of `by`, checked against the runs' (InputError naming the known ones)."""
    from detente.errors import did_you_mean

    known = known_factors(runs)
    legacy: tuple[str, ...] = get_args(GroupBy)
    problems = []
    for name in by:
        if name in known:
            continue
        if name.startswith("agent:"):
            seats = [k for k in known if k.startswith("agent:")]
            problems.append(Problem(name, f"no such seat among the runs"
                                    f"{did_you_mean(name, seats)}; seats: {', '.join(seats)}"))
        else:
            problems.append(Problem(name, f"unknown factor{did_you_mean(name, known)}; "
                                    f"expected one of {', '.join(legacy)}, or a factor: "
                                    f"{', '.join(known)}"))
    if problems:
        raise InputError("--by", problems)
    if len(set(by)) != len(by):
        raise InputError("--by", [Problem("", "a factor is given twice")])
    return list(by)


def factor_key(run: RunSummary, factors: Sequence[str]) -> str:
    """The group of a run by `factors`: its level (one factor), or `f=level, g=level`."""
    if len(factors) == 1:
        return run.factors[factors[0]]
    return ", ".join(f"{f}={run.factors[f]}" for f in factors)


def _natural(key: str) -> tuple[Any, ...]:
    """Order levels as numbers where they are numbers (0.5 before 10)."""
    import re

    return tuple((0, float(p), "") if re.fullmatch(r"-?\d+(\.\d+)?", p) else (1, 0.0, p)
                 for p in re.split(r"(-?\d+(?:\.\d+)?)", key) if p)


def compare_runs(
    runs: list[RunSummary], reference: str | None = None, *,
    by: GroupBy | str | Sequence[str] = "scenario",
) -> Comparison:
    """Statistics per group of runs (by scenario id unless `by` says otherwise: `agents`,
    `scenario+agents`, or one or more factors, see `FACTORS`) and tests of every group against
    `reference` (default: "baseline" if there is such a group, else the first group). Raises
    InputError for an unknown factor or reference, or no runs."""
    if not runs:
        raise InputError("detente compare", [Problem("", "no runs to compare")])
    legacy: tuple[str, ...] = get_args(GroupBy)
    given = [by] if isinstance(by, str) else list(by)
    factors: list[str] = []
    if len(given) == 1 and given[0] in legacy:
        mode = given[0]
    else:
        factors = check_factors(given, runs)
        mode = " x ".join(factors)
    grouped: dict[str, list[RunSummary]] = {}
    for run in runs:
        key = factor_key(run, factors) if factors else group_key(run, mode)  # type: ignore[arg-type]
        grouped.setdefault(key, []).append(run)
    if factors:
        refused = [p for key, members in grouped.items()
                   for cell, inside in _cells(members).items()
                   for p in pooling_problems(f"{key} ({cell})", inside)]
    else:
        refused = [p for key, members in grouped.items()
                   for p in pooling_problems(key, members)]
    if refused:
        hint = ("compare such runs in separate commands" if factors or mode == "scenario+agents"
                else "group by scenario+agents to separate who played")
        varying = sorted((f for f in known_factors(runs) if f not in ("seed", "scenario")
                          and len({r.factors.get(f) for r in runs}) > 1),
                         key=lambda f: not f.startswith("agent:"))
        if varying and not factors:
            hint = ("group by a factor that varies among these runs ("
                    + ", ".join(f"--by {f}" for f in varying[:4])
                    + "), pooled over the others, or " + hint.removeprefix("group "))
        raise InputError("detente compare", [*refused, Problem("", f"hint: {hint}")])
    if reference is None:
        reference = DEFAULT_REFERENCE if DEFAULT_REFERENCE in grouped else min(
            grouped, key=_natural) if factors else next(iter(grouped))
    elif reference not in grouped:
        from detente.errors import did_you_mean

        what = f"level of {mode}" if factors else "variant"
        raise InputError("--against", [Problem("", f"no {what} '{reference}' among the runs"
                                               f"{did_you_mean(reference, list(grouped))}; "
                                               f"there are: "
                                               f"{', '.join(sorted(grouped, key=_natural))}")])
    order = [reference, *sorted((k for k in grouped if k != reference),
                                key=_natural if factors else None)]
    red_line_ids: dict[str, list[str]] = {}
    for run in runs:
        for party, ids in run.red_lines_broken.items():
            known = red_line_ids.setdefault(party, [])
            known.extend(i for i in ids if i not in known)
    distinct = {key: distinct_runs(members) for key, members in grouped.items()}
    stats: dict[str, VariantStats] = {}
    for key in order:
        counted, identical = distinct[key]
        stats[key] = variant_stats(key, counted, red_line_ids).model_copy(update={
            "runs": len(grouped[key]), "identical": identical,
            "scripted": all(_scripted(r) for r in grouped[key]),
            "seeds": sorted({r.seed for r in grouped[key]})})
    tests = [pair_test(key, reference, distinct[key][0], distinct[reference][0], stats[key],
                       stats[reference]) for key in order[1:]]
    correction = holm_correct(tests)
    pooled = [f for f in known_factors(runs) if f not in factors and f != "seed"
              and any(len({r.factors.get(f) for r in members}) > 1
                      for members in grouped.values())] if factors else []
    return Comparison(reference=reference, group_by=mode, factors=factors, pooled_over=pooled,
                      groups=[stats[k] for k in order], tests=tests, correction=correction,
                      notes=_factor_notes(factors, runs))


def _cells(runs: Sequence[RunSummary]) -> dict[str, list[RunSummary]]:
    """Runs by cell: the same level of every factor but the seed."""
    out: dict[str, list[RunSummary]] = {}
    for run in runs:
        key = ", ".join(f"{k}={v}" for k, v in sorted(run.factors.items()) if k != "seed")
        out.setdefault(key, []).append(run)
    return out


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjustment of `pvalues` (None: no test, left out of the family): the
    k-th smallest of m is multiplied by m - k + 1, made non-decreasing, capped at 1."""
    present = sorted((p, i) for i, p in enumerate(pvalues) if p is not None)
    m = len(present)
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(present):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


def holm_correct(tests: Sequence[PairTest]) -> Literal["holm"] | None:
    """Each measure's p-values Holm-corrected over the groups tested against the reference
    (per measure, and per party for per-party ones), when more than one group was tested;
    returns "holm" then, else None."""
    tested = [t for t in tests if t.note is None]
    if len(tested) < 2:
        return None
    families: dict[tuple[str, str], list[MetricTest]] = {}
    for t in tested:
        for key, mt in t.metrics.items():
            families.setdefault(("", key), []).append(mt)
        for party, pt in t.parties.items():
            for key, mt in pt.metrics.items():
                families.setdefault((party, key), []).append(mt)
    for family in families.values():
        for mt, adjusted in zip(family, holm([mt.p for mt in family]), strict=True):
            mt.p_holm = adjusted
    return "holm"


def _factor_notes(factors: Sequence[str], runs: Sequence[RunSummary]) -> list[str]:
    """When grouping by an LLM setting, the runs whose every seat is scripted: the setting
    changes nothing in them."""
    notes = []
    settings = [f for f in factors if f in ("temperature", "assist", "model")]
    scripted = [r for r in runs if _scripted(r)]
    if settings and scripted:
        notes.append(f"{', '.join(settings).capitalize()} changes nothing for scripted agents: "
                     f"{len(scripted)} of {len(runs)} runs had no LLM agent, so across the "
                     f"levels they are the same negotiations (copies); they add the same to "
                     "every level and cannot make one differ.")
    return notes


def distinct_runs(runs: Sequence[RunSummary]) -> tuple[list[RunSummary], list[list[str]]]:
    """The runs to count (the first of each set of identical runs) and the sets of identical
    runs (run ids, two or more each)."""
    kept: list[RunSummary] = []
    same: dict[str, list[str]] = {}
    for run in runs:
        if run.fingerprint is None or run.fingerprint not in same:
            kept.append(run)
            if run.fingerprint is not None:
                same[run.fingerprint] = [run.run_id]
        else:
            same[run.fingerprint].append(run.run_id)
    return kept, [ids for ids in same.values() if len(ids) > 1]


def _scripted(run: RunSummary) -> bool:
    agents = run.settings.get("agents") or {}
    return bool(agents) and all(isinstance(a, Mapping) and a.get("kind") == "scripted"
                                for a in agents.values())


def _parties(runs: Iterable[RunSummary]) -> list[str]:
    out: dict[str, None] = {}
    for run in runs:
        out.update(dict.fromkeys(run.parties))
    return list(out)


def _format_term(value: str | float) -> str:
    return f"{value:g}" if isinstance(value, float | int) else str(value)


RESERVED_KEYS = frozenset(VariantStats.model_fields) | frozenset(PartyStats.model_fields)
"""Names a metric cannot take: its statistic sits beside these fields in the JSON."""


def _check_keys(metrics: Sequence[Metric]) -> None:
    clash = [m.key for m in metrics if m.key in RESERVED_KEYS]
    if clash:
        raise ValueError(f"metric keys {', '.join(clash)} are names of the comparison's own "
                         "fields; rename them")


def variant_stats(
    variant: str, runs: Sequence[RunSummary], red_line_ids: Mapping[str, Sequence[str]]
) -> VariantStats:
    """The statistics of one group of runs; `red_line_ids` are the ids reported per party."""
    _check_keys(METRICS)
    values = [r.values for r in runs]
    deals = [r for r in runs if r.deal]
    parties: dict[str, PartyStats] = {}
    for party in _parties(runs):
        scored = [r for r in runs if party in r.parties]
        parties[party] = PartyStats(
            metrics={m.key: m.pool(m.samples(values, party)) for m in party_metrics()},
            red_lines={
                line: proportion(sum(line in r.red_lines_broken.get(party, []) for r in scored),
                                 len(scored))
                for line in red_line_ids.get(party, [])
            },
        )
    options: dict[str, Counter[str]] = {}
    terms: dict[str, Counter[str]] = {}
    for run in deals:
        if run.package is None:
            continue
        for issue, option in run.package.get("options", {}).items():
            options.setdefault(issue, Counter())[str(option)] += 1
        for term, value in run.package.get("terms", {}).items():
            terms.setdefault(term, Counter())[_format_term(value)] += 1
    return VariantStats(
        metrics={m.key: m.pool(m.samples(values)) for m in variant_metrics()},
        upper_bound=any(r.upper_bound for r in runs),
        variant=variant,
        n=len(runs),
        deals=len(deals),
        statuses=dict(Counter(r.status for r in runs)),
        parties=parties,
        options={k: dict(c.most_common()) for k, c in options.items()},
        terms={k: dict(sorted(c.items(), key=lambda kv: float(kv[0])))
               for k, c in terms.items()},
        seeds=sorted({r.seed for r in runs}),
        agents=sorted({r.agents for r in runs}),
        scenario_hashes=sorted({r.scenario_hash for r in runs}),
    )


def _scipy_stats() -> Any:
    import scipy.stats  # type: ignore[import-untyped]  # slow to import: only when testing

    return scipy.stats


def fisher_p(count_a: int, n_a: int, count_b: int, n_b: int) -> float:
    """Two-sided Fisher's exact test p-value of count_a/n_a against count_b/n_b."""
    result = _scipy_stats().fisher_exact([[count_a, n_a - count_a], [count_b, n_b - count_b]])
    return float(result.pvalue)


def mann_whitney_p(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Two-sided Mann-Whitney U p-value; None when a sample has fewer than 2 values or every
    value (of both samples) is the same."""
    if len(a) < 2 or len(b) < 2:
        return None
    if len(set(a) | set(b)) == 1:
        return None
    result = _scipy_stats().mannwhitneyu(list(a), list(b), alternative="two-sided")
    p = float(result.pvalue)
    return None if math.isnan(p) else p


def metric_test(metric: Metric, stat_a: Stat | None, stat_b: Stat | None,
                runs_a: Sequence[RunSummary], runs_b: Sequence[RunSummary],
                party: str | None = None, *, run: bool = True) -> MetricTest:
    """`metric` of one group against another: the difference of their rates or means, and the
    p-value (Fisher's exact test on rates, Mann-Whitney U on the runs' values) when `run`."""
    diff: float | None = None
    p: float | None = None
    if isinstance(stat_a, Proportion) and isinstance(stat_b, Proportion):
        diff = stat_a.rate - stat_b.rate
        if run:
            p = fisher_p(stat_a.count, stat_a.n, stat_b.count, stat_b.n)
    elif isinstance(stat_a, MeanCI) and isinstance(stat_b, MeanCI):
        diff = stat_a.mean - stat_b.mean
        if run:
            p = mann_whitney_p([float(v) for v in metric.samples([r.values for r in runs_a],
                                                                  party)],
                               [float(v) for v in metric.samples([r.values for r in runs_b],
                                                                  party)])
    return MetricTest(diff=diff, p=p)


def pair_test(
    a: str, b: str, runs_a: Sequence[RunSummary], runs_b: Sequence[RunSummary],
    stats_a: VariantStats, stats_b: VariantStats,
) -> PairTest:
    """Group `a` tested against group `b` (`runs_a`, `runs_b`: their distinct runs) on every
    metric marked `tested`. A group with fewer than `MIN_TEST_RUNS` distinct runs is not
    tested: every p-value is None and `note` says why."""
    short = [g for g in (stats_a, stats_b) if g.n < MIN_TEST_RUNS]
    note = None
    if short:
        note = (f"not tested (a test needs {MIN_TEST_RUNS} distinct runs in each group): "
                + "; ".join(f"{g.variant} has " + (f"{g.runs} identical runs" if g.runs > g.n
                                                    else f"{g.n} run{'s' if g.n != 1 else ''}")
                            for g in short))
    tested = [m for m in METRICS if m.tested]
    parties: dict[str, PartyTest] = {}
    for party in stats_a.parties:
        if party not in stats_b.parties:
            continue
        pa, pb = stats_a.parties[party], stats_b.parties[party]
        parties[party] = PartyTest(metrics={
            m.key: metric_test(m, pa.stat(m.key), pb.stat(m.key), runs_a, runs_b, party,
                               run=note is None)
            for m in tested if m.per_party})
    return PairTest(
        a=a,
        b=b,
        metrics={m.key: metric_test(m, stats_a.stat(m.key), stats_b.stat(m.key), runs_a,
                                    runs_b, run=note is None)
                 for m in tested if not m.per_party},
        parties=parties,
        note=note,
    )


def tested_metrics(per_party: bool) -> list[Metric]:
    """The metrics tested against the reference (per party or per variant), in table order."""
    return [m for m in METRICS if m.tested and m.per_party == per_party]


# --------------------------------------------------------------------------- findings

LISTED = 4
"""A finding names at most this many variants; beyond, it summarizes."""


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'s' if n != 1 else ''}"


def _listing(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def findings(comparison: Comparison) -> list[str]:
    """The comparison in a few sentences: identical runs, seeds that cannot differ, deals, red
    lines broken, and what the tests against the reference show. Plain text; a list of more
    than `LISTED` variants is summarized."""
    groups = comparison.groups
    out: list[str] = []
    total, distinct = sum(g.runs or g.n for g in groups), sum(g.n for g in groups)
    copied = [g for g in groups if g.runs > g.n]
    if copied:
        if len(copied) == len(groups) and all(g.n == 1 for g in groups):
            out.append(f"Identical runs: in every variant the runs are copies of one run (the "
                       f"same events), so each variant counts one run ({total} runs, "
                       f"{distinct} distinct).")
        else:
            shown = [f"{g.variant}: {g.n} of {g.runs}" for g in copied]
            if len(shown) > LISTED:
                shown = [*shown[:LISTED], f"{len(shown) - LISTED} more"]
            out.append(f"Identical runs are counted once: {total} runs, {distinct} distinct ("
                       + "; ".join(shown) + ").")
    scripted = [g.variant for g in groups if g.scripted and g.runs > 1]
    if scripted:
        where = ("every variant" if len(scripted) == len(groups)
                 else _listing(scripted) if len(scripted) <= LISTED
                 else _count(len(scripted), "variant"))
        out.append(f"Every agent is scripted in {where}: {SCRIPTED_SEEDS_NOTE}.")
    out.extend(comparison.notes)
    out.append(_deal_finding(groups))
    out.append(_red_line_finding(groups))
    if comparison.tests:
        out.append(_test_finding(comparison))
    if any(g.upper_bound for g in groups):
        out.append("Runs with the oracle mediator are reference runs (an upper bound), not "
                   "negotiations.")
    return out


def _deal_finding(groups: Sequence[VariantStats]) -> str:
    deals = sorted((g for g in groups if g.deals), key=lambda g: -g.deal_rate.rate)
    if not deals:
        return "No variant reached a deal."

    def rate(g: VariantStats) -> str:
        return f"{g.variant} {_pct(g.deal_rate.rate)} ({g.deals}/{g.n})"

    others = len(groups) - len(deals)
    if len(deals) <= LISTED:
        return ("Deals: " + "; ".join(rate(g) for g in deals)
                + (f"; none in the other {_count(others, 'variant')}" if others else "") + ".")
    top, low = deals[0].deal_rate.rate, deals[-1].deal_rate.rate
    highest = [rate(g) for g in deals if g.deal_rate.rate == top]
    lowest = [rate(g) for g in deals if g.deal_rate.rate == low]
    text = f"Deals in {len(deals)} of {len(groups)} variants; highest: " + "; ".join(
        highest[:LISTED]) + (f" and {len(highest) - LISTED} more" if len(highest) > LISTED
                             else "")
    if low != top:
        text += "; lowest: " + "; ".join(lowest[:LISTED]) + (
            f" and {len(lowest) - LISTED} more" if len(lowest) > LISTED else "")
    return text + "."


def _red_line_finding(groups: Sequence[VariantStats]) -> str:
    broken: dict[str, list[tuple[VariantStats, PartyStats]]] = {}
    for g in groups:
        for party, stats in g.parties.items():
            if stats.violation_rate.count:
                broken.setdefault(party, []).append((g, stats))
    if not broken:
        return "No outcome broke a red line."
    parts: list[str] = []
    for party, where in broken.items():
        if len(where) <= LISTED:
            parts.append(f"{party}'s in " + "; ".join(
                f"{g.variant} ({s.violation_rate.count}/{s.violation_rate.n}: "
                + ", ".join(line for line, p in s.red_lines.items() if p.count) + ")"
                for g, s in where))
        else:
            g, s = max(where, key=lambda gs: gs[1].violation_rate.rate)
            lines = Counter(line for _, s2 in where for line, p in s2.red_lines.items()
                            if p.count)
            parts.append(f"{party}'s in {len(where)} variants (most often "
                         f"{lines.most_common(1)[0][0]}; highest rate {g.variant}, "
                         f"{s.violation_rate.count}/{s.violation_rate.n})")
    return "Red lines broken: " + "; ".join(parts) + "."


def _test_finding(comparison: Comparison) -> str:
    ref = comparison.reference
    tested = [t for t in comparison.tests if t.note is None]
    if not tested:
        return (f"No variant could be tested against {ref}: a test needs {MIN_TEST_RUNS} "
                "distinct runs in each group.")
    untested = len(comparison.tests) - len(tested)
    tail = (f" ({_count(untested, 'variant')} with fewer than {MIN_TEST_RUNS} distinct runs "
            "not tested)") if untested else ""
    hits = {t.a: _significant(t) for t in tested}
    hits = {a: h for a, h in hits.items() if h}
    performed = sum(_tests_performed(t) for t in tested)
    holm = comparison.correction == "holm"
    how = (f"Holm-corrected over the {len(tested)} groups tested against {ref}, per measure"
           if holm else "uncorrected")
    if not hits:
        return (f"No difference from {ref} reaches p < {SIGNIFICANT} ({performed} tests"
                + (f"; {how}" if holm else "") + f"){tail}.")
    found = sum(len(h) for h in hits.values())
    chance = (f"{found} of {performed} tests below it, about {SIGNIFICANT * performed:.1f} "
              "expected by chance alone" if not holm else
              f"{found} of {performed} tests below it")
    if len(hits) <= LISTED:
        listed = "; ".join(f"{a}: {', '.join(h)}" for a, h in hits.items())
        return (f"Against {ref}, p < {SIGNIFICANT} ({how}; {chance}): {listed}{tail}.")
    return (f"Against {ref}, {len(hits)} of {len(tested)} variants differ at p < {SIGNIFICANT} on "
            f"some measure ({how}; {chance}); see the tests table{tail}.")


def _tests_performed(test: PairTest) -> int:
    ps = [t.p for t in test.metrics.values()]
    for pt in test.parties.values():
        ps += [t.p for t in pt.metrics.values()]
    return sum(p is not None for p in ps)


def _significant(test: PairTest) -> list[str]:
    out: list[str] = []
    def said(t: MetricTest) -> str:
        if t.p_holm is not None:
            return f"(p {t.p_holm:.3g} corrected, {t.p:.3g} uncorrected)" if t.p is not None \
                else f"(p {t.p_holm:.3g})"
        return f"(p {t.p:.3g})"

    for m in tested_metrics(per_party=False):
        t = test.metrics.get(m.key)
        if t is not None and (p := t.p_judged) is not None and p < SIGNIFICANT:
            out.append(f"{m.named_in_tests} {format_diff(m, t.diff)} {said(t)}")
    for party, pt in test.parties.items():
        for m in tested_metrics(per_party=True):
            t = pt.metrics.get(m.key)
            if t is not None and (p := t.p_judged) is not None and p < SIGNIFICANT:
                out.append(f"{party} {m.named_in_tests} {format_diff(m, t.diff)} {said(t)}")
    return out
