"""Comparing many finished runs: per-variant outcome statistics with intervals, and tests.

`load_runs` finds run folders (given directly, below a sweep folder, or by glob pattern) and reads
each one's header and `result.json` into a `RunSummary`. `compare_runs` groups the summaries by
scenario id (one group per variant) and computes, per group, the deal rate, rounds to agreement,
each party's mean utility and red-line violation rate, the agreed options and the distance to the
Nash package, with 95% intervals (Wilson for rates, percentile bootstrap for means); then it tests
every other group against a reference group (Fisher's exact test for rates, Mann-Whitney U for
utilities). P-values are not corrected for multiple comparisons.

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

import glob
import hashlib
import json
import math
import os
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ValidationError

from detente.errors import InputError, Problem
from detente.events import EVENT_FORMAT_VERSION, LOG_NAME, AgentSettings, RunHeader
from detente.report import RunResult

RESULT_NAME = "result.json"
SWEEP_MANIFEST = "sweep.json"
FINISHED_STATUSES = ("deal", "no_deal", "deadlock")
"""Statuses of runs that are compared; runs with any other status are skipped."""
DEFAULT_REFERENCE = "baseline"
BOOTSTRAP_RESAMPLES = 4000
BOOTSTRAP_SEED = 20250218
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
"""What makes a group: the scenario id (the default), who played, or both."""


# --------------------------------------------------------------------------- loading


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
    rounds: int
    package: dict[str, dict[str, str | float]] | None
    """The agreed package as {"options": {...}, "terms": {...}}; None without a deal."""
    utilities: dict[str, float]
    red_lines_broken: dict[str, list[str]]
    """Ids of the red lines the outcome breaks, per party (empty lists without a deal)."""
    distance_to_nash: float | None
    settings: dict[str, Any] = {}
    """What must match for two runs to be pooled: each party's `AgentSettings.identity()`,
    the round limit and the context size."""
    upper_bound: bool = False
    """The mediator was the oracle: a reference run."""
    deal_any_round: bool | None = None
    """Some table lay in the zone of agreement (None: a result from before this measure)."""
    deal_final_round: bool | None = None
    red_line_proposals: tuple[int, int] | None = None
    """(proposals breaking a needed party's red line, proposals)."""
    invalid_answers: dict[str, tuple[int, int]] = {}
    """Per party: (turns without a valid answer, turns)."""
    estimation_error: dict[str, float] = {}
    """Per party: mean absolute error of its value estimates, where it gave any."""
    fingerprint: str | None = None
    """`run_fingerprint` of the run: equal fingerprints mean identical runs (None: unknown,
    never equal to another run's)."""


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


def is_run_dir(path: Path) -> bool:
    """A run folder holds both `result.json` and `events.jsonl`."""
    return (path / RESULT_NAME).is_file() and (path / LOG_NAME).is_file()


def read_header(run_dir: Path) -> RunHeader:
    """The header (first line) of a run's event log."""
    log = run_dir / LOG_NAME
    try:
        with log.open(encoding="utf-8") as handle:
            first = next((line for line in handle if line.strip()), "")
    except OSError as exc:
        raise InputError(log, [Problem("", f"cannot read: {exc.strerror}")]) from None
    try:
        raw = json.loads(first)
    except json.JSONDecodeError:
        raise InputError(log, [Problem("line 1", "not valid JSON")]) from None
    if not isinstance(raw, dict) or raw.get("type") != "header":
        raise InputError(log, [Problem("line 1", "the log does not start with a header")])
    if raw.get("format_version", 0) > EVENT_FORMAT_VERSION:
        raise InputError(log, [Problem("line 1", "written by a newer detente; upgrade")])
    try:
        return RunHeader.model_validate(raw)
    except ValidationError as exc:
        raise InputError(log, [Problem("line 1", _first_error(exc))]) from None


def read_result(run_dir: Path) -> RunResult:
    """A run's `result.json`."""
    path = run_dir / RESULT_NAME
    try:
        return RunResult.model_validate_json(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(path, [Problem("", f"cannot read: {exc.strerror}")]) from None
    except ValidationError as exc:
        raise InputError(path, [Problem("", _first_error(exc))]) from None


def _first_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    return f"{where}: {first['msg']}" if where else str(first["msg"])


def read_event_dicts(run_dir: Path) -> list[dict[str, Any]] | None:
    """Every event of a run's log as parsed JSON (no validation); None if it cannot be read."""
    try:
        lines = (run_dir / LOG_NAME).read_text(encoding="utf-8").split("\n")
        events = [json.loads(line) for line in lines if line.strip()]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return events if all(isinstance(ev, dict) for ev in events) else None


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
    outcome = summary.model_dump(mode="json", exclude={"run_dir", "run_id", "seed",
                                                       "fingerprint"})
    document = {"scenario_hash": header.scenario_hash, "settings": run_settings(header),
                "events": normalized_events(events), "outcome": outcome}
    return hashlib.sha256(_canonical(document).encode("utf-8")).hexdigest()


def summarize_run(run_dir: Path, header: RunHeader, result: RunResult,
                  events: Iterable[Mapping[str, Any]] | None = None) -> RunSummary:
    """The `RunSummary` of a run from its header, result and events (as JSON objects; read from
    the run's log when not given)."""
    deal = result.status == "deal" and result.package is not None
    package: dict[str, dict[str, str | float]] | None = None
    if deal and result.package is not None:
        package = {"options": dict(result.package.options), "terms": dict(result.package.terms)}
    broken = {party: (list(ids) if deal else [])
              for party, ids in result.red_lines_broken.items()}
    for party in result.scores.parties:
        broken.setdefault(party, [])
    metrics = result.metrics
    summary = RunSummary(
        run_dir=str(run_dir),
        run_id=result.run_id,
        scenario_id=result.scenario_id,
        scenario_hash=result.scenario_hash,
        seed=header.seed,
        agents=agents_label(header.agents),
        status=result.status,
        deal=deal,
        rounds=result.rounds_played,
        package=package,
        utilities={party: s.utility for party, s in result.scores.parties.items()},
        red_lines_broken=broken,
        distance_to_nash=result.scores.deal.distance_to_nash,
        settings=run_settings(header),
        upper_bound=result.upper_bound,
        deal_any_round=metrics.deal_any_round if metrics else None,
        deal_final_round=metrics.deal_final_round if metrics else None,
        red_line_proposals=(metrics.red_line_proposals.count, metrics.red_line_proposals.n)
        if metrics else None,
        invalid_answers={p: (r.count, r.n) for p, r in metrics.invalid_answers.items()}
        if metrics else {},
        estimation_error={p: e for p, e in metrics.estimation_error.items() if e is not None}
        if metrics else {},
    )
    if events is None:
        events = read_event_dicts(run_dir)
    if events is not None:
        summary.fingerprint = run_fingerprint(summary, header, events)
    return summary


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


def find_run_dirs(paths: Sequence[str | Path]) -> list[Path]:
    """Every run folder named by `paths` (run folders, folders holding runs, glob patterns).

    Raises InputError for a path that does not exist, a pattern that matches nothing, or a path
    under which there is no run folder.
    """
    if not paths:
        raise InputError("detente compare", [Problem("PATH", "give at least one run folder, "
                                                     "sweep folder or glob pattern")])
    found: dict[Path, Path] = {}
    for given in paths:
        text = str(given)
        explicit = not glob.has_magic(text)
        if explicit:
            target = Path(text)
            if not target.exists():
                raise InputError(target, [Problem("", "no such file or folder")])
            targets = [target]
        else:
            targets = [Path(m) for m in sorted(glob.glob(text, recursive=True))]
            if not targets:
                raise InputError(text, [Problem("", "no file or folder matches this pattern")])
        run_dirs = [d for t in targets for d in _runs_under(t, explicit)]
        if not run_dirs:
            raise InputError(text, [Problem("", f"no run folders here (a run folder holds "
                                            f"{RESULT_NAME} and {LOG_NAME})")])
        for run_dir in run_dirs:
            found.setdefault(run_dir.resolve(), run_dir)
    return list(found.values())


def _runs_under(target: Path, explicit: bool) -> list[Path]:
    if target.is_file():
        if target.name in (RESULT_NAME, LOG_NAME, SWEEP_MANIFEST):
            target = target.parent
        elif explicit:
            raise InputError(target, [Problem("", "not a folder: give run folders, sweep "
                                              "folders or glob patterns")])
        else:
            return []
    if is_run_dir(target):
        return [target]
    out: list[Path] = []
    for root, dirs, _files in os.walk(target):
        dirs.sort()
        here = Path(root)
        if here != target and is_run_dir(here):
            out.append(here)
            dirs.clear()  # a run folder holds no other run
    return out


def load_runs_with_skipped(paths: Sequence[str | Path]) -> LoadedRuns:
    """Finished runs under `paths`, and the run folders skipped (unfinished or unreadable).

    Raises InputError when a path is missing or holds no run folder, or when none of the runs
    found has finished.
    """
    runs: list[RunSummary] = []
    skipped: list[SkippedRun] = []
    for run_dir in find_run_dirs(paths):
        try:
            header = read_header(run_dir)
            result = read_result(run_dir)
        except InputError as exc:
            skipped.append(SkippedRun(run_dir=str(run_dir), status=None,
                                      reason=str(exc).splitlines()[0]))
            continue
        if result.status not in FINISHED_STATUSES:
            skipped.append(SkippedRun(run_dir=str(run_dir), status=result.status,
                                      reason=result.reason))
            continue
        runs.append(summarize_run(run_dir, header, result))
    if not runs:
        counts = Counter(s.status or "unreadable" for s in skipped)
        what = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
        raise InputError(", ".join(str(p) for p in paths),
                         [Problem("", f"found {len(skipped)} run folders but none finished "
                                  f"({what})")])
    return LoadedRuns(runs=runs, skipped=skipped)


def load_runs(paths: Sequence[str | Path]) -> list[RunSummary]:
    """Finished runs under `paths`: run folders, folders holding runs (e.g. sweep folders) and
    glob patterns. Unfinished runs (running, interrupted, error) and unreadable run folders are
    left out; `load_runs_with_skipped` also says which. Raises InputError when a path is missing
    or holds no run folder, or when no run found has finished."""
    return load_runs_with_skipped(paths).runs


# --------------------------------------------------------------------------- statistics


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion (95% for the default z); (0, 1) when n is 0."""
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got {successes} of {n}")
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    z2 = z * z
    denominator = 1 + z2 / n
    center = (p + z2 / (2 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    lo = 0.0 if successes == 0 else max(0.0, center - half)
    hi = 1.0 if successes == n else min(1.0, center + half)
    return lo, hi


def bootstrap_mean_ci(
    values: Sequence[float] | np.ndarray,
    confidence: float = 0.95,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean; deterministic for a given seed.

    One value (or all equal) gives a zero-width interval; no values raise ValueError.
    """
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        raise ValueError("no values to bootstrap")
    if data.size == 1 or bool(np.all(data == data[0])):
        mean = float(data.mean())
        return mean, mean
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(resamples, data.size))].mean(axis=1)
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return float(lo), float(hi)


