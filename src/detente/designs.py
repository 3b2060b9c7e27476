"""Sweep designs: factors and their levels, crossed into the runs of one sweep.

A design names the scenarios (files or folders), the seeds, who plays the seats no factor varies,
fixed settings, and factors, each with its levels:

- `agent:PARTY`: who plays the seat (`scripted:boulware`, a model name, or `llm`: an LLM agent on
  the model you set with `--model`, `DETENTE_MODEL` or `[defaults] model` in the config file);
- `model`: the model of every LLM agent whose spec does not name one;
- `temperature`, `assist`: the setting of every LLM agent;
- `protocol`: the negotiation protocol (each level a variant of each scenario, written into the
  sweep folder's `scenarios/`);
- `max_rounds`: the round limit.

The sweep runs the full cross product of the scenarios and every factor's levels (or the listed
subset, `runs:`), each cell once per seed, into `<scenario id>/<levels>/seed-<n>/`. Every run's
levels are recorded in its entry of `sweep.json` and in its log's header (`RunHeader.factors`),
so `detente compare --by FACTOR` and `detente leaderboard` can group by them.

On the command line the same design is a sweep's flags with comma-separated levels:
`--agent russia=gpt-4o-mini,scripted:boulware --temperature 0,0.7 --rounds 4,8`. As a file
(`detente sweep design.yaml`, copied beside the results as `design.yaml`):

    name: russia-seat            # the sweep folder's name (default: derived from the design)
    scenarios: [../baseline.yaml, ../variants/russia_full_lifting.yaml]   # relative to the file
    seeds: 3                     # seeds 0..2 (or a list: [0, 4, 7])
    agents: {all: scripted:linear}            # the seats no factor varies (as --agent)
    settings: {rounds: 4, model: gpt-4o-mini} # fixed: model, base_url, temperature, assist, ...
    factors:
      agent:russia: [scripted:boulware, scripted:conceder, llm]
      temperature: [0.0, 1.0]
    runs:                        # optional: only these cells (each a partial assignment)
      - {agent:russia: llm}
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detente.errors import InputError, Problem, did_you_mean, path_problem

AGENT_PREFIX = "agent:"
LLM_LEVEL = "llm"
"""An agent level: an LLM agent on the model the user sets (--model, DETENTE_MODEL, config)."""
SETTING_FACTORS = ("model", "temperature", "assist", "protocol", "max_rounds")
"""Factors that are settings (beside `scenario`, `seed` and `agent:PARTY`)."""
DESIGN_KEYS = ("name", "description", "scenarios", "seeds", "agents", "settings", "factors",
               "runs")
FIXED_SETTINGS = ("model", "base_url", "temperature", "max_tokens", "max_retries",
                  "structured_mode", "assist", "timeout", "max_connections", "rounds")
DESIGN_FILE = "design.yaml"
"""The copy of a design file kept in its sweep folder."""


@dataclass
class Design:
    """A sweep design: scenarios x factors' levels (or a listed subset) x seeds."""

    scenarios: list[Path]
    seeds: list[int]
    factors: dict[str, list[str]] = field(default_factory=dict)
    """Each factor (not `scenario` or `seed`) with its levels, as text, in the design's order."""
    agents: list[str] = field(default_factory=list)
    """`PARTY=SPEC` for the seats no factor varies."""
    settings: dict[str, Any] = field(default_factory=dict)
    """Fixed settings (`FIXED_SETTINGS`), below the command line's."""
    subset: list[dict[str, str]] | None = None
    """Only the cells matching one of these partial assignments (None: every cell)."""
    name: str | None = None
    source: Path | None = None
    """The design file, if the design is one."""

    @property
    def varied(self) -> bool:
        """Whether the design varies more than the scenario and the seed."""
        return bool(self.factors) or self.source is not None


