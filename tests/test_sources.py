"""Source tags and prose tied to numbers: what `validate` refuses, what `sources` counts.

Bad inputs are small edits of a copy of tests/data/tiny (every claim tagged `assumption`, the
briefs' positions `background`); each must fail with exit status 2 and one message naming the
file and the field. Contradictions between a brief's option links and the scenario are checked on
the tiny copy and, as regressions of the fidelity review, on the shipped baseline with its old
numbers put back.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from detente.errors import InputError
from detente.loading import load_bundle
from detente.scenario import Scenario
from detente.sources import TAGS
from helpers import Cli, CliResult

ROOT = Path(__file__).parents[1]
TINY = Path(__file__).parent / "data" / "tiny"
BASELINE = ROOT / "scenarios" / "baseline.yaml"


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    """A writable copy of tests/data/tiny; returns its scenario file."""
    shutil.copytree(TINY, tmp_path / "tiny")
    return tmp_path / "tiny" / "scenario.yaml"


def edit(path: Path, change: Callable[[dict[str, Any]], None]) -> Path:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def brief_of(scenario: Path, party: str) -> Path:
    return scenario.parent / "agents" / f"{party}.yaml"


def one_problem(result: CliResult, file: Path, *fragments: str) -> str:
    """Exit 2, no traceback, and exactly one problem line, naming `file` and each fragment."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if not line.endswith("files invalid")]
    assert len(lines) == 1, result.stderr
    (line,) = lines
    assert str(file) in line, line
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    return line


# --------------------------------------------------------------------------- tags


@pytest.mark.parametrize(("change", "where", "fragment"), [
    pytest.param(lambda d: d["preferences"]["a"]["red_lines"][0].pop("source"),
                 "preferences.a.red_lines[0].source", "missing source tag", id="red-line"),
    pytest.param(lambda d: d["issues"][0]["options"][1].pop("source"),
                 "issues[0].options[1].source", "missing source tag", id="option"),
    pytest.param(lambda d: d["issues"][1].pop("source"),
                 "issues[1].source", "missing source tag", id="issue"),
    pytest.param(lambda d: d["terms"][0].pop("source"),
                 "terms[0].source", "missing source tag", id="term"),
    pytest.param(lambda d: d["preferences"]["c"].pop("reservation_source"),
                 "preferences.c.reservation_source", "missing source tag", id="reservation"),
    pytest.param(lambda d: d["preferences"]["b"]["red_lines"][0].update(source="inference"),
                 "preferences.b.red_lines[0].basis", "an `inference` needs a `basis`",
                 id="inference-without-basis"),
    pytest.param(lambda d: d["preferences"]["b"].update(reservation_source="inference"),
                 "preferences.b.reservation_basis", "an `inference` needs a `basis`",
                 id="inferred-reservation-without-basis"),
    pytest.param(lambda d: d["issues"][0].update(source="variant"),
                 "issues[0].source", "a variant's premises are 'assumption'", id="old-variant-tag"),
    pytest.param(lambda d: d["issues"][0].update(source="article/intro"),
                 "issues[0].source", "the scenario (which has no `source`) lists no `sections`",
                 id="article-without-source"),
    pytest.param(lambda d: d.update(source={"title": "T", "author": "A", "date": "2025-01-01",
                                            "sections": ["intro", "body"]})
                 or d["issues"][0].update(source="article/outro"),
                 "issues[0].source", "unknown section 'outro'", id="unknown-section"),
])
def test_validate_refuses_a_bad_tag_with_one_message(
    cli: Cli, tiny: Path, change: Callable[[dict[str, Any]], None], where: str, fragment: str
) -> None:
    edit(tiny, change)
    line = one_problem(cli("validate", tiny), tiny, f"{where}: ", fragment)
    assert "expected" in line or "basis" in line or "section" in line
    # analyze and run load the same bundle, so they refuse it too.
    assert cli("analyze", tiny, "--no-frontier").returncode == 2


CITED = {"title": "Tiny test scenario", "author": "detente tests", "date": "2025-01-01"}
"""The text tiny's briefs cite."""


def test_a_listed_section_is_accepted(cli: Cli, tiny: Path) -> None:
    edit(tiny, lambda d: d.update(source={**CITED, "sections": ["intro", "body"]})
         or d["issues"][0].update(source="article/body"))
    result = cli("validate", tiny)
    assert result.returncode == 0, result.stderr