class Proportion(BaseModel):
    """A share of runs with its Wilson 95% interval."""

    count: int
    n: int
    rate: float
    lo: float
    hi: float


class MeanCI(BaseModel):
    """A mean over runs with its percentile-bootstrap 95% interval."""

    mean: float
    lo: float
    hi: float
    n: int


class RoundsStats(BaseModel):
    mean: float
    median: float
    n: int


def proportion(count: int, n: int) -> Proportion:
    lo, hi = wilson_interval(count, n)
    return Proportion(count=count, n=n, rate=count / n if n else 0.0, lo=lo, hi=hi)


def mean_ci(values: Sequence[float]) -> MeanCI | None:
    if not values:
        return None
    lo, hi = bootstrap_mean_ci(values)
    return MeanCI(mean=float(np.mean(values)), lo=lo, hi=hi, n=len(values))


# --------------------------------------------------------------------------- comparison


class PartyStats(BaseModel):
    utility: MeanCI
    """Mean utility over every run of the group (no deal: the reservation utility)."""
    violation_rate: Proportion
    """Share of runs whose outcome breaks at least one of the party's red lines."""
    red_lines: dict[str, Proportion]
    """Per red line id (every id broken in any compared run): share of runs breaking it."""
    invalid_rate: Proportion | None = None
    """Turns without a valid answer (format failures), pooled over the group's runs."""
    estimation_error: MeanCI | None = None
    """Mean over runs of the party's mean absolute value-estimate error (LLM parties)."""


