"""`detente.comparison` and `detente compare`: loading runs, statistics checked by hand, the CLI.

Runs here are crafted run folders (a header line in `events.jsonl` and a `result.json` built from
the real models), so every count, rate and p-value can be computed by hand: a baseline of four
runs (two deals) against a bilateral variant of four deals, three of which break a Ukrainian red
line. The CLI is driven in-process through `detente.cli.main` (as in test_cli_inputs.py), plus one
real process for the exit status of a bad path.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import math
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest

from detente.agents import make_agent
from detente.comparison import (
    SCRIPTED_SEEDS_NOTE,
    Comparison,
    RunSummary,
    VariantStats,
    agents_label,
    compare_runs,
    findings,
    load_runs_with_skipped,
    summarize_run,
)
from detente.errors import InputError
from detente.events import LOG_NAME, AgentSettings, RunHeader
from detente.loading import load_bundle
from detente.metrics import bootstrap_mean_ci, wilson_interval
from detente.report import PartyTokens, RunResult
from detente.runner import RunPlan, start_run
from detente.runs import RunFolder
from detente.scenario import Package
from detente.scoring import DealScore, PartyScore, RedLineBreach, Score
from helpers import TINY, scripted, tiny_variant
from helpers import CliResult as Result

ROOT = Path(__file__).resolve().parent.parent
PARTIES = ("us", "russia", "ukraine", "eu")

# --------------------------------------------------------------------------- crafted runs


def write_run(
    run_dir: Path,
    scenario_id: str,
    seed: int,
    *,
    status: str = "deal",
    rounds: int = 4,
    utilities: dict[str, float] | None = None,
    broken: dict[str, list[str]] | None = None,
    options: dict[str, str] | None = None,
    ceiling: float = 200.0,
    distance: float | None = 10.0,
    strategy: str = "conceder",
) -> Path:
    """A run folder with a header line and a result.json saying exactly what is given."""
    run_dir.mkdir(parents=True)
    utilities = utilities or dict.fromkeys(PARTIES, 50.0)
    broken = broken or {}
    deal = status == "deal"
    package = Package(options=options or {"territory": "frozen_line"},
                      terms={"army_ceiling": ceiling}) if deal else None
    agents = {p: AgentSettings(kind="scripted", strategy=strategy) for p in PARTIES}
    agents["un_mediator"] = AgentSettings(kind="scripted", strategy="nash")
    header = RunHeader(id="header", run_id=f"{scenario_id}-{seed}", scenario_id=scenario_id,
                       scenario_path="x.yaml", scenario_hash="h" * 64, package_version="0",
                       seed=seed, max_rounds=8, agents=agents, bounded_context=6)
    (run_dir / "events.jsonl").write_text(header.model_dump_json() + "\n", encoding="utf-8")
    parties = {
        p: PartyScore(utility=u, reservation_utility=40.0, surplus=u - 40.0,
                      red_lines_broken=[RedLineBreach(id=i, description=i, why="")
                                        for i in broken.get(p, [])],
                      accepting_rational=True)
        for p, u in utilities.items()
    }
    result = RunResult(
        run_id=f"{scenario_id}-{seed}", scenario_id=scenario_id, scenario_hash="h" * 64,
        status=status,
        reason="crafted", rounds=rounds, package=package, last_table=package, votes={},
        scores=Score(parties=parties, deal=DealScore(
            deal=deal, required_red_lines_hold=True, pareto_optimal=False, nash_product=0.0,
            nash_package=None, distance_to_nash=distance, min_utility=0.0, gini=0.0)),
        red_lines_broken={p: broken.get(p, []) for p in utilities},
        tokens={p: PartyTokens(prompt_tokens=0, completion_tokens=0, total_tokens=0, calls=0,
                               invalid_responses=0) for p in utilities},
        total_tokens=0, wall_time_seconds=0.0,
    )
    (run_dir / "result.json").write_text(result.model_dump_json(indent=2), encoding="utf-8")
    return run_dir


def util(ukraine: float, eu: float = 40.0) -> dict[str, float]:
    return {"us": 60.0, "russia": 62.0, "ukraine": ukraine, "eu": eu}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return crafted_sweep(tmp_path_factory.mktemp("sweep"))


def crafted_sweep(root: Path) -> Path:
    """A sweep-shaped folder: baseline (2 deals in 4) and bilateral (4 deals, 3 break a
    Ukrainian red line), plus one unfinished run and a sweep.json."""
    (root / "sweep.json").write_text("{}", encoding="utf-8")
    base = root / "baseline"
    write_run(base / "seed-0", "baseline", 0, rounds=3, utilities=util(50.0),
              options={"territory": "frozen_line"}, ceiling=200.0, distance=4.0)
    write_run(base / "seed-1", "baseline", 1, rounds=5, utilities=util(30.0),
              options={"territory": "donbass_only"}, ceiling=250.0, distance=8.0)
    write_run(base / "seed-2", "baseline", 2, status="no_deal", rounds=8,
              utilities=util(36.0), distance=12.0)
    write_run(base / "seed-3", "baseline", 3, status="deadlock", rounds=6,
              utilities=util(36.0), distance=None)
    bil = root / "bilateral_us_russia"
    for seed, (ukraine, eu, broken) in enumerate([
        (10.0, 20.0, {"ukraine": ["no_cession", "army_floor"], "eu": ["no_veto"]}),
        (20.0, 30.0, {"ukraine": ["no_cession"]}),
        (30.0, 25.0, {"ukraine": ["no_cession"]}),
        (40.0, 35.0, {}),
    ]):
        write_run(bil / f"seed-{seed}", "bilateral_us_russia", seed, rounds=2 + seed,
                  utilities=util(ukraine, eu), broken=broken,
                  options={"territory": "donbass_only"}, distance=20.0 + seed)
    write_run(bil / "seed-9", "bilateral_us_russia", 9, status="error")
    return root


def summaries(paths: Sequence[str | Path]) -> list[RunSummary]:
    """The finished runs under `paths`, summed up for a comparison."""
    return load_runs_with_skipped(paths).runs


@pytest.fixture(scope="module")
def comparison(sweep: Path) -> Comparison:
    return compare_runs(summaries([sweep]))


# --------------------------------------------------------------------------- pure statistics


@pytest.mark.parametrize(("successes", "n", "lo", "hi"), [
    # Wilson score interval, z = 1.96, computed by hand from
    # (p + z^2/2n) / (1 + z^2/n) -/+ z / (1 + z^2/n) * sqrt(p(1-p)/n + z^2/4n^2);
    # statsmodels' proportion_confint(method="wilson") gives the same values.
    (0, 10, 0.0, 0.277540),
    (5, 10, 0.236590, 0.763410),
    (10, 10, 0.722460, 1.0),
    (1, 3, 0.061492, 0.792340),
    (3, 4, 0.300636, 0.954413),
])
def test_wilson_interval_matches_hand_computed_values(
    successes: int, n: int, lo: float, hi: float
) -> None:
    got = wilson_interval(successes, n)
    assert got == pytest.approx((lo, hi), abs=1e-5)


def test_wilson_interval_edge_cases() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert wilson_interval(0, 1)[0] == 0.0 and wilson_interval(1, 1)[1] == 1.0
    lo, hi = wilson_interval(2, 10, z=2.576)  # 99%: wider than 95%
    lo95, hi95 = wilson_interval(2, 10)
    assert lo < lo95 and hi > hi95
    for bad in ((-1, 3), (4, 3)):
        with pytest.raises(ValueError):
            wilson_interval(*bad)


def test_bootstrap_mean_ci_is_deterministic_and_close_to_the_normal_interval() -> None:
    values = np.random.default_rng(7).normal(10.0, 2.0, 400)
    lo, hi = bootstrap_mean_ci(values)
    assert (lo, hi) == bootstrap_mean_ci(values)  # fixed seed
    half = 1.96 * values.std(ddof=0) / math.sqrt(values.size)
    assert lo == pytest.approx(values.mean() - half, abs=0.1 * half)
    assert hi == pytest.approx(values.mean() + half, abs=0.1 * half)
    # Five values: the bootstrap distribution of the mean has sd sqrt(2 / 5).
    lo5, hi5 = bootstrap_mean_ci([1, 2, 3, 4, 5], resamples=20000)
    assert lo5 == pytest.approx(3 - 1.96 * math.sqrt(0.4), abs=0.25)
    assert hi5 == pytest.approx(3 + 1.96 * math.sqrt(0.4), abs=0.25)
    assert bootstrap_mean_ci([4.0]) == (4.0, 4.0)
    assert bootstrap_mean_ci([4.0, 4.0, 4.0]) == (4.0, 4.0)
    with pytest.raises(ValueError):
        bootstrap_mean_ci([])


def test_agents_label_names_the_common_player_and_the_exceptions() -> None:
    s = AgentSettings(kind="scripted", strategy="boulware")
    m = AgentSettings(kind="scripted", strategy="nash")
    assert agents_label({"a": s, "b": s, "m": m}) == "all=scripted:boulware, m=scripted:nash"
    assert agents_label({"a": s, "m": m}) == "a=scripted:boulware, m=scripted:nash"
    assert agents_label({"a": s, "b": s}) == "all=scripted:boulware"


# --------------------------------------------------------------------------- loading


def test_load_runs_finds_every_finished_run_below_a_sweep_folder(sweep: Path) -> None:
    loaded = load_runs_with_skipped([sweep])
    assert len(loaded.runs) == 8
    assert [s.run_dir for s in loaded.skipped] == [str(sweep / "bilateral_us_russia/seed-9")]
    assert loaded.skipped[0].status == "error"
    run = next(r for r in loaded.runs if r.run_dir.endswith("baseline/seed-1"))
    assert run.fingerprint is not None and len(run.fingerprint) == 64
    assert run.factors["scenario"] == "baseline" and run.factors["seed"] == "1"
    assert run.factors["agent:un_mediator"] == "scripted:nash"
    assert run.model_copy(update={"fingerprint": None, "factors": {}}) == RunSummary(
        run_dir=str(sweep / "baseline" / "seed-1"), run_id="baseline-1", scenario_id="baseline",
        scenario_hash="h" * 64, seed=1, agents="all=scripted:conceder, un_mediator=scripted:nash",
        status="deal", deal=True,
        package={"options": {"territory": "donbass_only"}, "terms": {"army_ceiling": 250.0}},
        parties=list(PARTIES), red_lines_broken={p: [] for p in PARTIES},
        values={"deal_rate": True, "rounds_to_agreement": 5.0, "distance_to_nash": 8.0,
                "deal_any_round": None, "deal_final_round": None, "red_line_proposals": None,
                "saboteur_succeeded": None,
                "saboteur_noticed": None,
                "utility": util(30.0), "violation_rate": dict.fromkeys(PARTIES, False),
                "invalid_rate": {}, "estimation_error": {},
                # Not judged (no judgements.jsonl) and no price known for scripted agents.
                "leak_rate": {}, "judged_fidelity": {}, "judged_leakage": {},
                "judged_consistency": {}, "judged_tone": {}, "contradiction_rate": {},
                "unverified_quotes": {}, "cost_per_run": None, "cost_per_deal": None},
        settings={"agents": {**{p: {"kind": "scripted", "strategy": "conceder"} for p in PARTIES},
                             "un_mediator": {"kind": "scripted", "strategy": "nash"}},
                  "max_rounds": 8, "bounded_context": 6})


def test_load_runs_accepts_run_folders_globs_and_files_and_dedupes(sweep: Path) -> None:
    runs = summaries([sweep / "baseline" / "seed-0", f"{sweep}/*/seed-[01]",
                      sweep / "baseline" / "seed-1" / "result.json"])
    assert sorted((r.scenario_id, r.seed) for r in runs) == [
        ("baseline", 0), ("baseline", 1), ("bilateral_us_russia", 0),
        ("bilateral_us_russia", 1)]


@pytest.mark.parametrize(("make", "message"), [
    (lambda root: [root / "missing"], "no such file or folder"),
    (lambda root: [f"{root}/nothing-*"], "no file or folder matches this pattern"),
    (lambda root: [root / "empty"], "no run folders here"),
    (lambda root: [root / "notes.txt"], "not a folder"),
    (lambda root: [root / "unfinished"], "none finished (1 running)"),
    (lambda root: [], "give at least one"),
])
def test_load_runs_rejects_bad_paths_with_one_clear_message(
    tmp_path: Path, make: Callable[[Path], Sequence[str | Path]], message: str
) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("hi", encoding="utf-8")
    write_run(tmp_path / "unfinished" / "r", "baseline", 0, status="running")
    with pytest.raises(InputError) as exc:
        summaries(make(tmp_path))
    assert message in str(exc.value)
    assert len(str(exc.value).splitlines()) == 1


# --------------------------------------------------------------------------- statistics


def test_groups_are_scenarios_with_the_baseline_as_reference(comparison: Comparison) -> None:
    assert comparison.reference == "baseline"
    assert [g.variant for g in comparison.groups] == ["baseline", "bilateral_us_russia"]
    assert [(t.a, t.b) for t in comparison.tests] == [("bilateral_us_russia", "baseline")]


def test_variant_statistics_match_hand_computed_values(comparison: Comparison) -> None:
    base, bil = comparison.groups
    assert (base.n, base.deals, bil.n, bil.deals) == (4, 2, 4, 4)
    assert base.statuses == {"deal": 2, "no_deal": 1, "deadlock": 1}
    assert base.deal_rate.rate == 0.5
    assert (base.deal_rate.lo, base.deal_rate.hi) == wilson_interval(2, 4)
    assert (bil.deal_rate.lo, bil.deal_rate.hi) == wilson_interval(4, 4)
    assert base.rounds_to_agreement is not None and bil.rounds_to_agreement is not None
    assert (base.rounds_to_agreement.mean, base.rounds_to_agreement.median) == (4.0, 4.0)
    assert (bil.rounds_to_agreement.mean, bil.rounds_to_agreement.median) == (3.5, 3.5)

    # Utilities are over every run; a run without a deal scores the reservation utility.
    assert base.parties["ukraine"].utility.mean == pytest.approx((50 + 30 + 36 + 36) / 4)
    assert bil.parties["ukraine"].utility.mean == pytest.approx(25.0)
    assert bil.parties["eu"].utility.mean == pytest.approx(27.5)
    u = bil.parties["ukraine"].utility
    assert (u.lo, u.hi) == bootstrap_mean_ci([10.0, 20.0, 30.0, 40.0])
    assert u.lo < 25.0 < u.hi
    assert base.parties["us"].utility.model_dump() == {"mean": 60.0, "lo": 60.0, "hi": 60.0,
                                                       "n": 4}

    v = bil.parties["ukraine"].violation_rate
    assert (v.count, v.n, v.rate) == (3, 4, 0.75)
    assert (v.lo, v.hi) == pytest.approx((0.300636, 0.954413), abs=1e-5)
    assert bil.parties["eu"].violation_rate.count == 1
    assert base.parties["ukraine"].violation_rate.count == 0
    # Per red line, with the ids seen in any group (zero where never broken).
    assert {k: p.count for k, p in bil.parties["ukraine"].red_lines.items()} == {
        "no_cession": 3, "army_floor": 1}
    assert {k: p.count for k, p in base.parties["ukraine"].red_lines.items()} == {
        "no_cession": 0, "army_floor": 0}
    assert base.parties["us"].red_lines == {}

    assert base.options == {"territory": {"frozen_line": 1, "donbass_only": 1}}
    assert base.terms == {"army_ceiling": {"200": 1, "250": 1}}
    assert bil.options == {"territory": {"donbass_only": 4}}
    assert base.distance_to_nash is not None and bil.distance_to_nash is not None
    assert base.distance_to_nash.mean == pytest.approx(8.0)  # the deadlock has none
    assert base.distance_to_nash.n == 3
    assert bil.distance_to_nash.mean == pytest.approx(21.5)
    assert base.seeds == [0, 1, 2, 3]
    assert base.agents == ["all=scripted:conceder, un_mediator=scripted:nash"]


def test_pair_tests_match_hand_computed_p_values(comparison: Comparison) -> None:
    (test,) = comparison.tests
    # Fisher, deals 4/4 vs 2/4: tables as or less likely than the observed one are X = 4 and
    # X = 2 of the hypergeometric (8 runs, 6 deals, 4 drawn): (15 + 15) / 70.
    assert test.deal_rate_p == pytest.approx(30 / 70)
    assert test.deal_rate_diff == pytest.approx(0.5)
    ukraine = test.parties["ukraine"]
    # Ukraine's violations 3/4 vs 0/4: X = 3 and X = 0 (8 runs, 3 violations): (5 + 5) / 70.
    assert ukraine.violation_p == pytest.approx(10 / 70)
    assert ukraine.violation_diff == pytest.approx(0.75)
    assert test.parties["eu"].violation_p == pytest.approx(1.0)
    # Mann-Whitney on Ukraine's utilities {10,20,30,40} vs {50,30,36,36}: U = 3.5 (one tie at
    # 30, 40 beats three), ties at 30 and 36, so the normal approximation with tie and
    # continuity corrections: var = 16/12 * (9 - 12/56), z = (8 - 3.5 - 0.5) / sqrt(var).
    z = 4 / math.sqrt(16 / 12 * (9 - 12 / 56))
    assert ukraine.utility_p == pytest.approx(math.erfc(z / math.sqrt(2)), rel=1e-9)
    assert ukraine.utility_diff == pytest.approx(25.0 - 38.0)
    # Every US utility is 60 in both groups: no test.
    assert test.parties["us"].utility_p is None
    # Distances {20,21,22,23} vs {4,8,12}: fully separated; exact two-sided p = 2 / C(7, 3).
    assert test.distance_to_nash_p == pytest.approx(2 / 35)


def test_findings_sum_up_deals_red_lines_and_tests(comparison: Comparison) -> None:
    assert findings(comparison) == [
        f"Every agent is scripted in every variant: {SCRIPTED_SEEDS_NOTE}.",
        "Deals: bilateral_us_russia 100% (4/4); baseline 50% (2/4).",
        "Red lines broken: ukraine's in bilateral_us_russia (3/4: no_cession, army_floor); eu's "
        "in bilateral_us_russia (1/4: no_veto).",
        # 8 tests: deal rate, distance, four violation rates, two utilities (US and Russian
        # utilities never vary). EU utilities {20, 30, 25, 35} against four 40s: U = 0.
        f"Against baseline, p < 0.05 (uncorrected; 1 of 8 tests below it, about 0.4 expected "
        f"by chance alone): bilateral_us_russia: eu utility -12.5 (p "
        f"{comparison.tests[0].parties['eu'].utility_p:.3g}).",
    ]


def test_a_group_needs_two_distinct_runs_to_be_tested(sweep: Path) -> None:
    runs = summaries([sweep / "baseline", sweep / "bilateral_us_russia" / "seed-0"])
    (test,) = compare_runs(runs).tests
    assert all(p.utility_p is None and p.violation_p is None for p in test.parties.values())
    assert test.deal_rate_p is None and test.distance_to_nash_p is None
    assert test.note == ("not tested (a test needs 2 distinct runs in each group): "
                         "bilateral_us_russia has 1 run")
    assert test.deal_rate_diff == pytest.approx(0.5)  # differences are still reported


def test_reference_defaults_to_the_first_group_without_a_baseline_and_can_be_chosen(
    sweep: Path,
) -> None:
    runs = [r for r in summaries([sweep]) if r.scenario_id != "baseline"]
    runs += [r.model_copy(update={"scenario_id": "zeta"}) for r in runs]
    assert compare_runs(runs).reference == "bilateral_us_russia"
    chosen = compare_runs(runs, "zeta")
    assert [g.variant for g in chosen.groups] == ["zeta", "bilateral_us_russia"]
    with pytest.raises(InputError, match="no variant 'nope'"):
        compare_runs(runs, "nope")


def test_grouping_by_agents(sweep: Path) -> None:
    runs = summaries([sweep])
    runs = [r.model_copy(update={"agents": "x"}) if r.seed % 2 else r for r in runs]
    by = compare_runs(runs, by="agents")
    assert sorted(g.variant for g in by.groups) == sorted({r.agents for r in runs})
    assert sum(g.n for g in by.groups) == 8


# --------------------------------------------------------------------------- identical runs


@pytest.fixture(scope="module")
def scripted_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real scripted runs: the tiny scenario and a variant of it, three seeds each. Scripted
    strategies ignore the seed, so each variant's three runs are one negotiation three times."""
    root = tmp_path_factory.mktemp("scripted")
    variant = tiny_variant(root, "tiny_unanimous", required=["a", "b", "c"])
    sweep = root / "sweep"
    for path in (TINY, variant):
        bundle = load_bundle(path)
        scenario = bundle.scenario
        agents = {p: scripted("boulware") for p in scenario.voters}
        assert scenario.mediator is not None
        agents[scenario.mediator] = scripted("nash")
        for seed in (0, 1, 2):
            start_run(RunPlan(bundle=bundle, agents=agents, seed=seed), make_agent,
                      run_dir=sweep / scenario.id / f"seed-{seed}")
    return sweep