def test_an_untagged_brief_position_is_refused_alone_and_in_its_bundle(
    cli: Cli, tiny: Path
) -> None:
    brief = edit(brief_of(tiny, "b"), lambda d: d["positions"][0].pop("source"))
    one_problem(cli("validate", brief), brief, "positions[0].source: missing source tag")
    one_problem(cli("validate", tiny), brief, "positions[0].source: missing source tag")


def test_a_persona_needs_its_tag(cli: Cli, tiny: Path) -> None:
    brief = edit(brief_of(tiny, "m"), lambda d: d["persona"].pop("source"))
    one_problem(cli("validate", brief), brief, "persona.source: missing source tag")


def test_brief_sections_are_checked_against_the_scenarios(cli: Cli, tiny: Path) -> None:
    edit(tiny, lambda d: d.update(source={**CITED, "sections": ["intro"]}))
    brief = edit(brief_of(tiny, "a"), lambda d: d["positions"][0].update(source="article/body"))
    # The brief lists no sections of its own, so alone it cannot tell; its scenario can.
    assert cli("validate", brief).returncode == 0
    one_problem(cli("validate", tiny), brief, "positions[0].source", "unknown section 'body'",
                "the scenario's `source`")
    # A brief that lists sections is checked against its own list, alone or not.
    edit(brief, lambda d: d["source"].update(sections=["intro"]))
    one_problem(cli("validate", brief), brief, "unknown section 'body'", "the brief's `source`")


def test_a_brief_citing_another_text_is_refused(cli: Cli, tiny: Path) -> None:
    edit(tiny, lambda d: d.update(source={"title": "T", "author": "A", "date": "2025-01-01"}))
    # tiny's briefs cite "Tiny test scenario": another text than the scenario's.
    with pytest.raises(InputError) as info:
        load_bundle(tiny)
    assert {p.path for p in info.value.problems} == {"source.title"}
    assert "a.yaml" in str(info.value) and "m.yaml" in str(info.value)


def test_scenarios_built_in_code_need_no_tags() -> None:
    data = yaml.safe_load((TINY / "scenario.yaml").read_text(encoding="utf-8"))
    for issue in data["issues"]:
        issue.pop("source")
    scenario = Scenario.model_validate(data)
    assert scenario.issues[0].source is None


# --------------------------------------------------------------------------- option links


def link(party_brief: Path, **links: list[str]) -> Path:
    return edit(party_brief, lambda d: d["positions"][0].update(links))


def test_links_name_options_of_the_scenario(cli: Cli, tiny: Path) -> None:
    brief = link(brief_of(tiny, "a"), prefers=["x9"])
    assert cli("validate", brief).returncode == 0  # alone, a brief does not know the options
    one_problem(cli("analyze", tiny, "--no-frontier"), brief,
                "positions[0].prefers[0]", "unknown option 'x9' of issue 'x'",
                "expected one of: x1, x2, x3")


def test_one_option_cannot_be_both_preferred_and_rejected(cli: Cli, tiny: Path) -> None:
    brief = link(brief_of(tiny, "a"), prefers=["x1"], rejects=["x1"])
    one_problem(cli("validate", brief), brief, "positions[0].rejects[0]",
                "'x1' of issue 'x' is both prefers and rejects")


def test_a_general_position_names_no_options(cli: Cli, tiny: Path) -> None:
    brief = edit(brief_of(tiny, "a"), lambda d: d["positions"][0].update(
        issue="general", prefers=["x1"]))
    one_problem(cli("validate", brief), brief, "positions[0].prefers",
                "a `general` position names no options")


def test_consistent_links_pass(cli: Cli, tiny: Path) -> None:
    # a: x1 100, x2 50, x3 0, and x3 is its red line.
    link(brief_of(tiny, "a"), prefers=["x1"], accepts=["x2"], rejects=["x3"])
    result = cli("validate", tiny)
    assert result.returncode == 0, result.stderr


def test_a_rejected_option_scoring_above_a_preferred_one_is_a_contradiction(
    cli: Cli, tiny: Path
) -> None:
    # c (not required, so the zone does not matter here): y1 50, y2 50, a tie.
    brief = edit(brief_of(tiny, "c"), lambda d: d["positions"][0].update(
        issue="y", prefers=["y1"], rejects=["y2"]))
    result = cli("validate", tiny)
    line = one_problem(result, tiny, "preferences.c.utilities.y: contradicts", str(brief),
                       "positions[0].rejects[0]", "rejects 'y2' (50 here)",
                       "prefers 'y1' (positions[0].prefers[0], 50 here)")
    assert "change the utilities or the prose" in line


