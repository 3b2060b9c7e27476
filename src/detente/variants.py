"""Scenario variants: `extends: other.yaml` plus overrides, deep-merged before validation.

Merge rules (the variant's value wins):
- a mapping merges into a mapping key by key, recursively; the value `$drop` removes a key;
- a list replaces a list outright;
- to edit a list in place, give a mapping of operations instead:
  `$drop: [ids]` removes items (by their `id`, or by value for plain lists),
  `$merge: {id: {...}}` deep-merges into the item with that id,
  `$add: [items]` appends (after the drops and merges).
Paths (`agents_dir`) keep pointing where the file that set them meant.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from detente.errors import InputError, Problem, path_problem

DROP = "$drop"
LIST_OPS = frozenset({"$add", "$drop", "$merge"})
MAX_DEPTH = 16


def resolve_extends(path: Path, data: dict[str, Any], load: Any, depth: int = 0) -> dict[str, Any]:
    """The fully merged mapping of a scenario file (`load` reads one YAML file)."""
    parent_ref = data.get("extends")
    if parent_ref is None:
        return data
    if not isinstance(parent_ref, str):
        raise InputError(path, [Problem("extends", "expected a path to another scenario file")])
    if depth >= MAX_DEPTH:
        raise InputError(path, [Problem("extends", f"more than {MAX_DEPTH} levels deep: "
                                        "is there a cycle?")])
    unusable = path_problem(parent_ref) or path_problem(str(path.parent / parent_ref))
    if unusable is not None:
        raise InputError(path, [Problem("extends", f"expected a path to another scenario file, "
                                        f"got {unusable}")])
    parent_path = (path.parent / parent_ref).resolve()
    try:
        found = parent_path.is_file()
    except OSError as exc:
        raise InputError(path, [Problem("extends", f"cannot read {parent_ref!r}: "
                                        f"{exc.strerror}")]) from None
    if not found:
        raise InputError(path, [Problem("extends", f"no such scenario file: {parent_path}")])
    base = resolve_extends(parent_path, load(parent_path), load, depth + 1)
    base = dict(base)
    # agents_dir is relative to the file that set it; re-anchor it on the variant's folder.
    agents_dir = base.get("agents_dir", "../agents")
    base["agents_dir"] = os.path.relpath(parent_path.parent / agents_dir, path.parent)
    overrides = {k: v for k, v in data.items() if k != "extends"}
    merged: dict[str, Any] = merge(base, overrides, path, "")
    return merged


def merge(base: Any, override: Any, file: Path, where: str) -> Any:
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for key, value in override.items():
            path = f"{where}.{key}" if where else str(key)
            if value == DROP:
                out.pop(key, None)
            elif key in out:
                out[key] = merge(out[key], value, file, path)
            else:
                out[key] = value
        return out
    if isinstance(base, list) and isinstance(override, dict) and override.keys() <= LIST_OPS:
        return _list_ops(base, override, file, where)
    return override


def _key(item: Any) -> Any:
    return item.get("id") if isinstance(item, dict) else item


def _list_ops(base: list[Any], ops: dict[str, Any], file: Path, where: str) -> list[Any]:
    drops, merges, adds = ops.get("$drop", []), ops.get("$merge") or {}, ops.get("$add", [])
    shapes = (("$drop", drops, list, "a list of ids"), ("$merge", merges, dict,
              "a mapping of id: {fields}"), ("$add", adds, list, "a list of items"))
    for name, value, kind, expected in shapes:
        if not isinstance(value, kind):
            raise InputError(file, [Problem(f"{where}.{name}", f"expected {expected}, got "
                                            f"{type(value).__name__}")])
    for key in drops:
        if not isinstance(key, str | int | float | bool):
            raise InputError(file, [Problem(f"{where}.$drop", "expected ids (or plain values), "
                                            f"got a {type(key).__name__}")])
    for key, patch in merges.items():
        if not isinstance(patch, dict):
            raise InputError(file, [Problem(f"{where}.$merge.{key}", "expected a mapping of "
                                            f"fields to merge, got {type(patch).__name__}")])
    items = list(base)
    known = [_key(i) for i in items]
    for key in drops:
        if key not in known:
            raise InputError(file, [Problem(f"{where}.$drop", f"no item '{key}' to drop; "
                                            f"expected one of: {', '.join(map(str, known))}")])
    items = [i for i in items if _key(i) not in drops]  # by equality: items may be unhashable
    for key, patch in merges.items():
        matches = [k for k, i in enumerate(items) if _key(i) == key]
        if not matches:
            raise InputError(file, [Problem(f"{where}.$merge.{key}", "no item with this id")])
        items[matches[0]] = merge(items[matches[0]], patch, file, f"{where}[{key}]")
    items += list(adds)
    return items
