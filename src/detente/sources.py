"""Where each claim of a scenario and its briefs comes from: tags, their checks, their counts.

Every claim carries one source tag (`detente.scenario.Source`):

- `article/<section>`: stated in that section of the cited text; the section must be one of the
  scenario's `source.sections` (a brief alone: its own `source.sections`, when it lists them);
- `inference`: drawn from the cited text without being stated there; needs a `basis:` that
  paraphrases the sentence it is drawn from;
- `background`: public knowledge about the parties at the scenario's date;
- `assumption`: chosen by the modeller.

Claims that carry a tag: issues, options, numeric terms, red lines, each voting party's
walk-away value (`reservation_source`), incentives, events during the talks, brief positions and
personas (one tag each). Utilities
and weights carry none: they are assumptions by definition and are counted as such.

`scenario_problems` and `brief_problems` report a missing tag, an `inference` without a basis and
an unknown section, one `Problem` per claim with its field path; `load_bundle` and `load_brief`
refuse a file that has any. `count_sources` tallies the tags for `detente sources`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from detente.briefs import LINKS, Brief
from detente.errors import InputError, Problem
from detente.scenario import Scenario, SourceRef

TAGS = ("article", "inference", "background", "assumption")
"""Tag kinds, from the cited text's own words to the modeller's choice."""

ARTICLE = "article/"

EXPECTED = ("expected `article/<section>`, `inference` (with a `basis`), `background` or "
            "`assumption`")


def tag_kind(source: str) -> str:
    """`article` for any `article/<section>`, otherwise the tag itself."""
    return "article" if source.startswith(ARTICLE) else source


@dataclass(frozen=True)
class Claim:
    """One tagged claim: where it sits, whose it is, and the tag it rests on."""

    file: str
    path: str
    """Field path of the claim's object in its file (`preferences.us.red_lines[0]`)."""
    tag_field: str
    """Name of the field holding the tag (`source`, `reservation_source`)."""
    basis_field: str
    kind: str
    """What the claim is: issue, option, term, red line, reservation, position, persona."""
    owner: str
    """The party the claim belongs to, or '' for the scenario's issues, options and terms."""
    source: str | None
    basis: str | None
    identity: tuple[object, ...]
    """What makes two claims the same one across files (a variant repeats its base's claims)."""


# --------------------------------------------------------------------------- collecting


def _tagged(obj: BaseModel) -> tuple[str | None, str | None]:
    return getattr(obj, "source", None), getattr(obj, "basis", None)


def scenario_claims(scenario: Scenario, file: Path | str) -> list[Claim]:
    """Every tagged claim of a scenario, in file order."""
    f = str(file)
    claims: list[Claim] = []

    def add(path: str, kind: str, owner: str, obj: BaseModel, *key: object) -> None:
        source, basis = _tagged(obj)
        claims.append(Claim(f, path, "source", "basis", kind, owner, source, basis,
                            (kind, owner, *key, source, basis)))

    for i, issue in enumerate(scenario.issues):
        add(f"issues[{i}]", "issue", "", issue, issue.id, issue.label)
        for k, option in enumerate(issue.options):
            add(f"issues[{i}].options[{k}]", "option", "", option, issue.id, option.id,
                option.description)
    for i, term in enumerate(scenario.terms):
        add(f"terms[{i}]", "term", "", term, term.id, term.min, term.max)
    for party, prefs in scenario.preferences.items():
        where = f"preferences.{party}"
        for k, line in enumerate(prefs.red_lines):
            add(f"{where}.red_lines[{k}]", "red line", party, line,
                line.model_dump_json(exclude={"source", "basis"}))
        claims.append(Claim(
            f, where, "reservation_source", "reservation_basis", "reservation", party,
            prefs.reservation_source, prefs.reservation_basis,
            ("reservation", party, prefs.reservation_utility, prefs.reservation_source),
        ))
    for party, incentive in scenario.incentives.items():
        add(f"incentives.{party}", "incentive", party, incentive, incentive.kind,
            incentive.target)
    for k, event in enumerate(scenario.events):
        owner = event.change.party if event.change is not None else ""
        add(f"events[{k}]", "event", owner, event, event.id, event.round, event.text)
    return claims


def brief_claims(brief: Brief, file: Path | str) -> list[Claim]:
    """The persona and every position of a brief."""
    f = str(file)
    owner = brief.id
    key = str(Path(file).resolve())
    claims = [Claim(f, "persona", "source", "basis", "persona", owner, *_tagged(brief.persona),
                    ("persona", key))]
    for k, position in enumerate(brief.positions):
        claims.append(Claim(f, f"positions[{k}]", "source", "basis", "position", owner,
                            *_tagged(position), ("position", key, k)))
    return claims


# --------------------------------------------------------------------------- checking