def test_identical_runs_are_counted_once_and_never_tested(scripted_sweep: Path) -> None:
    runs = summaries([scripted_sweep])
    assert len(runs) == 6 and len({r.run_id for r in runs}) == 6
    comparison = compare_runs(runs, "tiny")
    for group in comparison.groups:
        assert (group.runs, group.n, group.scripted) == (3, 1, True)
        ids = sorted(r.run_id for r in runs if r.scenario_id == group.variant)
        assert [sorted(i) for i in group.identical] == [ids]
        assert group.seeds == [0, 1, 2]
        assert group.deal_rate.n == 1  # every statistic is over the one distinct run
        assert all(p.utility.n == 1 and p.violation_rate.n == 1 for p in group.parties.values())
    (test,) = comparison.tests
    assert test.deal_rate_p is None and test.distance_to_nash_p is None
    assert all(p.utility_p is None and p.violation_p is None for p in test.parties.values())
    assert test.note == ("not tested (a test needs 2 distinct runs in each group): "
                         "tiny_unanimous has 3 identical runs; tiny has 3 identical runs")


def test_the_fingerprint_leaves_out_times_order_provenance_and_ids(scripted_sweep: Path,
                                                                  tmp_path: Path) -> None:
    run_dir = scripted_sweep / "tiny" / "seed-0"
    run = RunFolder(run_dir)
    lines = (run_dir / LOG_NAME).read_text(encoding="utf-8").splitlines()
    events = [json.loads(line) for line in lines if line.strip()]
    original = summarize_run(run, events).fingerprint
    assert original == summarize_run(run).fingerprint  # the log's events, as read

    changed = copy.deepcopy(events)
    for ev in changed:
        ev["time"] = "2000-01-01T00:00:00.000Z"
        if "latency" in ev:
            ev["latency"] = 9.5
            ev["usage"] = {"prompt_tokens": 7, "completion_tokens": 3}
            ev["llm"] = {"request_hashes": ["f" * 64], "settings": {"seed": 4}}
    changed[0].update(run_id="other", seed=7, quote_key="k" * 32, scenario_path="/elsewhere.yaml")
    responses = [k for k, ev in enumerate(changed) if ev["type"] == "response"][:2]
    changed[responses[0]], changed[responses[1]] = changed[responses[1]], changed[responses[0]]
    changed.insert(3, {"id": "resumed-1", "type": "resumed", "note": "resumed after a kill"})
    assert summarize_run(run, changed).fingerprint == original

    # A copy of the run folder whose header has another seed, quote key and scenario path.
    moved = tmp_path / "moved"
    moved.mkdir()
    (moved / "result.json").write_bytes((run_dir / "result.json").read_bytes())
    header = {**events[0], "seed": 7, "quote_key": "k" * 32, "scenario_path": "/elsewhere.yaml"}
    (moved / LOG_NAME).write_text("\n".join(json.dumps(ev) for ev in [header, *events[1:]])
                                  + "\n", encoding="utf-8")
    assert summarize_run(RunFolder(moved)).fingerprint == original

    voted = copy.deepcopy(events)
    response = next(ev for ev in voted if ev["type"] == "response")
    response["vote"] = "accept" if response["vote"] == "reject" else "reject"
    assert summarize_run(run, voted).fingerprint != original
    said = copy.deepcopy(events)
    next(ev for ev in said if ev["type"] == "statement")["text"] += " Indeed."
    assert summarize_run(run, said).fingerprint != original