class VariantStats(BaseModel):
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
    deal_rate: Proportion
    statuses: dict[str, int]
    """Runs per status (deal, no_deal, deadlock)."""
    rounds_to_agreement: RoundsStats | None
    """Over deals only; None without any deal."""
    parties: dict[str, PartyStats]
    options: dict[str, dict[str, int]]
    """Per issue: how many deals agreed on each option."""
    terms: dict[str, dict[str, int]]
    """Per numeric term: how many deals agreed on each value (formatted with `g`)."""
    distance_to_nash: MeanCI | None
    """Mean Euclidean distance of the outcome's utilities to the Nash package's (None: no run
    has a Nash package)."""
    seeds: list[int]
    agents: list[str]
    """Distinct agent labels in the group (more than one: the group mixes who played)."""
    scenario_hashes: list[str]
    """Distinct scenario contents in the group (always one: groups never pool different
    contents)."""
    deal_any_round: Proportion | None = None
    """Runs in which some table lay in the zone of agreement."""
    deal_final_round: Proportion | None = None
    """Runs whose last table lay in the zone of agreement."""
    red_line_proposals: Proportion | None = None
    """Proposals breaking a needed party's red line, pooled over the group's runs."""
    upper_bound: bool = False
    """The group's runs had the oracle mediator: reference runs, an upper bound."""


