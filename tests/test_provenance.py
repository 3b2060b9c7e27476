"""Provenance: what identifies a run's inputs, so that runs made from different inputs are never
taken for samples of one experiment."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from detente.loading import load_bundle
from helpers import TINY


def _copy_tiny(tmp: Path) -> Path:
    shutil.copytree(TINY.parent, tmp / "tiny")
    return tmp / "tiny" / "scenario.yaml"


def test_the_scenario_hash_covers_every_brief(tmp_path: Path) -> None:
    path = _copy_tiny(tmp_path)
    before = load_bundle(path).content_hash
    brief = path.parent / "agents" / "a.yaml"
    data = yaml.safe_load(brief.read_text())
    data["positions"][0]["stance"] = "has a different view on x"
    brief.write_text(yaml.safe_dump(data))
    assert load_bundle(path).content_hash != before


def test_the_scenario_hash_ignores_layout_and_defaults(tmp_path: Path) -> None:
    path = _copy_tiny(tmp_path)
    before = load_bundle(path).content_hash
    data = yaml.safe_load(path.read_text())
    data["decision"]["veto"] = []  # the default, spelled out
    path.write_text(yaml.safe_dump(data, sort_keys=True, indent=4))
    assert load_bundle(path).content_hash == before
