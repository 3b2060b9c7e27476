"""The converted benchmark: LLM-Deliberation's base game (scenarios/benchmarks/).

The game's own score tables are copied below from the repository (S-Abdelnabi/LLM-Deliberation,
games_descriptions/base/scores_files at commit 78e11e0, MIT licence), so every check here is
against the game, not against the converted file: the scenario validates; its utility of every
package is the game's score (the affine map is the identity); its walk-away values and rule are
the game's; `analyze` finds the feasible deals the repository's own notebook counts; a scripted
run and an oracle-chaired run complete; and bench/llm_deliberation.py reads the game, both log
formats and detente's runs as documented.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import sys
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

import detente
from detente.loading import load_scenario
from detente.space import PackageSpace
from helpers import invoke

ROOT = Path(__file__).parents[1]
BENCH = ROOT / "scenarios" / "benchmarks" / "llm_deliberation_base.yaml"
CHAIRED = ROOT / "scenarios" / "benchmarks" / "llm_deliberation_base_chaired.yaml"
BRIEFS = ROOT / "agents" / "benchmarks" / "llm_deliberation_base"

# The game's tables: per party, the points of options 1..n of issues A..E, then the minimum
# score (the last line of each scores file). Keys are detente's party ids; the file names are
# SportCo, DoT, enviroment, mayor, other_cities and union.
GAME: dict[str, tuple[list[list[int]], int]] = {
    "sportco": ([[14, 8, 0], [11, 7, 0], [0, 5, 10, 17], [35, 29, 20, 0], [0, 5, 10, 15, 23]],
                55),
    "tourism_department": ([[0, 11, 5], [0, 20, 25], [0, 2, 4, 9], [10, 26, 40, 0],
                            [4, 8, 15, 12, 0]], 65),
    "environmental_league": ([[0, 22, 45], [0, 25, 55], [0, 0, 0, 0], [0, 0, 0, 0],
                              [0, 0, 0, 0, 0]], 55),
    "mayor": ([[14, 8, 0], [12, 8, 0], [24, 18, 12, 0], [40, 30, 23, 0], [0, 2, 4, 7, 10]], 30),
    "other_cities": ([[0, 4, 10], [0, 0, 0], [12, 8, 6, 0], [0, 8, 13, 18], [60, 45, 30, 15, 0]],
                     31),
    "labour_union": ([[15, 20, 0], [0, 0, 0], [42, 35, 25, 0], [30, 20, 10, 0], [2, 4, 6, 8, 0]],
                     50),
}
SCORE_FILES = {"sportco": "SportCo", "tourism_department": "DoT",
               "environmental_league": "enviroment", "mayor": "mayor",
               "other_cities": "other_cities", "labour_union": "union"}
VETOES = ("sportco", "tourism_department")
DEALS = list(itertools.product(*(range(len(t)) for t in GAME["sportco"][0])))


def game_score(party: str, deal: tuple[int, ...]) -> int:
    return sum(GAME[party][0][i][k] for i, k in enumerate(deal))


def game_accepts(deal: tuple[int, ...]) -> list[str]:
    """The parties whose score reaches their minimum ("You cannot accept any deal with a score
    less than" it, the game's scoring rules)."""
    return [p for p in GAME if game_score(p, deal) >= GAME[p][1]]


def game_feasible(deal: tuple[int, ...]) -> bool:
    """The game's rule: at least five of the six agree, SportCo and the Department included."""
    accept = game_accepts(deal)
    return len(accept) >= 5 and all(v in accept for v in VETOES)


def bench_module() -> ModuleType:
    path = ROOT / "bench" / "llm_deliberation.py"
    spec = importlib.util.spec_from_file_location("detente_bench_llm_deliberation", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------- the files


def test_the_benchmark_and_its_briefs_validate() -> None:
    result = invoke("validate", BENCH, CHAIRED, BRIEFS)
    assert result.returncode == 0, result.stderr
    checked = [line for line in result.stdout.splitlines() if line.startswith("✓ ")]
    assert len(checked) == 2 + len(list(BRIEFS.glob("*.yaml"))) == 9


def test_the_options_are_the_games_in_its_order() -> None:
    scenario = load_scenario(BENCH)
    assert scenario.voters == list(GAME)
    labels = [[o.label.split()[0] for o in issue.options] for issue in scenario.issues]
    assert labels == [[f"{letter}{k + 1}" for k in range(len(points))]
                      for letter, points in zip("ABCDE", GAME["sportco"][0], strict=True)]


# --------------------------------------------------------------------------- the conversion


def test_every_packages_utility_is_the_games_score() -> None:
    """weight = the issue's largest points / 100 and utility = points scaled to 100 per issue,
    so weight x utility gives back the points: detente's utility of each of the 720 packages is
    the party's game score exactly (the affine map u = a * score + b has a = 1, b = 0)."""
    scenario = load_scenario(BENCH)
    space = PackageSpace(scenario)
    assert space.total == len(DEALS) == 720
    utilities = space.evaluate(space.columns_for_flat(np.arange(space.total))).utilities
    # The grid is in C order over the issues, as itertools.product walks the game's options.
    scores = np.array([[game_score(p, deal) for p in GAME] for deal in DEALS], dtype=float)
    np.testing.assert_allclose(utilities, scores, rtol=0, atol=1e-9)
    for v, party in enumerate(GAME):
        slope, intercept = np.polyfit(scores[:, v], utilities[:, v], 1)
        assert slope == pytest.approx(1, abs=1e-12), party
        assert intercept == pytest.approx(0, abs=1e-9), party


def test_weights_utilities_and_walk_aways_follow_the_stated_mapping() -> None:
    scenario = load_scenario(BENCH)
    for party, (points, minimum) in GAME.items():
        prefs = scenario.preferences[party]
        assert prefs.reservation_utility == minimum
        assert prefs.red_lines == []
        for issue, row in zip(scenario.issues, points, strict=True):
            assert prefs.weights[issue.id] == pytest.approx(max(row) / 100, abs=1e-12)
            for option, p in zip(issue.option_ids(), row, strict=True):
                expected = 0 if max(row) == 0 else 100 * p / max(row)
                assert prefs.utilities[issue.id][option] == pytest.approx(expected, abs=1e-9)


def test_the_decision_rule_is_five_of_six_including_the_two_vetoes() -> None:
    rule = load_scenario(BENCH).decision
    assert rule.required == []
    assert rule.quorum is not None and rule.quorum.min == 5
    assert sorted(rule.quorum.including) == sorted(rule.veto) == sorted(VETOES)
    assert rule.max_rounds == 25 and rule.deadlock_after == 25


# --------------------------------------------------------------------------- the analysis


def test_analyze_finds_the_games_feasible_deals() -> None:
    """The repository counts the base game's possible deals in old_code's
    adjust_games/evaluate_games_base.ipynb: 55 pass the rule, 12 with all six, and per party
    (SportCo, Department, other cities, Environmental League, union, Mayor) 55, 55, 47, 35,
    40 and 55 of them are ones it agrees to. Counted here from the game's tables, and by
    detente's analysis of the converted file."""
    feasible = [deal for deal in DEALS if game_feasible(deal)]
    assert len(feasible) == 55
    assert sum(len(game_accepts(deal)) == 6 for deal in DEALS) == 12
    per_party = {p: sum(p in game_accepts(deal) for deal in feasible) for p in GAME}
    assert per_party == {"sportco": 55, "tourism_department": 55, "other_cities": 47,
                         "environmental_league": 35, "labour_union": 40, "mayor": 55}

    report = detente.analyze(BENCH)
    assert (report.packages, report.zopa, report.counts.unanimous) == (720, 55, 12)
    assert report.nash is not None
    assert report.nash.package.options == {
        "infrastructure_mix": "water_land_based", "ecological_impact": "improve",
        "employment_rules": "union_quota_1_to_1", "federal_loan": "loan_2_billion",
        "compensation": "pay_150_million"}
    nash = (1, 2, 2, 1, 3)  # A2, B3, C3, D2, E4
    assert game_feasible(nash) and len(game_accepts(nash)) == 6
    assert report.nash.utilities == pytest.approx({p: game_score(p, nash) for p in GAME})


def test_the_chaired_variant_keeps_the_outcome_space() -> None:
    report = detente.analyze(CHAIRED, frontier=False)
    assert (report.packages, report.zopa, report.counts.unanimous) == (720, 55, 12)


# --------------------------------------------------------------------------- runs


def agreed_deal(result: Any) -> tuple[int, ...]:
    assert result.package is not None
    return tuple(issue.option_ids().index(result.package.options[issue.id])
                 for issue in load_scenario(BENCH).issues)


def test_a_short_scripted_run_completes(tmp_path: Path) -> None:
    """Four rounds of Conceder parties (scripted runs are deterministic): the parties table in
    the scenario's order, and the Mayor's package of round 4, A2 B3 C4 D3 E3, passes with five
    votes, the union's against: a deal the game's rule passes too."""
    run = detente.run(BENCH, agents="all=scripted:conceder", rounds=4, out=tmp_path)
    result = run.result
    assert (result.status, result.rounds_played) == ("deal", 4)
    proposers = [e.speaker for e in run.events if e.type == "proposal"]
    assert proposers == ["sportco", "tourism_department", "environmental_league", "mayor"]
    assert agreed_deal(result) == (1, 2, 3, 2, 2)
    assert game_feasible(agreed_deal(result))
    assert [p for p, vote in result.votes.items() if vote == "reject"] == ["labour_union"]


def test_the_oracle_in_the_chair_reaches_a_deal_the_game_would_pass(tmp_path: Path) -> None:
    run = detente.run(CHAIRED, agents={"all": "scripted:conceder", "chair": "scripted:oracle"},
                      out=tmp_path)
    result = run.result
    assert result.status == "deal"
    assert game_feasible(agreed_deal(result))
    accepted = [p for p, vote in result.votes.items() if vote == "accept"]
    assert len(accepted) >= 5 and set(VETOES) <= set(accepted)


# --------------------------------------------------------------------------- the comparison


def fake_clone(root: Path) -> Path:
    """The parts of an LLM-Deliberation clone the comparison reads: the score files, and one
    session in each log format (SportCo opens with its ideal, later tables the Nash package)."""
    scores = root / "games_descriptions" / "base" / "scores_files"
    scores.mkdir(parents=True)
    for party, name in SCORE_FILES.items():
        points, minimum = GAME[party]
        lines = [", ".join(map(str, row)) for row in points] + [str(minimum)]
        (scores / f"{name}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    names = ["SportCo", "The Department of Tourism", "The Environmental League", "The Mayor",
             "Other Cities", "The local Labour Union"]
    turns = [(names[(k + 1) % 6], "I suggest <DEAL> A2, B2, C2, D2, E2 </DEAL>") for k in range(24)]
    turns[5] = ("SportCo", "Then: A2, B3, C3, D2, E4 would work for all of us.")
    old = {"rounds": [["SportCo", "<DEAL> A1, B1, C4, D1, E5 </DEAL>"], *map(list, turns)],
           "voting_sessions": {"0": {"deal_suggestion": "Final: <DEAL>A1,B1,C4,D1,E5</DEAL>"}}}
    logs = root / "logs"
    logs.mkdir()
    with zipfile.ZipFile(logs / "a.zip", "w") as archive:
        archive.writestr("a/answers01.json", json.dumps(old))
        archive.writestr("a/answers02.json", json.dumps({**old, "rounds": old["rounds"][:9]}))
    new = [{"agent": "SportCo", "public_answer": "<DEAL> A1, B1, C4, D1, E5 </DEAL>"}]
    new += [{"agent": n, "public_answer": text} for n, text in turns]
    new += [{"agent": "SportCo", "public_answer": "<DEAL> A2, B3, C3, D2, E4 </DEAL>"}]
    (logs / "b").mkdir()
    (logs / "b" / "history01.json").write_text(json.dumps({"rounds": new}), encoding="utf-8")
    return root


def test_the_comparison_reads_the_game_and_both_log_formats(tmp_path: Path) -> None:
    bench = bench_module()
    clone = fake_clone(tmp_path / "clone")
    game = bench.game_from_repo(clone)
    # The game read from the repository and read back from the converted scenario agree.
    assert game == bench.game_from_scenario(load_scenario(BENCH))
    assert bench.zone_size(game) == 55
    # The game's evaluation rule (strict inequality, SportCo's bonus) passes 52 packages as
    # SportCo's proposal, 6 of them with all six; detente's zone has 55, 12 unanimous.
    verdicts = [bench.game_rule(game, deal, True) for deal in DEALS]
    assert (sum(ok for ok, _ in verdicts), sum(six for _, six in verdicts)) == (52, 6)

    old = bench.published_sessions(clone, "a.zip", game, 24)
    assert len(old) == 1  # the session cut short after eight turns is left out, as upstream
    new = bench.published_sessions(clone, "b", game, 24)
    assert len(new) == 1 and len(new[0].proposals) == 26
    # Old format: SportCo's Nash package in turn 6 counts for "any", its ideal ends the talks.
    assert bench.measure(game, old[0]) == bench.Measures(True, False, False, True, False)
    # New format: the final proposal is the Nash package, agreed by all six.
    assert bench.measure(game, new[0]) == bench.Measures(True, True, True, True, True)


def test_the_comparison_measures_detentes_runs(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    bench = bench_module()
    detente.run(CHAIRED, agents={"all": "scripted:conceder", "chair": "scripted:oracle"},
                out=tmp_path)
    bench.main([str(tmp_path)])
    rows = [line for line in capsys.readouterr().out.splitlines() if "detente |" in line]
    assert rows == ["| llm_deliberation_base_chaired: conceder, oracle in the chair | detente "
                    "| 1 | 100% (1/1) | 100% (1/1) | 100% (1/1) | 0% (0/1) | 100% (1/1) "
                    "| 100% (1/1) |"]


def test_the_comparison_labels_a_run_cut_short(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """A run given fewer rounds than the game's 25 is no full session: its row says so. (The
    Mayor's package of round 4 passes: see test_a_short_scripted_run_completes.)"""
    bench = bench_module()
    detente.run(BENCH, agents="all=scripted:conceder", rounds=4, out=tmp_path)
    bench.main([str(tmp_path)])
    rows = [line for line in capsys.readouterr().out.splitlines() if "detente |" in line]
    assert len(rows) == 1
    assert rows[0].startswith("| llm_deliberation_base: conceder (4 rounds, not the game's 25) "
                              "| detente | 1 | 100% (1/1) |")


def test_the_comparison_refuses_a_folder_that_is_no_clone(tmp_path: Path) -> None:
    bench = bench_module()
    with pytest.raises(SystemExit, match="expected 5 lines of points"):
        scores = tmp_path / "games_descriptions" / "base" / "scores_files"
        scores.mkdir(parents=True)
        for name in SCORE_FILES.values():
            (scores / f"{name}.txt").write_text("1, 2\n", encoding="utf-8")
        bench.game_from_repo(tmp_path)
    game: Any = bench.game_from_repo(fake_clone(tmp_path / "clone"))
    with pytest.raises(SystemExit, match="is missing: is --repo a clone of LLM-Deliberation"):
        bench.published_sessions(tmp_path / "clone", "nowhere.zip", game, 24)
