"""Scenario variants: the shipped files, the merge rules of `extends`, and each variant's premise.

The shipped variants in scenarios/variants must load, declare `variant_of: baseline` and explain
themselves. The merge rules (see `detente.variants`) are checked on small variants of the tiny
scenario written to a temporary folder. Each shipped variant then gets one property showing its
premise took effect in the outcome space, computed with the same `PackageSpace` the analysis uses.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from detente.analysis import Analysis, analyze
from detente.errors import InputError
from detente.loading import load_bundle, load_scenario
from detente.scenario import Scenario
from detente.space import PackageSpace
from helpers import Cli

ROOT = Path(__file__).parents[1]
BASELINE = ROOT / "scenarios" / "baseline.yaml"
VARIANTS_DIR = ROOT / "scenarios" / "variants"
VARIANTS = sorted(VARIANTS_DIR.glob("*.yaml"))
TINY = Path(__file__).parent / "data" / "tiny"

SHIPPED = {
    "bilateral_us_russia",
    "eu_peacekeepers_no_article5",
    "eu_peacekeepers_with_article5",
    "kyiv_stated_positions",
    "leadership_transition",
    "no_mediator",
    "phased_energy_tranche",
    "russia_full_lifting",
    "ukraine_eu_no_territorial_concession",
    "un_referendum",
}

# --------------------------------------------------------------------------- helpers


@cache
def scenario_of(name: str) -> Scenario:
    path = BASELINE if name == "baseline" else VARIANTS_DIR / f"{name}.yaml"
    return load_scenario(path)


@cache
def analysis_of(name: str) -> Analysis:
    return analyze(scenario_of(name), frontier=False)


@dataclass(frozen=True)
class Space:
    """Which options of each issue occur among the ZOPA packages, and among the packages each
    voting party would rationally accept (at or above its reservation, no own red line broken)."""

    zopa: dict[str, dict[str, int]]
    """Per issue, how many ZOPA packages settle it on each option (options that occur only)."""
    rational: dict[str, dict[str, set[str]]]


@cache
def space_of(name: str) -> Space:
    space = PackageSpace(scenario_of(name))
    zopa: dict[str, dict[str, int]] = {i: {} for i in space.issue_ids}
    rational = {p: {i: set() for i in space.issue_ids} for p in space.voters}
    for _, columns in space.chunks(1 << 17):
        ev = space.evaluate(columns)
        in_zopa = ev.rational[:, space.required_mask].all(axis=1) & ev.admissible
        for k, issue in enumerate(space.issue_ids):
            options = space.option_ids[k]
            for o, count in zip(*np.unique(columns[k][in_zopa], return_counts=True), strict=True):
                zopa[issue][options[o]] = zopa[issue].get(options[o], 0) + int(count)
            for v, party in enumerate(space.voters):
                picked = np.unique(columns[k][ev.rational[:, v]])
                rational[party][issue] |= {options[o] for o in picked}
    return Space(zopa, rational)


def nash_options(name: str) -> dict[str, str]:
    report = analysis_of(name).nash
    assert report is not None, f"{name}: the ZOPA is empty"
    return dict(report.package.options)


# --------------------------------------------------------------------------- command line


@pytest.mark.parametrize("name", ["kyiv_stated_positions", "leadership_transition"])
def test_new_variant_validates_analyzes_and_runs(cli: Cli, tmp_path: Path, name: str) -> None:
    path = VARIANTS_DIR / f"{name}.yaml"
    checked = cli("validate", path)
    assert checked.returncode == 0, checked.stderr
    assert f"scenario '{name}'" in checked.stdout
    analyzed = cli("analyze", path, "--json", "--no-frontier", "--sensitivity")
    assert analyzed.returncode == 0, analyzed.stderr
    data = json.loads(analyzed.stdout)
    assert data["zopa"] == analysis_of(name).zopa
    assert data["sensitivity"]["zopa"] == data["zopa"]
    ran = cli("run", path, "--agent", "all=scripted:boulware", "--rounds", "2",
              "--out", tmp_path)
    assert ran.returncode == 0, ran.stderr
    (run_dir,) = (tmp_path / name).iterdir()
    result = json.loads((run_dir / "result.json").read_text(encoding="utf-8"))
    assert result["scenario_id"] == name
    assert result["status"] in {"deal", "no_deal", "deadlock"}
    if analysis_of(name).zopa == 0:
        assert result["status"] != "deal"
    assert (run_dir / "events.jsonl").is_file() and (run_dir / "transcript.md").is_file()


# --------------------------------------------------------------------------- shipped files


def test_the_expected_variants_ship() -> None:
    assert {p.stem for p in VARIANTS} >= SHIPPED


@pytest.mark.parametrize("path", VARIANTS, ids=[p.stem for p in VARIANTS])
def test_shipped_variant_validates_and_explains_itself(path: Path) -> None:
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert raw.get("extends"), "a variant extends another scenario"
    bundle = load_bundle(path)
    scenario = bundle.scenario
    assert scenario.id == path.stem
    assert scenario.variant_of == "baseline"
    assert scenario.rationale is not None and scenario.rationale.strip()
    assert scenario.id != "baseline" and scenario.title != scenario_of("baseline").title
    assert set(bundle.briefs) == set(scenario.parties)


def test_validate_command_accepts_the_variants_folder(cli: Cli) -> None:
    result = cli("validate", VARIANTS_DIR)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("✓ ") == len(VARIANTS)


# --------------------------------------------------------------------------- merge semantics


@pytest.fixture
def tiny_copy(tmp_path: Path) -> Path:
    """tests/data/tiny copied to tmp_path/tiny; returns its scenario file."""
    shutil.copytree(TINY, tmp_path / "tiny")
    return tmp_path / "tiny" / "scenario.yaml"


def write_variant(tmp_path: Path, body: dict[str, Any], name: str = "v") -> Path:
    """A variant of the tiny copy in its own folder (tmp_path/variants), so that tiny's
    `agents_dir: agents` has to be re-anchored to find the briefs."""
    folder = tmp_path / "variants"
    folder.mkdir(exist_ok=True)
    path = folder / f"{name}.yaml"
    data = {"extends": "../tiny/scenario.yaml", "id": name, **body}
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def test_variant_in_another_folder_finds_the_parents_briefs(
    tmp_path: Path, tiny_copy: Path
) -> None:
    bundle = load_bundle(write_variant(tmp_path, {"title": "Other"}))
    assert bundle.scenario.title == "Other"
    assert set(bundle.briefs) == {"a", "b", "c", "m"}
    assert (bundle.path.parent / bundle.scenario.agents_dir).resolve() == (
        tiny_copy.parent / "agents"
    ).resolve()


def test_mappings_merge_key_by_key(tmp_path: Path, tiny_copy: Path) -> None:
    path = write_variant(tmp_path, {
        "preferences": {"a": {"utilities": {"x": {"x2": 60}}, "reservation_utility": 45}},
        "decision": {"max_rounds": 7},
    })
    s = load_scenario(path)
    base = load_scenario(tiny_copy)
    assert s.preferences["a"].utilities["x"] == {"x1": 100, "x2": 60, "x3": 0}
    assert s.preferences["a"].utilities["y"] == base.preferences["a"].utilities["y"]
    assert s.preferences["a"].weights == base.preferences["a"].weights
    assert s.preferences["a"].reservation_utility == 45
    assert s.preferences["b"] == base.preferences["b"]
    assert s.decision.max_rounds == 7 and s.decision.required == base.decision.required


def test_lists_replace_lists(tmp_path: Path, tiny_copy: Path) -> None:
    new_line = {"id": "only_x1", "kind": "forbid", "issue": "x", "options": ["x2", "x3"],
                "description": "x1 or nothing", "source": "assumption"}
    path = write_variant(tmp_path, {
        "decision": {"required": ["b"]},
        "preferences": {"a": {"red_lines": [new_line]}},
    })
    s = load_scenario(path)
    assert s.decision.required == ["b"]
    assert [line.id for line in s.preferences["a"].red_lines] == ["only_x1"]


def test_drop_removes_a_key(tmp_path: Path, tiny_copy: Path) -> None:
    path = write_variant(tmp_path, {
        "parties": ["a", "b", "c"],
        "mediator": "$drop",
        "preferences": {"c": {"red_lines": "$drop"}},
    })
    s = load_scenario(path)
    assert s.mediator is None
    assert s.voters == ["a", "b", "c"]
    assert s.preferences["c"].red_lines == []


def test_id_keyed_list_operations(tmp_path: Path, tiny_copy: Path) -> None:
    x4 = {"id": "x4", "label": "X4", "description": "a fourth way", "source": "assumption"}
    added = {"id": "y2_needs_small_t", "kind": "conditional", "description": "if y2, t <= 5",
             "if": {"issue": "y", "options": ["y2"]}, "then": {"term": "t", "max": 5},
             "source": "assumption"}
    x_utilities = {"x": {"x2": "$drop", "x4": 10}}
    path = write_variant(tmp_path, {
        "issues": {"$merge": {"x": {"label": "New X",
                                    "options": {"$drop": ["x2"], "$add": [x4]}}}},
        "preferences": {
            "a": {"utilities": x_utilities, "red_lines": {"$drop": ["no_x3"], "$add": [added]}},
            "b": {"utilities": x_utilities},
            "c": {"utilities": x_utilities,
                  "red_lines": {"$merge": {"x1_needs_y2": {"description": "changed"}}}},
        },
        "decision": {"required": {"$drop": ["b"], "$add": ["c"]}},
    })
    s = load_scenario(path)
    assert [i.id for i in s.issues] == ["x", "y"]
    assert s.issue("x").label == "New X"
    assert s.issue("x").option_ids() == ["x1", "x3", "x4"]
    assert s.issue("y") == load_scenario(tiny_copy).issue("y")
    assert [line.id for line in s.preferences["a"].red_lines] == ["y2_needs_small_t"]
    (c_line,) = s.preferences["c"].red_lines
    assert c_line.id == "x1_needs_y2" and c_line.description == "changed"
    assert c_line.kind == "conditional" and c_line.then.options == ["y2"]
    assert s.decision.required == ["a", "c"]


@pytest.mark.parametrize(("body", "where", "fragment"), [
    ({"preferences": {"a": {"red_lines": {"$drop": ["nope"]}}}},
     "preferences.a.red_lines.$drop", "no item 'nope' to drop; expected one of: no_x3"),
    ({"issues": {"$merge": {"z": {"label": "Z"}}}}, "issues.$merge.z", "no item with this id"),
])
def test_unknown_id_in_a_list_operation_is_a_clear_error(
    tmp_path: Path, tiny_copy: Path, body: dict[str, Any], where: str, fragment: str
) -> None:
    path = write_variant(tmp_path, body)
    with pytest.raises(InputError) as info:
        load_bundle(path)
    assert info.value.file == str(path)
    (problem,) = info.value.problems
    assert problem.path == where
    assert fragment in problem.message
    assert str(path) in str(info.value)


def test_extends_cycle_is_a_clear_error(tmp_path: Path) -> None:
    first, second = tmp_path / "first.yaml", tmp_path / "second.yaml"
    first.write_text("extends: second.yaml\nid: first\n", encoding="utf-8")
    second.write_text("extends: first.yaml\nid: second\n", encoding="utf-8")
    with pytest.raises(InputError) as info:
        load_bundle(first)
    assert info.value.file in {str(first), str(second)}
    (problem,) = info.value.problems
    assert problem.path == "extends"
    assert "cycle" in problem.message


def test_missing_parent_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "orphan.yaml"
    path.write_text("extends: nowhere/base.yaml\nid: orphan\n", encoding="utf-8")
    with pytest.raises(InputError) as info:
        load_bundle(path)
    assert info.value.file == str(path)
    (problem,) = info.value.problems
    assert problem.path == "extends"
    assert "no such scenario file" in problem.message and "base.yaml" in problem.message


def test_validate_reports_problems_found_after_merging(
    cli: Cli, tmp_path: Path, tiny_copy: Path
) -> None:
    # Issue y goes, with its weights and utilities, but c's red line still names it.
    path = write_variant(tmp_path, {
        "issues": {"$drop": ["y"]},
        "preferences": {
            "a": {"weights": {"x": 0.8, "y": "$drop"}, "utilities": {"y": "$drop"}},
            "b": {"weights": {"x": 0.8, "y": "$drop"}, "utilities": {"y": "$drop"}},
            "c": {"weights": {"x": 1.0, "y": "$drop"}, "utilities": {"y": "$drop"}},
        },
    })
    result = cli("validate", path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert str(path) in result.stderr
    assert "preferences.c.red_lines[0].then.issue: unknown issue 'y'" in result.stderr
    assert "1 of 1 files invalid" in result.stderr


# --------------------------------------------------------------------------- premises


def test_bilateral_only_washington_and_moscow_decide() -> None:
    a, base = analysis_of("bilateral_us_russia"), analysis_of("baseline")
    assert a.required == ["us", "russia"]
    assert a.zopa >= base.zopa
    assert a.counts.decision_rule == a.zopa
    # Ukraine and the EU keep their preferences: unanimity is exactly the baseline's ZOPA.
    s, b = scenario_of("bilateral_us_russia"), scenario_of("baseline")
    assert s.preferences == b.preferences
    assert a.counts.unanimous == base.zopa


def test_without_article5_no_european_troops_survive() -> None:
    zopa = space_of("eu_peacekeepers_no_article5").zopa
    assert zopa["dmz_peacekeepers"]
    assert not zopa["dmz_peacekeepers"].keys() & {"un_mixed", "european_force"}
    assert "western_guarantees_us_backstop" not in zopa["security_architecture"]
    assert analysis_of("eu_peacekeepers_no_article5").zopa < analysis_of("baseline").zopa


def test_article5_cover_opens_the_backstop_and_european_contingents() -> None:
    def us_red_lines(name: str) -> set[str]:
        return {line.id for line in scenario_of(name).preferences["us"].red_lines}

    assert "no_article5_for_european_forces" in us_red_lines("eu_peacekeepers_no_article5")
    assert "no_article5_for_european_forces" not in us_red_lines("eu_peacekeepers_with_article5")
    zopa = space_of("eu_peacekeepers_with_article5").zopa
    assert "western_guarantees_us_backstop" in zopa["security_architecture"]
    assert "un_mixed" in zopa["dmz_peacekeepers"]
    # Russia's refusal of Western troops without a Security Council mandate still holds.
    assert "european_force" not in zopa["dmz_peacekeepers"]
    assert analysis_of("eu_peacekeepers_with_article5").zopa > (
        analysis_of("eu_peacekeepers_no_article5").zopa)
    assert nash_options("eu_peacekeepers_with_article5") != nash_options(
        "eu_peacekeepers_no_article5")


def test_referendum_settles_territory_in_every_zopa_package() -> None:
    assert set(space_of("un_referendum").zopa["territory"]) == {"donbass_and_referendum"}
    assert nash_options("un_referendum")["territory"] == "donbass_and_referendum"
    # More referendum packages are agreeable than in the baseline.
    in_baseline = space_of("baseline").zopa["territory"]["donbass_and_referendum"]
    assert analysis_of("un_referendum").zopa > in_baseline


def test_energy_tranche_moves_the_nash_package_onto_it() -> None:
    assert nash_options("baseline")["sanctions"] != "phased_energy_first"
    assert nash_options("phased_energy_tranche")["sanctions"] == "phased_energy_first"
    assert analysis_of("phased_energy_tranche").zopa > analysis_of("baseline").zopa


def test_russia_accepts_nothing_but_lifting_everything() -> None:
    rational = space_of("russia_full_lifting").rational
    assert rational["russia"]["sanctions"] == {"lift_all_now"}
    assert "lift_all_now" not in rational["eu"]["sanctions"]
    assert analysis_of("russia_full_lifting").zopa == 0


def test_ukraine_and_eu_accept_no_territorial_concession() -> None:
    rational = space_of("ukraine_eu_no_territorial_concession").rational
    no_concession = {"freeze_current_line", "return_to_2022_lines"}
    assert rational["ukraine"]["territory"] <= no_concession
    assert rational["eu"]["territory"] <= no_concession
    assert not rational["russia"]["territory"] & no_concession
    assert analysis_of("ukraine_eu_no_territorial_concession").zopa == 0


def test_no_mediator_lets_the_parties_table() -> None:
    s = scenario_of("no_mediator")
    assert s.mediator is None
    assert s.parties == s.voters == ["us", "russia", "ukraine", "eu"]
    a, base = analysis_of("no_mediator"), analysis_of("baseline")
    assert a.zopa == base.zopa
    assert nash_options("no_mediator") == nash_options("baseline")


def test_kyiv_stated_positions_leave_no_zone_of_agreement() -> None:
    s, base = scenario_of("kyiv_stated_positions"), scenario_of("baseline")
    # Only Ukraine's red lines change, and every added one is Kyiv's public line.
    assert {p: s.preferences[p] for p in ("us", "russia", "eu")} == {
        p: base.preferences[p] for p in ("us", "russia", "eu")}
    ukraine, before = s.preferences["ukraine"], base.preferences["ukraine"]
    assert ukraine.utilities == before.utilities and ukraine.weights == before.weights
    assert ukraine.reservation_utility == before.reservation_utility
    added = [line for line in ukraine.red_lines if line not in before.red_lines]
    assert len(added) == 6 and all(line.source == "background" for line in added)
    # Kyiv keeps the land it holds; Russia's inferred floor wants Donbass: nothing is left.
    rational = space_of("kyiv_stated_positions").rational
    no_concession = {"freeze_current_line", "return_to_2022_lines"}
    assert rational["ukraine"]["territory"] <= no_concession
    assert not rational["russia"]["territory"] & no_concession
    assert analysis_of("kyiv_stated_positions").zopa == 0


def test_leadership_transition_adds_an_issue_and_keeps_a_zone() -> None:
    s, base = scenario_of("leadership_transition"), scenario_of("baseline")
    assert [i.id for i in s.issues] == [*(i.id for i in base.issues), "leadership_transition"]
    for party in s.voters:
        new, old = s.preferences[party].weights, base.preferences[party].weights
        share = 1 - new["leadership_transition"]
        # The baseline's weights are scaled down together, so their ratios are unchanged.
        assert all(new[d] == pytest.approx(old[d] * share) for d in old)
    zopa = space_of("leadership_transition").zopa["leadership_transition"]
    # Ukraine's red line bars a vote before the treaty; Russia's bars a deal silent on it.
    assert set(zopa) == {"elections_within_a_year", "elections_after_treaty"}
    assert analysis_of("leadership_transition").zopa > 0
    assert nash_options("leadership_transition")["leadership_transition"] in zopa