def test_partly_identical_groups_keep_their_distinct_runs(tmp_path: Path) -> None:
    for seed in (0, 1, 2):  # seeds 0 and 1: the same crafted run
        write_run(tmp_path / "baseline" / f"seed-{seed}", "baseline", seed,
                  utilities=util(50.0 if seed < 2 else 30.0))
    for seed in (0, 1):
        write_run(tmp_path / "variant" / f"seed-{seed}", "variant", seed, status="no_deal",
                  utilities=util(36.0 + seed))
    comparison = compare_runs(summaries([tmp_path]))
    base, variant = comparison.groups
    assert (base.runs, base.n, base.identical) == (3, 2, [["baseline-0", "baseline-1"]])
    assert base.parties["ukraine"].utility.mean == pytest.approx(40.0)  # (50 + 30) / 2
    assert (variant.runs, variant.n, variant.identical) == (2, 2, [])
    (test,) = comparison.tests
    assert test.note is None
    assert test.deal_rate_p == pytest.approx(1 / 3)  # Fisher: 0/2 against 2/2


# --------------------------------------------------------------------------- the command


def test_compare_shows_one_row_per_variant(cli: Callable[..., Result], sweep: Path) -> None:
    result = cli("compare", sweep)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "8 finished runs in 2 variants" in out
    assert "skipped 1 unfinished" in out
    lines = out.splitlines()
    utility = lines.index(next(line for line in lines if line.startswith("Mean utility")))
    base = next(line for line in lines[utility:] if line.startswith("│ baseline (reference) "))
    bil = next(line for line in lines[utility:] if line.startswith("│ bilateral_us_russia "))
    header = next(line for line in lines[utility:] if line.startswith("┃ variant"))
    assert header.index("us") < header.index("ukraine") < header.index("eu")
    assert "38.0 [" in base and "25.0 [" in bil
    violations = lines.index(next(line for line in lines if line.startswith("Red-line violation")))
    rows = [line for line in lines[violations:] if line.startswith("│ ")][:2]
    assert "0% [0%, 49%] (0/4)" in rows[0] and "75% [30%, 95%] (3/4)" in rows[1]
    assert "Red lines broken: bilateral_us_russia" in out
    assert "no_cession" in out and "army_floor" in out and "25% [5%, 70%] (1/4)" in out
    assert "Tests against baseline" in out
    assert "violations" in out and "+75 pts p 0.143" in out
    assert "Agreed options: baseline (2 deals in 4 distinct runs)" in out
    assert "donbass_only" in out and "army_ceiling" in out and "250" in out