def test_an_accepted_option_scoring_above_a_preferred_one_is_a_contradiction(
    cli: Cli, tiny: Path
) -> None:
    link(brief_of(tiny, "a"), prefers=["x2"], accepts=["x1"])  # x1 100 > x2 50
    one_problem(cli("validate", tiny), tiny, "preferences.a.utilities.x",
                "accepts 'x1' (100 here) but prefers 'x2'")


def test_a_rejected_option_in_the_zone_of_agreement_is_a_contradiction(
    cli: Cli, tiny: Path
) -> None:
    # b: x1 0, x2 50, x3 100; the zone holds x1y2t0 and x1y2t5, which b accepts (50 >= 40).
    brief = link(brief_of(tiny, "b"), prefers=["x3"], rejects=["x1"])
    line = one_problem(cli("validate", tiny), tiny, "preferences.b: contradicts", str(brief),
                       "positions[0].rejects[0]", "the brief rejects 'x1' (x)",
                       "2 package(s) of the zone of agreement", "make it a red line")
    assert "x=x1, y=y2" in line
    # The fix the message offers: a red line.
    edit(tiny, lambda d: d["preferences"]["b"]["red_lines"].append(
        {"id": "no_x1", "kind": "forbid", "issue": "x", "options": ["x1"],
         "description": "never x1", "source": "assumption"}))
    result = cli("validate", tiny)
    assert result.returncode == 0, result.stderr


def test_only_packages_the_party_would_accept_count(cli: Cli, tiny: Path) -> None:
    # c is not required: the zone may hold x1 packages, but c rejects them anyway (its red line
    # x1_needs_y2 holds there, its utility 50 is below its walk-away 60), so no contradiction.
    link(brief_of(tiny, "c"), rejects=["x1"])
    result = cli("validate", tiny)
    assert result.returncode == 0, result.stderr


# --------------------------------------------------------------------------- the review


def baseline_variant(tmp_path: Path, preferences: dict[str, Any]) -> Path:
    path = tmp_path / "old_numbers.yaml"
    data = {"extends": str(BASELINE), "id": "old_numbers", "variant_of": "baseline",
            "preferences": preferences}
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def test_the_review_contradictions_come_back_with_the_old_numbers(
    cli: Cli, tmp_path: Path
) -> None:
    path = baseline_variant(tmp_path, {
        # US: Europeans wanted on the line, yet rated below missions without them.
        "us": {"utilities": {"dmz_peacekeepers": {
            "un_non_western": 80, "un_non_western_mutual": 90, "un_mixed": 80,
            "european_force": 70}}},
        # Ukraine: the media and curricula mandate was not a red line.
        "ukraine": {"red_lines": {"$drop": ["no_outside_mandate_over_media_and_schools"]}},
    })
    result = cli("validate", path)
    assert result.returncode == 2
    problems = [line for line in result.stderr.splitlines() if "contradicts" in line]
    us = [line for line in problems if "preferences.us.utilities.dmz_peacekeepers" in line]
    assert us and all("agents/us.yaml" in line for line in us)
    assert any("prefers 'european_force' (positions[5].prefers[1], 70 here)" in line
               for line in us)
    (ukraine,) = [line for line in problems if "preferences.ukraine:" in line]
    assert "agents/ukraine.yaml" in ukraine and "'monitors_with_media_mandate'" in ukraine
    assert len(problems) == len(us) + 1, result.stderr


def test_the_shipped_files_are_free_of_contradictions(cli: Cli) -> None:
    result = cli("validate", ROOT / "scenarios", ROOT / "scenarios" / "variants")
    assert result.returncode == 0, result.stderr


# --------------------------------------------------------------------------- detente sources