@dataclass
class Cell:
    """One combination of levels: a scenario and every factor's level; run once per seed."""

    scenario: Path
    scenario_id: str
    levels: dict[str, str]
    """Every factor's level, `scenario` first (the scenario's id)."""

    @property
    def key(self) -> str:
        """Its folder in the sweep: `<scenario id>/<levels>` (the levels made file-safe)."""
        rest = [f"{_short(k)}={v}" for k, v in self.levels.items() if k != "scenario"]
        slug = re.sub(r"[^A-Za-z0-9._=+-]+", "-", "_".join(rest)).strip("-") or "base"
        if len(slug) > 90:
            slug = slug[:80] + "-" + hashlib.sha256(slug.encode()).hexdigest()[:8]
        return f"{self.scenario_id}/{slug}"


def _short(factor: str) -> str:
    return factor.removeprefix(AGENT_PREFIX)


# --------------------------------------------------------------------------- levels from flags


def split_levels(values: Sequence[str], source: str = "--agent") -> tuple[list[str],
                                                                           dict[str, list[str]]]:
    """`PARTY=SPEC[,SPEC...]` values: the fixed specs (`PARTY=SPEC`) and, for a party given more
    than one, its levels (factor `agent:PARTY`). A comma-separated piece with `=` names another
    party, so `all=scripted:linear,russia=a,b` is one fixed spec and two levels for russia."""
    parsed: dict[str, list[str]] = {}
    for value in values:
        current: str | None = None
        for piece in (p.strip() for p in value.split(",")):
            if not piece:
                continue
            party, sep, spec = piece.partition("=")
            if sep:
                if not party.strip() or not spec.strip():
                    raise InputError(source, [Problem(piece, "expected PARTY=SPEC[,SPEC...], "
                                                      "e.g. russia=scripted:boulware,gpt-4o")])
                current = party.strip()
                parsed[current] = [spec.strip()]
            elif current is None:
                raise InputError(source, [Problem(value, "expected PARTY=SPEC[,SPEC...], e.g. "
                                                  "russia=scripted:boulware,gpt-4o")])
            else:
                parsed[current].append(piece)
    fixed = [f"{p}={levels[0]}" for p, levels in parsed.items() if len(levels) == 1]
    factors = {f"{AGENT_PREFIX}{p}": _unique(levels, f"{source} {p}")
               for p, levels in parsed.items() if len(levels) > 1}
    for name in factors:
        if name == f"{AGENT_PREFIX}all":
            raise InputError(source, [Problem("all", "levels for every seat at once are not a "
                                              "factor; give each seat's levels (russia=a,b)")])
    return fixed, factors


def comma_levels(value: str | float | int | Sequence[str | float | int] | None
                 ) -> list[str]:
    """A setting's levels: `"0,0.7"`, `[0, 0.7]` or one value; as text."""
    if value is None:
        return []
    if isinstance(value, str):
        items: list[Any] = [v.strip() for v in value.split(",") if v.strip()]
    elif isinstance(value, Sequence):
        items = list(value)
    else:
        items = [value]
    return [_text(v) for v in items]


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return str(value).strip()


def _unique(levels: Sequence[str], where: str) -> list[str]:
    seen = [lv for i, lv in enumerate(levels) if lv in levels[:i]]
    if seen:
        raise InputError(where, [Problem("", f"level {seen[0]!r} is given twice")])
    return list(levels)


# --------------------------------------------------------------------------- design files


def is_design_file(path: Path) -> bool:
    """A YAML file whose top level has `factors` or `scenarios` (a scenario has neither)."""
    if path.is_dir() or path.suffix not in (".yaml", ".yml") or not path.is_file():
        return False
    from detente.loading import load_yaml

    try:
        data = load_yaml(path)
    except InputError:
        return False
    return "factors" in data or "scenarios" in data