VARIANTS = ("baseline", "bilateral_us_russia", "eu_peacekeepers_no_article5",
            "eu_peacekeepers_with_article5", "kyiv_stated_positions", "leadership_transition",
            "no_mediator", "phased_energy_tranche", "russia_full_lifting",
            "ukraine_eu_no_territorial_concession", "un_referendum")


def many_variants() -> Comparison:
    """Eleven variants of four distinct runs, every measure varying (as LLM runs would)."""
    runs: list[RunSummary] = []
    for k, variant in enumerate(VARIANTS):
        for seed in range(4):
            deal = (seed + k) % 3 != 0
            broken = ["no_outside_mandate_over_media_and_schools"] if deal and seed % 2 else []
            runs.append(RunSummary(
                run_dir=f"/sweep/{variant}/seed-{seed}", run_id=f"{variant}-{seed}",
                scenario_id=variant, scenario_hash="h" * 64, seed=seed, agents="all=model-x",
                status="deal" if deal else ("no_deal", "deadlock")[seed % 2], deal=deal,
                package={"options": {"territory": ("donbass_only", "back_to_zaporozhye")[seed % 2],
                                     "security_architecture": "neutral_with_guarantor_states"},
                         "terms": {"army_ceiling": 100.0 + 10 * seed}} if deal else None,
                parties=list(PARTIES),
                red_lines_broken={"ukraine": broken, "us": [], "russia": [], "eu": []},
                values={
                    "deal_rate": deal,
                    "rounds_to_agreement": 2.0 + seed + k % 3 if deal else None,
                    "distance_to_nash": 10.0 + seed * 2.5 + k,
                    "deal_any_round": deal or seed == 0,
                    "deal_final_round": deal,
                    "red_line_proposals": (seed + k % 4, 8),
                    "utility": {p: 30.0 + 7.3 * k + 5.1 * seed + i
                                for i, p in enumerate(PARTIES)},
                    "violation_rate": {p: p == "ukraine" and bool(broken) for p in PARTIES},
                    "invalid_rate": {p: (seed % 3, 20 + k) for p in PARTIES},
                    "estimation_error": {p: 4.0 + seed * 1.7 + i
                                         for i, p in enumerate(PARTIES)}}))
    return compare_runs(runs)


