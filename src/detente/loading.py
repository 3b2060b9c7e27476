"""Reading scenario and brief files, turning every defect into one `InputError` with field paths."""

from __future__ import annotations

import hashlib
import json
import os
import reprlib
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from detente.briefs import Brief
from detente.consistency import link_problems
from detente.errors import InputError, Problem, did_you_mean, format_path
from detente.scenario import ID_PATTERN, SOURCE_PATTERN, Scenario, check_scenario
from detente.sources import brief_problems, bundle_problems, raise_located, scenario_problems
from detente.variants import resolve_extends

M = TypeVar("M", bound=BaseModel)


MAX_FILE_BYTES = 2 * 1024 * 1024
"""Largest scenario or brief file read (the baseline is about 20 kB)."""
MAX_DEPTH = 64
"""Deepest nesting of mappings and lists a file may have."""
MAX_EXPANDED_NODES = 200_000
"""Most values a file may hold once its aliases are expanded (an alias bomb has billions)."""


_SafeBase: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's parser where PyYAML was built with it (the wheels are): about ten times faster."""


class _StrictLoader(_SafeBase):  # type: ignore[misc]
    """PyYAML's safe loader, refusing duplicate keys (YAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:
                continue  # an unhashable key: the base class reports it
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark,
                    f"found duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        mapping: dict[Any, Any] = super().construct_mapping(node, deep=deep)
        return mapping


def read_text_capped(path: Path, cap: int = MAX_FILE_BYTES) -> str:
    """The text of a regular file of at most `cap` bytes; anything else is one InputError."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise InputError(path, [Problem("", "no such file")]) from None
    except (OSError, ValueError) as exc:
        raise InputError(path, [Problem("", f"cannot read: {exc}")]) from None
    if stat.S_ISDIR(info.st_mode):
        raise InputError(path, [Problem("", "expected a file, got a directory")])
    if not stat.S_ISREG(info.st_mode):
        raise InputError(path, [Problem("", "not a regular file (a device, pipe or socket); "
                                        "expected a YAML file")])
    if info.st_size > cap:
        raise InputError(path, [Problem("", f"the file is {info.st_size / 2**20:.1f} MB; "
                                        f"scenario and brief files may be at most "
                                        f"{cap / 2**20:.0f} MB")])
    try:
        with path.open("rb") as handle:
            data = handle.read(cap + 1)
    except OSError as exc:
        raise InputError(path, [Problem("", f"cannot read: {exc.strerror or exc}")]) from None
    if len(data) > cap:
        raise InputError(path, [Problem("", f"the file grew past {cap / 2**20:.0f} MB while "
                                        "being read")])
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(path, [Problem("", f"not UTF-8 text ({exc.reason} at byte "
                                        f"{exc.start})")]) from None