def test_sources_counts_a_small_fixture(cli: Cli, tiny: Path) -> None:
    edit(tiny, lambda d: (
        d["issues"][0].update(source="background"),
        d["issues"][0]["options"][0].update(source="inference", basis="said somewhere"),
        d["preferences"]["a"]["red_lines"][0].update(source="background"),
        d["preferences"]["c"].update(reservation_source="inference", reservation_basis="b"),
    ))
    link(brief_of(tiny, "a"), prefers=["x1"], rejects=["x3"])
    edit(brief_of(tiny, "b"), lambda d: d["positions"].append(
        {"issue": "y", "stance": "s", "source": "inference", "basis": "a sentence"}))
    result = cli("sources", tiny.parent, "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    files = {Path(f).name for f in data["files"]}
    assert files == {"scenario.yaml", "a.yaml", "b.yaml", "c.yaml", "m.yaml"}

    def row(**counts: int) -> dict[str, int]:
        return {t: counts.get(t, 0) for t in TAGS}

    a = data["parties"]["a"]["by_kind"]
    assert a["position"] == row(background=1)
    assert a["persona"] == row(assumption=1)
    assert a["red line"] == row(background=1)
    assert a["reservation"] == row(assumption=1)
    # x1 is tagged inference in the scenario, x3 assumption.
    assert a["option named"] == row(inference=1, assumption=1)
    assert a["utility"] == row(assumption=5 + 2)  # 3 + 2 options, 2 term points
    assert a["weight"] == row(assumption=3)
    assert data["parties"]["b"]["by_kind"]["position"] == row(background=1, inference=1)
    assert data["parties"]["c"]["by_kind"]["reservation"] == row(inference=1)
    assert data["parties"]["m"]["by_kind"]["red line"] == row()
    assert data["scenario"] == {"issue": row(background=1, assumption=1),
                                "option": row(inference=1, assumption=4),
                                "term": row(assumption=1), "event": row()}
    assert data["parties"]["a"]["prose_total"] == row(background=2, inference=1, assumption=3)
    assert data["prose_total"]["inference"] == 1 + 1 + 1 + 1  # option, option named, pos., res.
    # Utilities: a 5 options + 2 term points, b 5 + 3, c 5 + 2; weights 3 each.
    assert sum(data["total"].values()) - sum(data["prose_total"].values()) == 7 + 8 + 7 + 9

    text = cli("sources", tiny.parent)
    assert text.returncode == 0, text.stderr
    assert "Claims per party and source tag" in text.stdout
    assert "Utilities and weights are assumptions by definition" in text.stdout


def test_sources_counts_a_claim_a_variant_repeats_once(cli: Cli, tiny: Path) -> None:
    variant = tiny.parent / "variant.yaml"
    variant.write_text(yaml.safe_dump({
        "extends": "scenario.yaml", "id": "variant",
        "preferences": {"b": {"red_lines": {"$add": [
            {"id": "no_x1", "kind": "forbid", "issue": "x", "options": ["x1"],
             "description": "never x1", "source": "assumption"}]}}},
    }), encoding="utf-8")
    alone = json.loads(cli("sources", tiny, "--json").stdout)
    both = json.loads(cli("sources", tiny, variant, "--json").stdout)
    assert both["scenario"] == alone["scenario"]
    assert both["parties"]["a"] == alone["parties"]["a"]
    lines = both["parties"]["b"]["by_kind"]["red line"]["assumption"]
    assert lines == alone["parties"]["b"]["by_kind"]["red line"]["assumption"] + 1


def test_sources_refuses_bad_input(cli: Cli, tmp_path: Path, tiny: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    one_problem(cli("sources", empty), empty, "no .yaml files in this folder")
    edit(tiny, lambda d: d["issues"][0].pop("source"))
    one_problem(cli("sources", tiny), tiny, "issues[0].source: missing source tag")


def test_sources_on_the_shipped_files(cli: Cli) -> None:
    result = cli("sources", ROOT / "agents", ROOT / "scenarios", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    # The article's five parties, and the six parties and the chair of the converted benchmark
    # game (scenarios/benchmarks/), which cites its own text.
    assert set(data["parties"]) == {"us", "russia", "ukraine", "eu", "un_mediator", "sportco",
                                    "tourism_department", "environmental_league", "mayor",
                                    "other_cities", "labour_union", "chair"}
    for party, counts in data["parties"].items():
        assert counts["by_kind"]["persona"]["assumption"] == 1, party
        assert counts["by_kind"]["utility"]["article"] == 0
    # Every voting party's walk-away value is an assumption; the article gives none.
    for party in ("us", "russia", "ukraine", "eu"):
        reservation = data["parties"][party]["by_kind"]["reservation"]
        assert reservation["assumption"] >= 1 and reservation["article"] == 0


def test_sources_searches_folders_recursively_and_skips_hidden_ones(
    cli: Cli, tmp_path: Path, tiny: Path
) -> None:
    hidden = tiny.parent / ".cache"
    hidden.mkdir()
    (hidden / "broken.yaml").write_text("not: [valid", encoding="utf-8")
    result = cli("sources", tmp_path, "--json")
    assert result.returncode == 0, result.stderr
    files = json.loads(result.stdout)["files"]
    assert any(f.endswith("tiny/scenario.yaml") for f in files)
    assert not any(".cache" in f for f in files)