class PartyTest(BaseModel):
    utility_diff: float
    """Mean utility of `a` minus that of `b`."""
    utility_p: float | None
    """Two-sided Mann-Whitney U p-value; None when a group has fewer than `MIN_TEST_RUNS`
    distinct runs or every value is the same."""
    violation_diff: float
    """Violation rate of `a` minus that of `b`."""
    violation_p: float | None
    """Fisher's exact test p-value on the violation rates (None: not tested, see
    `PairTest.note`)."""


class PairTest(BaseModel):
    a: str
    """The variant tested."""
    b: str
    """The reference it is tested against."""
    deal_rate_diff: float
    deal_rate_p: float | None
    """Fisher's exact test p-value on the deal rates (None: not tested, see `note`)."""
    distance_to_nash_p: float | None
    """Two-sided Mann-Whitney U p-value on the distances to the Nash package."""
    parties: dict[str, PartyTest]
    """Parties scored in both groups."""
    note: str | None = None
    """Why no p-value was computed: a group has fewer than `MIN_TEST_RUNS` distinct runs."""


class Comparison(BaseModel):
    reference: str
    group_by: GroupBy = "scenario"
    groups: list[VariantStats]
    """The reference first, then the others in order of their keys."""
    tests: list[PairTest]
    """Each other group against the reference."""
    skipped: list[SkippedRun] = []
    """Filled by callers that loaded the runs with `load_runs_with_skipped`."""


def group_key(run: RunSummary, by: GroupBy = "scenario") -> str:
    if by == "scenario":
        return run.scenario_id
    if by == "agents":
        return run.agents
    return f"{run.scenario_id} [{run.agents}]"