def expected_cells(comparison: Comparison) -> list[str]:
    """Every figure the terminal must show whole, formatted as the command formats it."""
    from detente.cli.compare import answers_shown, fmt_mean, fmt_p, fmt_rate, fmt_runs

    cells: list[str] = []
    for g in comparison.groups:
        cells += [g.variant, fmt_runs(g), fmt_rate(g.deal_rate), fmt_mean(g.distance_to_nash)]
        cells += [fmt_rate(p) for p in (g.deal_any_round, g.deal_final_round,
                                        g.red_line_proposals) if p is not None]
        cells += [f"{k} {v}" for k, v in g.statuses.items()]
        if g.rounds_to_agreement is not None:
            r = g.rounds_to_agreement
            cells.append(f"mean {r.mean:.1f}, median {r.median:g}")
        for stats in g.parties.values():
            cells += [fmt_mean(stats.utility), fmt_rate(stats.violation_rate)]
            if answers_shown(comparison):  # else one line says there were none
                if stats.invalid_rate is not None:
                    cells.append(fmt_rate(stats.invalid_rate))
                cells.append(fmt_mean(stats.estimation_error))
            cells += [fmt_rate(p) for p in stats.red_lines.values() if p.count]
            cells += [line for line, p in stats.red_lines.items() if p.count]
        for kind in (g.options, g.terms):
            for counts in kind.values():
                cells += list(counts) + [f"{n}/{g.deals}" for n in counts.values()]
    for t in comparison.tests:  # the p-values shown: Holm-corrected (more than one tested)
        if t.note is None:
            assert comparison.correction == "holm"
            cells.append(f"{100 * t.deal_rate_diff:+.0f} pts p "
                         f"{fmt_p(t.metrics['deal_rate'].p_holm).plain}")
            for pt in t.parties.values():
                cells.append(f"{pt.utility_diff:+.1f} p "
                             f"{fmt_p(pt.metrics['utility'].p_holm).plain}")
                cells.append(f"{100 * pt.violation_diff:+.0f} pts p "
                             f"{fmt_p(pt.metrics['violation_rate'].p_holm).plain}")
    return cells


