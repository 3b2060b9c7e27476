"""What a newcomer meets first: names a mistyped flag or field would need, said plainly."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from helpers import ROOT, TINY, Cli


def test_a_mistyped_party_gets_a_suggestion_without_internal_names(
    cli: Cli, tmp_path: Path
) -> None:
    result = cli("run", ROOT / "scenarios" / "baseline.yaml", "--agent",
                 "ukrane=scripted:boulware", "--out", tmp_path)
    assert result.returncode == 2
    assert "did you mean ukraine?" in result.stderr
    assert "flags" not in result.stderr
    assert result.stderr.startswith("error: command line: ukrane: unknown party")


def test_a_mistyped_strategy_gets_a_suggestion(cli: Cli, tmp_path: Path) -> None:
    result = cli("run", TINY, "--agent", "all=scripted:bouldware", "--out", tmp_path)
    assert result.returncode == 2
    assert "did you mean scripted:boulware?" in result.stderr


def test_an_unknown_field_lists_the_valid_ones(cli: Cli, tmp_path: Path) -> None:
    shutil.copytree(TINY.parent, tmp_path / "tiny")
    path = tmp_path / "tiny" / "scenario.yaml"
    data = yaml.safe_load(path.read_text())
    data["decision"]["max_round"] = 3
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    result = cli("validate", path)
    assert result.returncode == 2
    assert "decision.max_round: unknown field (did you mean max_rounds?); expected one of: " \
           "required, veto, quorum, max_rounds, deadlock_after" in result.stderr


def test_an_unknown_field_of_a_red_line_lists_that_kind_s_fields(
    cli: Cli, tmp_path: Path
) -> None:
    shutil.copytree(TINY.parent, tmp_path / "tiny")
    path = tmp_path / "tiny" / "scenario.yaml"
    data = yaml.safe_load(path.read_text())
    data["preferences"]["b"]["red_lines"][0]["maximum"] = 5
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    result = cli("validate", path)
    assert "unknown field (did you mean max?)" in result.stderr
    assert "expected one of: id, description, source, basis, kind, term, min, max" in result.stderr


def test_validate_checks_every_scenario_under_a_folder(cli: Cli) -> None:
    result = cli("validate", ROOT / "scenarios")
    assert result.returncode == 0, result.stderr
    checked = [line for line in result.stdout.splitlines() if line.startswith("✓ ")]
    assert len(checked) == len(list((ROOT / "scenarios").rglob("*.yaml"))) >= 9