def compare_runs(
    runs: list[RunSummary], reference: str | None = None, *, by: GroupBy = "scenario"
) -> Comparison:
    """Statistics per group of runs (by scenario id unless `by` says otherwise) and tests of
    every group against `reference` (default: "baseline" if there is such a group, else the
    first group). Raises InputError for an unknown reference or no runs."""
    if not runs:
        raise InputError("detente compare", [Problem("", "no runs to compare")])
    grouped: dict[str, list[RunSummary]] = {}
    for run in runs:
        grouped.setdefault(group_key(run, by), []).append(run)
    refused = [p for key, members in grouped.items() for p in pooling_problems(key, members)]
    if refused:
        hint = ("group by scenario+agents to separate who played" if by != "scenario+agents"
                else "compare such runs in separate commands")
        raise InputError("detente compare", [*refused, Problem("", f"hint: {hint}")])
    if reference is None:
        reference = DEFAULT_REFERENCE if DEFAULT_REFERENCE in grouped else next(iter(grouped))
    elif reference not in grouped:
        raise InputError("--against", [Problem("", f"no variant '{reference}' among the runs; "
                                               f"there are: {', '.join(sorted(grouped))}")])
    order = [reference, *sorted(k for k in grouped if k != reference)]
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
    return Comparison(reference=reference, group_by=by, groups=[stats[k] for k in order],
                      tests=tests)


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
        out.update(dict.fromkeys(run.utilities))
    return list(out)


def _format_term(value: str | float) -> str:
    return f"{value:g}" if isinstance(value, float | int) else str(value)