def rendered(comparison: Comparison, width: int) -> str:
    from rich.console import Console

    from detente.cli.compare import render

    out = Console(width=width, file=io.StringIO(), color_system=None, legacy_windows=False)
    render(comparison, out)
    text = out.file.getvalue()  # type: ignore[attr-defined]
    assert isinstance(text, str)
    return text


@pytest.mark.parametrize("width", [80, 120])
def test_compare_fits_the_terminal_and_shows_every_figure_whole(width: int) -> None:
    comparison = many_variants()
    assert len(comparison.groups) == 11 and all(g.n == 4 for g in comparison.groups)
    text = rendered(comparison, width)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= width
    assert "…" not in text
    missing = [cell for cell in expected_cells(comparison)
               if not any(cell in line for line in lines)]
    assert missing == []
    # a variant's figures stay on its own row: the reference's deal rate beside its name
    base = comparison.groups[0]
    assert any(line.startswith("│ baseline (reference) ") and fmt_rate_of(base) in line
               for line in lines)


def fmt_rate_of(group: VariantStats) -> str:
    from detente.cli.compare import fmt_rate

    return fmt_rate(group.deal_rate)


@pytest.mark.parametrize("width", [80, 120])
def test_identical_runs_read_as_such_in_the_terminal(scripted_sweep: Path, width: int) -> None:
    comparison = compare_runs(summaries([scripted_sweep]), "tiny")
    text = rendered(comparison, width)
    assert max(len(line) for line in text.splitlines()) <= width
    flat = " ".join(text.split())
    assert "6 finished runs (2 distinct) in 2 variants" in flat
    assert "in every variant the runs are copies of one run" in flat
    assert "Every agent is scripted in every variant: scripted strategies ignore the seed" in flat
    assert ("Tests against tiny: none: tiny has 3 identical runs, and a test needs 2 distinct "
            "runs in each group.") in flat
    assert "3 (1 distinct)" in text and " p " not in text
    assert missing_cells(comparison, text) == []