def claim_problems(
    claims: Iterable[Claim], sections: Sequence[str] | None, cited: str
) -> list[Problem]:
    """A missing tag, an inference without basis, an `article/<section>` not in `sections`.

    `sections` None skips the section check; `cited` says whose section list it is.
    """
    problems: list[Problem] = []
    for claim in claims:
        tag_path = f"{claim.path}.{claim.tag_field}" if claim.path else claim.tag_field
        basis_path = f"{claim.path}.{claim.basis_field}" if claim.path else claim.basis_field
        if claim.source is None:
            problems.append(Problem(tag_path, f"missing source tag: {EXPECTED}"))
        elif claim.source == "inference" and not (claim.basis or "").strip():
            problems.append(Problem(basis_path, "an `inference` needs a `basis`: the sentence "
                                    "of the cited text it is drawn from, in paraphrase"))
        elif claim.source.startswith(ARTICLE) and sections is not None:
            section = claim.source.removeprefix(ARTICLE)
            if not sections:
                problems.append(Problem(tag_path, f"'{claim.source}' names a section, but "
                                        f"{cited} lists no `sections`"))
            elif section not in sections:
                problems.append(Problem(tag_path, f"unknown section '{section}' of the cited "
                                        f"text; expected one of the sections {cited} lists: "
                                        f"{', '.join(sections)}"))
    return problems


def scenario_problems(scenario: Scenario, file: Path | str) -> list[Problem]:
    """Source-tag problems of a scenario's own claims, against its `source.sections`."""
    sections = scenario.source.sections if scenario.source is not None else []
    cited = ("the scenario's `source`" if scenario.source is not None
             else "the scenario (which has no `source`)")
    return claim_problems(scenario_claims(scenario, file), sections, cited)


def brief_problems(brief: Brief) -> list[Problem]:
    """Problems a brief has on its own: tags, and links that contradict each other.

    Sections are checked against the brief's `source.sections` when it lists them; in a bundle,
    `bundle_problems` checks them against the scenario's.
    """
    sections = brief.source.sections or None
    problems = claim_problems(brief_claims(brief, ""), sections, "the brief's `source`")
    problems += _link_problems(brief)
    return problems


def _link_problems(brief: Brief) -> list[Problem]:
    problems: list[Problem] = []
    placed: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for k, position in enumerate(brief.positions):
        for field in LINKS:
            ids = getattr(position, field)
            if ids and position.issue == "general":
                problems.append(Problem(f"positions[{k}].{field}", "a `general` position names "
                                        "no options: links name options of the position's "
                                        "issue"))
                continue
            for j, option in enumerate(ids):
                placed.setdefault((position.issue, option), []).append(
                    (field, f"positions[{k}].{field}[{j}]"))
    for (issue, option), where in placed.items():
        fields = {field for field, _ in where}
        if len(fields) > 1:
            first, *rest = where
            problems.append(Problem(rest[-1][1], f"option '{option}' of issue '{issue}' is "
                                    f"both {' and '.join(f for f in LINKS if f in fields)} "
                                    f"(see {first[1]})"))
    return problems


def bundle_problems(
    scenario: Scenario, briefs: dict[str, tuple[Path, Brief]]
) -> list[tuple[str, Problem]]:
    """Source problems of the briefs within a scenario: sections against the scenario's list,
    and a brief that cites another text than the scenario. (Each brief's own tags were checked
    when it loaded.)"""
    out: list[tuple[str, Problem]] = []
    ref = scenario.source
    for _, (path, brief) in briefs.items():
        if ref is not None and _differs(ref, brief.source):
            out.append((str(path), Problem("source.title", f"the brief cites "
                        f"'{brief.source.title}', the scenario '{ref.title}': its "
                        "`article/...` tags would name another text's sections")))
            continue
        sections = ref.sections if ref is not None else []
        cited = ("the scenario's `source`" if ref is not None
                 else "the scenario (which has no `source`)")
        claims = [c for c in brief_claims(brief, path) if c.source and c.source.startswith(ARTICLE)]
        out += [(str(path), p) for p in claim_problems(claims, sections, cited)]
    return out


def _differs(a: SourceRef, b: SourceRef) -> bool:
    def key(ref: SourceRef) -> tuple[str, str, str]:
        return ref.title.strip(), ref.author.strip(), ref.date

    return key(a) != key(b)


class InputErrors(InputError):
    """Problems in several files at once (a scenario and its briefs): one line per problem."""

    def __init__(self, located: Sequence[tuple[str, Problem]]) -> None:
        super().__init__(located[0][0], [p for _, p in located])
        self.located = list(located)
        self.args = ("\n".join(f"{file}: {p}" for file, p in self.located),)


def raise_located(located: Sequence[tuple[str, Problem]]) -> None:
    """Raise the problems as one `InputError` (several files: `InputErrors`), if any."""
    if not located:
        return
    files = {file for file, _ in located}
    if len(files) == 1:
        raise InputError(located[0][0], [p for _, p in located])
    raise InputErrors(located)


# --------------------------------------------------------------------------- counting

KINDS = ("position", "persona", "red line", "reservation", "option named", "incentive", "event",
         "utility", "weight")
"""What `count_sources` tallies per party (`event`: a change of its walk-away during the talks);
`utility` and `weight` are always `assumption`."""
SCENARIO_KINDS = ("issue", "option", "term", "event")