def load_design(path: Path) -> Design:
    """A design file, checked: every problem named, with suggestions."""
    from detente.loading import load_yaml

    data = load_yaml(path)
    problems: list[Problem] = []
    for key in data:
        if key not in DESIGN_KEYS:
            problems.append(Problem(str(key), f"unknown key{did_you_mean(str(key), DESIGN_KEYS)};"
                                    f" expected one of: {', '.join(DESIGN_KEYS)}"))
    raw_scenarios = data.get("scenarios")
    if isinstance(raw_scenarios, str):
        raw_scenarios = [raw_scenarios]
    scenarios: list[Path] = []
    if not isinstance(raw_scenarios, list) or not raw_scenarios or not all(
            isinstance(s, str) for s in raw_scenarios):
        problems.append(Problem("scenarios", "expected a list of scenario files or folders "
                                "(relative to the design file)"))
    else:
        for s in raw_scenarios:
            unusable = path_problem(s)
            if unusable is not None:
                problems.append(Problem("scenarios", f"expected a scenario file or folder, got "
                                        f"{unusable}"))
                continue
            target = Path(s) if Path(s).is_absolute() else path.parent / s
            if not target.exists():
                problems.append(Problem("scenarios", f"no such file or folder: {s} (looked in "
                                        f"{path.parent})"))
            scenarios.append(Path(os.path.normpath(target)))
    seeds_raw = data.get("seeds", 3)
    seeds: list[int] = []
    if isinstance(seeds_raw, int) and not isinstance(seeds_raw, bool) and seeds_raw >= 1:
        seeds = list(range(seeds_raw))
    elif isinstance(seeds_raw, list) and seeds_raw and all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds_raw) \
            and len(set(seeds_raw)) == len(seeds_raw):
        seeds = list(seeds_raw)
    else:
        problems.append(Problem("seeds", f"expected a number of seeds (1 or more) or a list of "
                                f"distinct seeds, got {seeds_raw!r}"))
    agents_raw = data.get("agents", {}) or {}
    agents: list[str] = []
    if not isinstance(agents_raw, dict) or not all(isinstance(v, str)
                                                   for v in agents_raw.values()):
        problems.append(Problem("agents", "expected a mapping of party (or all) to one agent "
                                "spec; vary a seat under factors as agent:PARTY"))
    else:
        agents = [f"{p}={s}" for p, s in agents_raw.items()]
    settings = data.get("settings", {}) or {}
    if not isinstance(settings, dict):
        problems.append(Problem("settings", "expected a mapping of setting to value"))
        settings = {}
    for key in settings:
        if key not in FIXED_SETTINGS:
            problems.append(Problem(f"settings.{key}", f"unknown setting"
                                    f"{did_you_mean(str(key), FIXED_SETTINGS)}; expected one "
                                    f"of: {', '.join(FIXED_SETTINGS)}"))
    factors_raw = data.get("factors", {}) or {}
    factors: dict[str, list[str]] = {}
    if not isinstance(factors_raw, dict):
        problems.append(Problem("factors", "expected a mapping of factor to a list of levels"))
    else:
        for name, levels in factors_raw.items():
            where = f"factors.{name}"
            known = check_factor_name(str(name))
            if known:
                problems.append(Problem(where, known))
                continue
            if isinstance(levels, str | int | float) and not isinstance(levels, bool):
                levels = [levels]
            if not isinstance(levels, list) or not levels or not all(
                    isinstance(v, str | int | float) and not isinstance(v, bool)
                    for v in levels):
                problems.append(Problem(where, "expected a list of levels (text or numbers)"))
                continue
            texts = [_text(v) for v in levels]
            dup = [v for i, v in enumerate(texts) if v in texts[:i]]
            if dup:
                problems.append(Problem(where, f"level {dup[0]!r} is given twice"))
                continue
            factors[str(name)] = texts
    subset: list[dict[str, str]] | None = None
    runs_raw = data.get("runs")
    if runs_raw is not None:
        if not isinstance(runs_raw, list) or not runs_raw or not all(
                isinstance(r, dict) for r in runs_raw):
            problems.append(Problem("runs", "expected a list of cells, each a mapping of factor "
                                    "to level (the factors left out take every level)"))
        else:
            subset = []
            for k, cell in enumerate(runs_raw):
                chosen: dict[str, str] = {}
                for name, level in cell.items():
                    if name != "scenario" and name not in factors:
                        problems.append(Problem(f"runs[{k}].{name}", f"not a factor of this "
                                                f"design{did_you_mean(str(name), list(factors))}"
                                                f"; its factors: scenario, "
                                                f"{', '.join(factors) or 'none'}"))
                        continue
                    text = _text(level)
                    if name in factors and text not in factors[name]:
                        problems.append(Problem(f"runs[{k}].{name}", f"unknown level {text!r}"
                                                f"{did_you_mean(text, factors[name])}; levels: "
                                                f"{', '.join(factors[name])}"))
                    chosen[str(name)] = text
                subset.append(chosen)
    name = data.get("name")
    if name is not None and (not isinstance(name, str)
                             or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name)):
        problems.append(Problem("name", "expected a folder name: letters, digits, '.', '_' "
                                "and '-'"))
    if problems:
        raise InputError(path, problems)
    return Design(scenarios=scenarios, seeds=seeds, factors=factors, agents=agents,
                  settings=dict(settings), subset=subset, name=name, source=path)


