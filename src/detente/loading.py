"""Reading scenario and brief files, turning every defect into one `InputError` with field paths."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from detente.briefs import Brief
from detente.consistency import link_problems
from detente.errors import InputError, Problem, format_path
from detente.scenario import ID_PATTERN, SOURCE_PATTERN, Scenario, check_scenario
from detente.sources import brief_problems, bundle_problems, raise_located, scenario_problems
from detente.variants import resolve_extends

M = TypeVar("M", bound=BaseModel)


def load_yaml(path: Path) -> dict[str, Any]:
    """Parse a YAML file that must hold a mapping."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(path, [Problem("", "no such file")]) from None
    except IsADirectoryError:
        raise InputError(path, [Problem("", "expected a file, got a directory")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, [Problem("", f"cannot read: {exc}")]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise InputError(path, [Problem(where, f"malformed YAML: {exc.problem}")]) from None
    except yaml.YAMLError as exc:
        raise InputError(path, [Problem("", f"malformed YAML: {exc}")]) from None
    if not isinstance(data, dict):
        got = "an empty file" if data is None else type(data).__name__
        raise InputError(path, [Problem("", f"expected a YAML mapping at the top, got {got}")])
    return data


def validate_model(model: type[M], data: Any, file: Path | str) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InputError(file, problems_from_validation(exc)) from None


_PATTERNS = {
    ID_PATTERN: "a lower snake case id (a lowercase letter, then lowercase letters, digits or _)",
    SOURCE_PATTERN: ("a source tag: 'article/<section>' (lowercase, digits, -), 'inference' "
                     "(with a `basis`), 'background' or 'assumption' (a variant's premises are "
                     "'assumption' or 'inference')"),
}
_RED_LINE_KINDS = ("forbid", "bound", "conditional")


def problems_from_validation(exc: ValidationError) -> list[Problem]:
    problems = []
    for err in exc.errors(include_url=False):
        loc = list(err["loc"])
        # pydantic puts the discriminated union's tag right after the red line's index.
        loc = [part for k, part in enumerate(loc)
               if not (part in _RED_LINE_KINDS and k > 0 and isinstance(loc[k - 1], int))]
        is_key = bool(loc) and loc[-1] == "[key]"
        if is_key:
            loc = loc[:-1]
        kind, ctx = err["type"], err.get("ctx", {})
        msg = err["msg"]
        if kind == "missing":
            msg = "required field is missing"
        elif kind == "extra_forbidden":
            msg = "unknown field"
        elif kind == "union_tag_not_found":
            msg = f"required field {ctx.get('discriminator', '')} is missing"
        elif kind == "union_tag_invalid":
            loc.append(str(ctx.get("discriminator", "")).strip("'"))
            msg = f"expected one of {ctx.get('expected_tags')}, got '{ctx.get('tag')}'"
        elif kind == "string_pattern_mismatch" and ctx.get("pattern") in _PATTERNS:
            msg = f"expected {_PATTERNS[ctx['pattern']]}, got {json.dumps(err['input'])}"
        else:
            msg = msg.removeprefix("Value error, ")
            if "input" in err:
                shown = json.dumps(err["input"], default=str)
                if len(shown) > 60:
                    shown = shown[:57] + "..."
                msg = f"{msg} (got {shown})"
        if is_key:
            msg = f"invalid key: {msg}"
        problems.append(Problem(format_path(loc), msg))
    return problems


def load_brief(path: Path) -> Brief:
    brief = validate_model(Brief, load_yaml(path), path)
    if brief.id != path.stem:
        raise InputError(path, [Problem("id", f"expected '{path.stem}' (the file's name), "
                                        f"got '{brief.id}'")])
    problems = brief_problems(brief)
    if problems:
        raise InputError(path, problems)
    return brief


@dataclass(frozen=True)
class ScenarioBundle:
    """A validated scenario with its party briefs and the hash that identifies its content."""

    path: Path
    scenario: Scenario
    briefs: dict[str, Brief]
    content_hash: str


def load_scenario(path: Path) -> Scenario:
    return load_bundle(path).scenario


def load_bundle(path: Path) -> ScenarioBundle:
    """A validated scenario (variants merged onto what they extend) with its party briefs."""
    data = resolve_extends(path, load_yaml(path), load_yaml)
    scenario = validate_model(Scenario, data, path)
    problems = check_scenario(scenario) + scenario_problems(scenario, path)
    if problems:
        raise InputError(path, problems)
    briefs = _load_party_briefs(path, scenario)
    _check_briefs_against(path, scenario, briefs)
    return ScenarioBundle(path=path, scenario=scenario, briefs=briefs,
                          content_hash=content_hash(scenario, briefs))


def content_hash(scenario: Scenario, briefs: Mapping[str, Brief]) -> str:
    """SHA-256 of the resolved scenario and every party brief, as canonical JSON.

    Briefs are covered because they are half of every prompt: two runs whose briefs differ are
    not samples of the same experiment. Defaults are left out, so a new optional field does not
    change the hash of existing files.
    """
    content = {
        "scenario": scenario.model_dump(mode="json", by_alias=True, exclude_defaults=True),
        "briefs": {party: brief.model_dump(mode="json", by_alias=True, exclude_defaults=True)
                   for party, brief in sorted(briefs.items())},
    }
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _check_briefs_against(path: Path, scenario: Scenario, briefs: dict[str, Brief]) -> None:
    """Brief claims against the scenario: cited sections, and option ids the positions name."""
    agents_dir = (path.parent / scenario.agents_dir).resolve()
    located = {party: (agents_dir / f"{party}.yaml", brief) for party, brief in briefs.items()}
    problems = bundle_problems(scenario, located)
    for brief_path, brief in located.values():
        problems += [(str(brief_path), p) for p in link_problems(scenario, brief)]
    raise_located(problems)


def _load_party_briefs(path: Path, scenario: Scenario) -> dict[str, Brief]:
    agents_dir = (path.parent / scenario.agents_dir).resolve()
    briefs: dict[str, Brief] = {}
    problems: list[Problem] = []
    for k, party in enumerate(scenario.parties):
        brief_path = agents_dir / f"{party}.yaml"
        if not brief_path.is_file():
            problems.append(Problem(f"parties[{k}]", f"party '{party}' has no brief: expected "
                                    f"a file {brief_path}"))
            continue
        brief = load_brief(brief_path)
        expected = "mediator" if party == scenario.mediator else "party"
        if brief.role != expected:
            makes = "the mediator" if expected == "mediator" else "a voting party"
            problems.append(Problem(f"parties[{k}]", f"expected the brief {brief_path} to have "
                                    f"role '{expected}' (this scenario makes '{party}' {makes}), "
                                    f"got '{brief.role}'"))
        briefs[party] = brief
    if problems:
        raise InputError(path, problems)
    return briefs


def classify(data: dict[str, Any]) -> str:
    """`scenario` or `brief`, from a file's top-level keys."""
    if "issues" in data or "preferences" in data or "decision" in data or "extends" in data:
        return "scenario"
    return "brief"