def missing_cells(comparison: Comparison, text: str) -> list[str]:
    lines = text.splitlines()
    return [cell for cell in expected_cells(comparison) if not any(cell in line for line in lines)]


def test_compare_json_and_csv_round_trip(cli: Callable[..., Result], sweep: Path,
                                         tmp_path: Path, comparison: Comparison) -> None:
    path = tmp_path / "out.csv"
    result = cli("compare", sweep, "--json", "--csv", path)
    assert result.returncode == 0, result.stderr
    parsed = Comparison.model_validate_json(result.stdout)
    assert parsed.model_copy(update={"skipped": []}) == comparison
    assert len(parsed.skipped) == 1 and "skipped" in result.stderr

    rows = list(csv.DictReader(path.open(encoding="utf-8")))
    assert set(rows[0]) == {"variant", "metric", "party", "detail", "value", "lo", "hi", "n"}

    def row(variant: str, metric: str, party: str = "", detail: str = "") -> dict[str, str]:
        (found,) = [r for r in rows if (r["variant"], r["metric"], r["party"], r["detail"])
                    == (variant, metric, party, detail)]
        return found

    bil = parsed.groups[1]
    v = row("bilateral_us_russia", "violation_rate", "ukraine")
    assert (float(v["value"]), float(v["lo"]), float(v["hi"]), int(v["n"])) == (
        0.75, bil.parties["ukraine"].violation_rate.lo, bil.parties["ukraine"].violation_rate.hi,
        4)
    assert float(row("baseline", "deal_rate")["value"]) == 0.5
    assert row("baseline", "runs")["value"] == row("baseline", "distinct_runs")["value"] == "4"
    assert row("baseline", "all_scripted")["value"] == "1"
    assert float(row("bilateral_us_russia", "red_line_violation_rate", "ukraine",
                     "army_floor")["value"]) == 0.25
    assert float(row("baseline", "agreed_option", detail="territory=frozen_line")["value"]) == 1
    p = row("bilateral_us_russia", "p_violation_rate", "ukraine", "vs baseline")
    assert float(p["value"]) == pytest.approx(10 / 70)
    assert row("bilateral_us_russia", "p_utility", "us", "vs baseline")["value"] == ""