class PartyCounts(BaseModel):
    """How many of a party's claims rest on each tag, per kind of claim and in total."""

    by_kind: dict[str, dict[str, int]]
    """kind -> tag -> count (kinds in `KINDS`, tags in `TAGS`)."""
    total: dict[str, int]
    """tag -> count over every kind, utilities and weights included."""
    prose_total: dict[str, int]
    """tag -> count without utilities and weights (which are all assumptions)."""


class SourceCounts(BaseModel):
    """`detente sources`: distinct claims across the files, by party and tag."""

    files: list[str]
    parties: dict[str, PartyCounts]
    scenario: dict[str, dict[str, int]]
    """The scenarios' own issues, options and terms: kind -> tag -> count."""
    total: dict[str, int]
    """tag -> count over every party and the scenario-wide claims."""
    prose_total: dict[str, int]


@dataclass
class _Tally:
    seen: set[tuple[object, ...]]
    counts: dict[str, dict[str, dict[str, int]]]

    def add(self, owner: str, kind: str, tag: str, identity: tuple[object, ...]) -> None:
        if identity in self.seen:
            return
        self.seen.add(identity)
        by_kind = self.counts.setdefault(owner, {})
        row = by_kind.setdefault(kind, dict.fromkeys(TAGS, 0))
        row[tag] = row.get(tag, 0) + 1


def count_sources(
    scenarios: Sequence[tuple[Path, Scenario, dict[str, tuple[Path, Brief]]]],
    briefs: Sequence[tuple[Path, Brief]],
) -> SourceCounts:
    """Tally distinct claims: a claim repeated by a variant, or a brief reached from several
    scenarios, counts once.

    Per party: its brief's positions and persona; its red lines and walk-away value in each
    scenario; the options its positions name (`prefers`, `accepts`, `rejects`), by the tag the
    scenario gives the option; and its utilities and weights, one claim per number, all
    `assumption`; its incentive and the changes of its walk-away during the talks.
    Scenario-wide: issues, options, numeric terms and the other events during the talks.
    """
    tally = _Tally(set(), {})
    files: list[str] = []
    all_briefs: list[tuple[Path, Brief]] = list(briefs)
    for path, scenario, party_briefs in scenarios:
        files.append(str(path))
        all_briefs += list(party_briefs.values())
        for claim in scenario_claims(scenario, path):
            tally.add(claim.owner, claim.kind, tag_kind(claim.source or "assumption"),
                      claim.identity)
        for party, prefs in scenario.preferences.items():
            for issue, table in prefs.utilities.items():
                for option, value in table.items():
                    tally.add(party, "utility", "assumption",
                              ("utility", party, issue, option, value))
            for term, points in prefs.term_utilities.items():
                for x, u in points:
                    tally.add(party, "utility", "assumption", ("utility", party, term, x, u))
            for dim, weight in prefs.weights.items():
                tally.add(party, "weight", "assumption", ("weight", party, dim, weight))
        options = {(i.id, o.id): o for i in scenario.issues for o in i.options}
        for party, (_, brief) in party_briefs.items():
            for position in brief.positions:
                for field in LINKS:
                    for option_id in getattr(position, field):
                        named = options.get((position.issue, option_id))
                        if named is None:
                            continue
                        tag = tag_kind(named.source or "assumption")
                        tally.add(party, "option named", tag,
                                  ("option named", party, position.issue, option_id, tag))
    for path, brief in all_briefs:
        if str(path) not in files:
            files.append(str(path))
        for claim in brief_claims(brief, path):
            tally.add(claim.owner, claim.kind, tag_kind(claim.source or "assumption"),
                      claim.identity)

    def total(by_kind: dict[str, dict[str, int]], skip: Iterable[str] = ()) -> dict[str, int]:
        out = dict.fromkeys(TAGS, 0)
        for kind, row in by_kind.items():
            if kind in skip:
                continue
            for tag, n in row.items():
                out[tag] += n
        return out

    numbers = ("utility", "weight")
    parties = {}
    for owner, by_kind in tally.counts.items():
        if owner == "":
            continue
        ordered = {k: by_kind.get(k, dict.fromkeys(TAGS, 0)) for k in KINDS}
        parties[owner] = PartyCounts(by_kind=ordered, total=total(ordered),
                                     prose_total=total(ordered, numbers))
    scenario_wide = {k: tally.counts.get("", {}).get(k, dict.fromkeys(TAGS, 0))
                     for k in SCENARIO_KINDS}
    grand = total(scenario_wide)
    prose = dict(grand)
    for counts in parties.values():
        for tag in TAGS:
            grand[tag] += counts.total[tag]
            prose[tag] += counts.prose_total[tag]
    return SourceCounts(files=files, parties=parties, scenario=scenario_wide, total=grand,
                        prose_total=prose)


def iter_yaml(paths: Iterable[Path]) -> Iterator[Path]:
    """Files as given; folders searched recursively for .yaml and .yml files, sorted, skipping
    hidden folders and files (`.git`, `.venv`)."""
    for path in paths:
        if path.is_dir():
            yield from sorted(
                p for p in path.rglob("*")
                if p.suffix in (".yaml", ".yml") and p.is_file()
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
        else:
            yield path