def _check_shape(value: Any, path: Path) -> None:
    """Refuse nesting deeper than MAX_DEPTH and aliases that expand beyond MAX_EXPANDED_NODES,
    counting shared (aliased) values as many times as they appear, without expanding them."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: Any, depth: int) -> int:
        if depth > MAX_DEPTH:
            raise InputError(path, [Problem("", f"nested more than {MAX_DEPTH} levels deep")])
        if not isinstance(node, dict | list):
            return 1
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise InputError(path, [Problem("", "a recursive alias (a value that contains "
                                            "itself)")])
        active.add(key)
        children = node.values() if isinstance(node, dict) else node
        total = 1
        for child in children:
            total += size(child, depth + 1)
            if total > MAX_EXPANDED_NODES:
                raise InputError(path, [Problem("", f"its aliases expand to more than "
                                                f"{MAX_EXPANDED_NODES:,} values (an alias "
                                                "bomb?)")])
        active.discard(key)
        sizes[key] = total
        return total

    size(value, 0)


def load_yaml(path: Path) -> dict[str, Any]:
    """Parse a YAML file that must hold a mapping: a regular file under the size cap, without
    duplicate keys, excessive nesting or alias expansion beyond a budget."""
    text = read_text_capped(path)
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader: no arbitrary objects
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise InputError(path, [Problem(where, f"malformed YAML: {exc.problem}")]) from None
    except yaml.YAMLError as exc:
        raise InputError(path, [Problem("", f"malformed YAML: {exc}")]) from None
    except RecursionError:
        raise InputError(path, [Problem("", "nested too deeply to read")]) from None
    except ValueError as exc:  # e.g. an integer of more than 4,300 digits
        raise InputError(path, [Problem("", f"a number cannot be read: {exc}")]) from None
    _check_shape(data, path)
    if not isinstance(data, dict):
        got = "an empty file" if data is None else type(data).__name__
        raise InputError(path, [Problem("", f"expected a YAML mapping at the top, got {got}")])
    return data


def validate_model(model: type[M], data: Any, file: Path | str) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InputError(file, problems_from_validation(exc, model)) from None


_PATTERNS = {
    ID_PATTERN: "a lower snake case id (a lowercase letter, then lowercase letters, digits or _)",
    SOURCE_PATTERN: ("a source tag: 'article/<section>' (lowercase, digits, -), 'inference' "
                     "(with a `basis`), 'background' or 'assumption' (a variant's premises are "
                     "'assumption' or 'inference')"),
}
_RED_LINE_KINDS = ("forbid", "bound", "conditional")


def short_repr(value: Any, limit: int = 60) -> str:
    """A value as JSON, cut to `limit` characters, without ever serializing a huge one."""
    shown = reprlib.Repr()
    shown.maxlevel, shown.maxdict, shown.maxlist = 3, 6, 6
    shown.maxstring = shown.maxother = limit
    try:
        text = json.dumps(value) if isinstance(value, str | int | float | bool | None) and \
            len(str(value)) <= limit else shown.repr(value)
    except (TypeError, ValueError):
        text = shown.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def fields_at(model: type[BaseModel], loc: Sequence[Any]) -> list[str]:
    """The field names (aliases) allowed at `loc` inside `model`, for "unknown field" errors:
    follows fields, list indices, mapping keys and discriminated unions by their tag."""
    current: Any = model
    for part in loc:
        models = _models_in(current)
        if isinstance(part, str) and len(models) > 1:
            tagged = [m for m in models if _tag_of(m) == part]
            if tagged:
                current = tagged[0]
                continue
        if isinstance(part, str) and len(models) == 1:
            field = next((f for name, f in models[0].model_fields.items()
                          if part in (name, f.alias)), None)
            if field is None:
                return []
            current = field.annotation
        else:  # an index into a list, or a key of a mapping
            current = _inner(current)
    found = _models_in(current)
    return [f.alias or name for name, f in found[0].model_fields.items()] if len(found) == 1 \
        else []


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation may hold directly (unions unpacked)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    args = [a for a in get_args(annotation) if a is not type(None)]
    if get_origin(annotation) in (Union, UnionType) or (args and get_origin(annotation) is
                                                        Annotated):
        return [m for a in args for m in _models_in(a)]
    return []


def _inner(annotation: Any) -> Any:
    """The element type of a list or the value type of a dict (what an index or key holds)."""
    args = [a for a in get_args(annotation) if a is not type(None)]
    if get_origin(annotation) is Annotated and args:
        return _inner(args[0])
    if get_origin(annotation) in (Union, UnionType):
        for arg in args:
            inner = _inner(arg)
            if inner is not arg:
                return inner
        return annotation
    return args[-1] if args else annotation


def _tag_of(model: type[BaseModel]) -> Any:
    field = model.model_fields.get("kind")
    args = get_args(field.annotation) if field is not None else ()
    return args[0] if len(args) == 1 else None


def problems_from_validation(
    exc: ValidationError, model: type[BaseModel] | None = None
) -> list[Problem]:
    problems = []
    for err in exc.errors(include_url=False):
        raw_loc = list(err["loc"])
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
            allowed = fields_at(model, raw_loc[:-1]) if model is not None else []
            field = str(raw_loc[-1]) if raw_loc else ""
            msg = "unknown field" + (f"{did_you_mean(field, allowed)}; expected one of: "
                                     f"{', '.join(allowed)}" if allowed else "")
        elif kind == "union_tag_not_found":
            msg = f"required field {ctx.get('discriminator', '')} is missing"
        elif kind == "union_tag_invalid":
            loc.append(str(ctx.get("discriminator", "")).strip("'"))
            msg = f"expected one of {ctx.get('expected_tags')}, got '{ctx.get('tag')}'"
        elif kind == "string_pattern_mismatch" and ctx.get("pattern") in _PATTERNS:
            msg = f"expected {_PATTERNS[ctx['pattern']]}, got {short_repr(err['input'])}"
        else:
            msg = msg.removeprefix("Value error, ")
            if "input" in err:
                msg = f"{msg} (got {short_repr(err['input'])})"
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
    if not problems:
        from detente.protocols import protocol_problems

        problems = protocol_problems(scenario)
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
    """`scenario`, `design` (a sweep design, `detente.designs`) or `brief`, from a file's
    top-level keys."""
    if "factors" in data or "scenarios" in data:
        return "design"
    if "issues" in data or "preferences" in data or "decision" in data or "extends" in data:
        return "scenario"
    return "brief"