def check_factor_name(name: str) -> str | None:
    """Why `name` is not a factor a design can vary (None: it is)."""
    if name.startswith(AGENT_PREFIX) and len(name) > len(AGENT_PREFIX):
        return None
    if name in SETTING_FACTORS:
        return None
    if name in ("scenario", "seed"):
        return (f"{name} is not listed under factors: give the scenarios under scenarios and "
                "the seeds under seeds")
    known = [*SETTING_FACTORS, "agent:PARTY"]
    return (f"unknown factor{did_you_mean(name, [*SETTING_FACTORS, 'agent:' + name])}; "
            f"expected one of: {', '.join(known)}")


# --------------------------------------------------------------------------- cells


def cells(design: Design, scenarios: Sequence[tuple[Path, str]]) -> list[Cell]:
    """Every cell of the design (scenario x each factor's levels), or the listed subset, in
    order: scenarios first, then each factor's levels in the design's order."""
    names = list(design.factors)
    out: list[Cell] = []
    for path, sid in scenarios:
        for combo in itertools.product(*(design.factors[n] for n in names)):
            levels = {"scenario": sid, **dict(zip(names, combo, strict=True))}
            if design.subset is not None and not any(
                    all(levels.get(k) == v for k, v in chosen.items())
                    for chosen in design.subset):
                continue
            out.append(Cell(scenario=path, scenario_id=sid, levels=levels))
    if not out:
        raise InputError(design.source or "detente sweep",
                         [Problem("runs", "no cell of the design matches the listed runs")])
    return out


def design_identity(design: Design, hashes: Mapping[str, str],
                    teams: Mapping[str, Any]) -> str:
    """A name that is the same whenever the same design is asked for again."""
    identity = {"scenarios": dict(sorted(hashes.items())), "seeds": design.seeds,
                "factors": design.factors, "subset": design.subset,
                "settings": {k: v for k, v in sorted(design.settings.items())
                             if k not in ("base_url",)},
                "teams": teams}
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode())
    return f"sweep-{digest.hexdigest()[:10]}"


def protocol_variant(bundle_path: Path, scenario_id: str, protocol: str, folder: Path) -> Path:
    """A variant of the scenario with another protocol, written into `folder` (once)."""
    folder.mkdir(parents=True, exist_ok=True)
    safe = re.sub(r"[^A-Za-z0-9_]+", "_", protocol)
    path = folder / f"{scenario_id}__{safe}.yaml"
    parent = os.path.relpath(bundle_path.resolve(), folder.resolve())
    text = (f"# Written by detente sweep: {scenario_id} played under the {protocol} protocol.\n"
            f"extends: {json.dumps(parent)}\nid: {scenario_id}__{safe}\n"
            f"variant_of: {scenario_id}\nprotocol: {json.dumps(protocol)}\n")
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")
    return path


def scripted_note(manifest: Any) -> str | None:
    """What a design's sweep says when some cells have every seat scripted: their seeds (and
    their levels of LLM settings) change nothing, so their runs repeat one run."""
    from detente.comparison import all_scripted

    scripted = [k for k, team in manifest.agents.items() if all_scripted(team.values())]
    if not scripted:
        return None
    settings = [f for f in manifest.factors if f in ("model", "temperature", "assist")]
    changes = "seeds" + (f" and levels of {', '.join(settings)}" if settings else "")
    return (f"{len(scripted)} of {len(manifest.agents)} cells have every seat scripted: their "
            f"{changes} change nothing, so their runs repeat one run (compare and leaderboard "
            "count such copies once)")