def test_compare_against_and_by_options(cli: Callable[..., Result], sweep: Path) -> None:
    result = cli("compare", sweep, "--against", "bilateral_us_russia")
    assert result.returncode == 0, result.stderr
    assert "bilateral_us_russia (reference)" in result.stdout
    assert "Tests against bilateral_us_russia" in result.stdout
    bad = cli("compare", sweep, "--against", "nope")
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.startswith("error: --against: no variant 'nope'")
    by = cli("compare", sweep, "--by", "seeds")
    assert by.returncode == 2 and "expected one of scenario, agents" in by.stderr


@pytest.mark.parametrize("args", [("missing-folder",), ("{tmp}/*.nothing",), ("{tmp}",)])
def test_compare_bad_paths_exit_2_with_one_message(
    cli: Callable[..., Result], tmp_path: Path, args: tuple[str, ...]
) -> None:
    result = cli("compare", *(a.format(tmp=tmp_path) for a in args))
    assert result.returncode == 2
    assert result.stdout == "" and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("error: ")


def test_compare_in_a_real_process_exits_2_on_a_missing_folder(tmp_path: Path) -> None:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    done = subprocess.run([sys.executable, "-m", "detente", "compare", str(tmp_path / "nope")],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=120,
                          check=False)
    assert done.returncode == 2
    assert done.stderr.strip() == f"error: {tmp_path / 'nope'}: no such file or folder"
    assert done.stdout == ""


def test_json_output_is_plain_json(cli: Callable[..., Result], sweep: Path) -> None:
    result = cli("compare", sweep / "baseline", "--json")
    data = json.loads(result.stdout)
    assert data["reference"] == "baseline" and data["tests"] == []