def variant_stats(
    variant: str, runs: Sequence[RunSummary], red_line_ids: Mapping[str, Sequence[str]]
) -> VariantStats:
    """The statistics of one group of runs; `red_line_ids` are the ids reported per party."""
    n = len(runs)
    deals = [r for r in runs if r.deal]
    rounds = [r.rounds for r in deals]
    parties: dict[str, PartyStats] = {}
    for party in _parties(runs):
        scored = [r for r in runs if party in r.utilities]
        utility = mean_ci([r.utilities[party] for r in scored])
        assert utility is not None
        broken = [r for r in scored if r.red_lines_broken.get(party)]
        answered = [r.invalid_answers[party] for r in runs if party in r.invalid_answers]
        parties[party] = PartyStats(
            invalid_rate=proportion(sum(c for c, _ in answered), sum(n for _, n in answered))
            if answered and sum(n for _, n in answered) else None,
            estimation_error=mean_ci([r.estimation_error[party] for r in runs
                                      if party in r.estimation_error]),
            utility=utility,
            violation_rate=proportion(len(broken), len(scored)),
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
    distances = [r.distance_to_nash for r in runs if r.distance_to_nash is not None]
    measured = [r for r in runs if r.deal_any_round is not None]
    proposals = [r.red_line_proposals for r in runs if r.red_line_proposals is not None]
    tabled = sum(n for _, n in proposals)
    return VariantStats(
        deal_any_round=proportion(sum(bool(r.deal_any_round) for r in measured), len(measured))
        if measured else None,
        deal_final_round=proportion(sum(bool(r.deal_final_round) for r in measured),
                                    len(measured)) if measured else None,
        red_line_proposals=proportion(sum(c for c, _ in proposals), tabled) if tabled else None,
        upper_bound=any(r.upper_bound for r in runs),
        variant=variant,
        n=n,
        deals=len(deals),
        deal_rate=proportion(len(deals), n),
        statuses=dict(Counter(r.status for r in runs)),
        rounds_to_agreement=RoundsStats(mean=float(np.mean(rounds)),
                                        median=float(statistics.median(rounds)),
                                        n=len(rounds)) if rounds else None,
        parties=parties,
        options={k: dict(c.most_common()) for k, c in options.items()},
        terms={k: dict(sorted(c.items(), key=lambda kv: float(kv[0])))
               for k, c in terms.items()},
        distance_to_nash=mean_ci(distances),
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


def pair_test(
    a: str, b: str, runs_a: Sequence[RunSummary], runs_b: Sequence[RunSummary],
    stats_a: VariantStats, stats_b: VariantStats,
) -> PairTest:
    """Group `a` tested against group `b` (`runs_a`, `runs_b`: their distinct runs). A group
    with fewer than `MIN_TEST_RUNS` distinct runs is not tested: every p-value is None and
    `note` says why."""
    short = [g for g in (stats_a, stats_b) if g.n < MIN_TEST_RUNS]
    note = None
    if short:
        note = (f"not tested (a test needs {MIN_TEST_RUNS} distinct runs in each group): "
                + "; ".join(f"{g.variant} has " + (f"{g.runs} identical runs" if g.runs > g.n
                                                    else f"{g.n} run{'s' if g.n != 1 else ''}")
                            for g in short))
    parties: dict[str, PartyTest] = {}
    for party in stats_a.parties:
        if party not in stats_b.parties:
            continue
        pa, pb = stats_a.parties[party], stats_b.parties[party]
        parties[party] = PartyTest(
            utility_diff=pa.utility.mean - pb.utility.mean,
            utility_p=None if note else mann_whitney_p(
                [r.utilities[party] for r in runs_a if party in r.utilities],
                [r.utilities[party] for r in runs_b if party in r.utilities]),
            violation_diff=pa.violation_rate.rate - pb.violation_rate.rate,
            violation_p=None if note else fisher_p(
                pa.violation_rate.count, pa.violation_rate.n,
                pb.violation_rate.count, pb.violation_rate.n),
        )
    return PairTest(
        a=a,
        b=b,
        deal_rate_diff=stats_a.deal_rate.rate - stats_b.deal_rate.rate,
        deal_rate_p=None if note else fisher_p(stats_a.deals, stats_a.n, stats_b.deals,
                                               stats_b.n),
        distance_to_nash_p=None if note else mann_whitney_p(
            [r.distance_to_nash for r in runs_a if r.distance_to_nash is not None],
            [r.distance_to_nash for r in runs_b if r.distance_to_nash is not None]),
        parties=parties,
        note=note,
    )


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
    if not hits:
        return f"No difference from {ref} reaches p < {SIGNIFICANT} ({performed} tests){tail}."
    found = sum(len(h) for h in hits.values())
    chance = (f"{found} of {performed} tests below it, about {SIGNIFICANT * performed:.1f} "
              "expected by chance alone")
    if len(hits) <= LISTED:
        listed = "; ".join(f"{a}: {', '.join(h)}" for a, h in hits.items())
        return (f"Against {ref}, p < {SIGNIFICANT} (uncorrected; {chance}): {listed}{tail}.")
    return (f"Against {ref}, {len(hits)} of {len(tested)} variants differ at p < {SIGNIFICANT} on "
            f"some measure (uncorrected; {chance}); see the tests table{tail}.")


def _tests_performed(test: PairTest) -> int:
    ps = [test.deal_rate_p, test.distance_to_nash_p]
    for pt in test.parties.values():
        ps += [pt.utility_p, pt.violation_p]
    return sum(p is not None for p in ps)


def _significant(test: PairTest) -> list[str]:
    out: list[str] = []
    if test.deal_rate_p is not None and test.deal_rate_p < SIGNIFICANT:
        out.append(f"deal rate {100 * test.deal_rate_diff:+.0f} pts (p {test.deal_rate_p:.3g})")
    if test.distance_to_nash_p is not None and test.distance_to_nash_p < SIGNIFICANT:
        out.append(f"distance to Nash (p {test.distance_to_nash_p:.3g})")
    for party, pt in test.parties.items():
        if pt.utility_p is not None and pt.utility_p < SIGNIFICANT:
            out.append(f"{party} utility {pt.utility_diff:+.1f} (p {pt.utility_p:.3g})")
        if pt.violation_p is not None and pt.violation_p < SIGNIFICANT:
            out.append(f"{party} red-line violations {100 * pt.violation_diff:+.0f} pts "
                       f"(p {pt.violation_p:.3g})")
    return out
