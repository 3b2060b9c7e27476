"""Prose tied to numbers: a brief's option links against the scenario it plays in.

A brief's positions may name options of their issue that the party `prefers`, `accepts` or
`rejects`. Against a scenario these links are checked in two steps:

- `link_problems` (run by `load_bundle`, so every command refuses it): a linked id that is not
  an option of the position's issue. A position on an issue the scenario does not stage (a
  brief serves several scenarios) is not checked against it.
- `contradictions` (run by `detente validate`, which exits 2 on any): the party's own numbers
  say otherwise than its brief. In one issue, a rejected option that scores at or above an
  option the brief prefers or accepts, or an accepted option that scores above a preferred one;
  and a rejected option that lies in the zone of agreement in a package the party itself would
  rationally accept (at or above its walk-away value, none of its red lines broken). The second
  means the numbers let the party accept what its brief says it refuses: make the option a red
  line, lower its utility until no such package clears the walk-away value, or soften the prose.
  Under unanimity of the required parties every zone package is rationally accepted by every
  required party, so this is "in the zone without being a red line"; under a rule that does not
  need the party (a bilateral variant) only the zone packages it would vote for count.

Contradictions are errors, not warnings: a brief whose prose and numbers disagree makes an
experiment whose agents receive two different parties, and the shipped files pass without any.
`analyze` and `run` do not look for them (it takes a pass over the whole package space).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from detente.briefs import LINKS, Brief
from detente.errors import Problem
from detente.scenario import Scenario

if TYPE_CHECKING:
    from detente.loading import ScenarioBundle

DEFAULT_CHUNK = 1 << 16


def link_problems(scenario: Scenario, brief: Brief) -> list[Problem]:
    """Option ids a brief's positions name that the position's issue (in this scenario) lacks."""
    issues = {i.id: i for i in scenario.issues}
    problems: list[Problem] = []
    for k, position in enumerate(brief.positions):
        issue = issues.get(position.issue)
        if issue is None:
            continue
        known = issue.option_ids()
        for field in LINKS:
            for j, option in enumerate(getattr(position, field)):
                if option not in known:
                    problems.append(Problem(
                        f"positions[{k}].{field}[{j}]",
                        f"unknown option '{option}' of issue '{issue.id}' in scenario "
                        f"'{scenario.id}'; expected one of: {', '.join(known)}"))
    return problems


@dataclass(frozen=True)
class _Link:
    field: str
    option: str
    where: str
    """`positions[k].field[j]`."""


def _links(brief: Brief, issue_id: str, known: list[str]) -> list[_Link]:
    return [
        _Link(field, option, f"positions[{k}].{field}[{j}]")
        for k, position in enumerate(brief.positions) if position.issue == issue_id
        for field in LINKS
        for j, option in enumerate(getattr(position, field))
        if option in known
    ]


_VERB = {"prefers": "prefers", "accepts": "accepts", "rejects": "rejects"}
_RANK = {"prefers": 0, "accepts": 1, "rejects": 2}
_RULE = {
    "accepts": "an option the brief accepts must not score above one it prefers",
    "rejects": "an option the brief rejects must score below every one it prefers or accepts",
}


def contradictions(
    bundle: ScenarioBundle, *, chunk_size: int = DEFAULT_CHUNK
) -> list[tuple[str, Problem]]:
    """Every contradiction between the bundle's briefs and its scenario, as (scenario file,
    problem naming the brief file and position)."""
    scenario = bundle.scenario
    scenario_file = str(bundle.path)
    agents_dir = (bundle.path.parent / scenario.agents_dir).resolve()
    out: list[tuple[str, Problem]] = []
    rejected: list[tuple[str, int, str, _Link, str]] = []
    """(party, issue index, issue id, link, brief file) of every rejected option to test."""
    for party in scenario.voters:
        brief = bundle.briefs.get(party)
        if brief is None:
            continue
        prefs = scenario.preferences[party]
        brief_file = str(agents_dir / f"{party}.yaml")
        for k, issue in enumerate(scenario.issues):
            table = prefs.utilities[issue.id]
            links = _links(brief, issue.id, issue.option_ids())
            for low in links:
                for high in links:
                    if _RANK[high.field] >= _RANK[low.field]:
                        continue
                    strict = low.field == "accepts"  # accepts vs prefers: ties are fine
                    lo, hi = table[low.option], table[high.option]
                    if lo > hi or (not strict and lo >= hi):
                        out.append((scenario_file, Problem(
                            f"preferences.{party}.utilities.{issue.id}",
                            f"contradicts {brief_file} {low.where}: the brief {low.field} "
                            f"'{low.option}' ({lo:g} here) but {_VERB[high.field]} "
                            f"'{high.option}' ({high.where}, {hi:g} here); {_RULE[low.field]}: "
                            "change the utilities or the prose")))
            rejected += [(party, k, issue.id, link, brief_file)
                         for link in links if link.field == "rejects"]
    if rejected:
        out += _rejected_in_zone(bundle, rejected, chunk_size)
    return out


def _rejected_in_zone(
    bundle: ScenarioBundle, rejected: list[tuple[str, int, str, _Link, str]], chunk_size: int
) -> list[tuple[str, Problem]]:
    # Here, not at the top: every load checks links (above), only validate needs numpy.
    import numpy as np

    from detente.analysis import zone_of_agreement
    from detente.space import PackageSpace

    scenario = bundle.scenario
    space = PackageSpace(scenario)
    counts = np.zeros(len(rejected), dtype=np.int64)
    examples = np.full(len(rejected), -1, dtype=np.int64)
    option_index = [space.option_ids[k].index(link.option) for _, k, _, link, _ in rejected]
    voter = [space.voters.index(party) for party, *_ in rejected]
    for block in space.blocks(chunk_size):
        zone = zone_of_agreement(space, block.rational)
        if not zone.any():
            continue
        for r, (_, k, _, _, _) in enumerate(rejected):
            hit = zone & block.rational[:, voter[r]] & (block.index(k) == option_index[r])
            n = int(hit.sum())
            if n:
                counts[r] += n
                if examples[r] < 0:
                    examples[r] = block.start + int(np.argmax(hit))
    out: list[tuple[str, Problem]] = []
    for r, (party, _, issue_id, link, brief_file) in enumerate(rejected):
        if not counts[r]:
            continue
        example = space.package_at(int(examples[r])).describe()
        out.append((str(bundle.path), Problem(
            f"preferences.{party}",
            f"contradicts {brief_file} {link.where}: the brief rejects '{link.option}' "
            f"({issue_id}), yet {counts[r]:,} package(s) of the zone of agreement settle "
            f"{issue_id} on it and {party} would rationally accept them (e.g. {example}): "
            f"make it a red line, lower preferences.{party}.utilities.{issue_id}."
            f"{link.option}, or change the prose")))
    return out
