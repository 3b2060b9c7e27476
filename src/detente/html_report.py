"""One self-contained HTML page for one or many runs: contents, findings, comparison, charts,
transcripts.

The page needs no network: CSS and JavaScript are inline, charts are PNG data URIs, and a
Content-Security-Policy forbids loading anything else. Every text from a run (statements come
from models) is escaped. It opens with a contents list and the findings; transcripts are
collapsed (`<details>`, one open at a time; a contents link or the run filter opens one), and a
run identical to another (the same events, see `detente.comparison`) is named, not repeated.
Transcripts are lists of `.message` elements whose data attributes (`data-run`, `data-party`,
`data-round`, `data-issue` (space-separated dimension ids), `data-kind`, `data-visibility`
(`public` or `private`)) drive the filters in `#filters`.

Stable hooks: `#summary`, `#contents`, `#findings`, `#comparison` (tables
`#comparison-variants`, `#comparison-parties`, `#comparison-tests`; a column for every metric of
`detente.metrics`, its cells `td[data-metric]` named by the metric's key), `#charts`,
`img.chart[data-chart]`, `#transcripts`, `#filters`, `article.run[data-run]` (a copy:
`[data-copy-of]`), `details.transcript`, `.message`, `table.package`, `#shown-count`. Nothing
here prints.
"""

from __future__ import annotations

import base64
import gzip
import html
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure

from detente import __version__
from detente.comparison import (
    MIN_TEST_RUNS,
    SIGNIFICANT,
    Comparison,
    VariantStats,
    agents_label,
    findings,
    tested_metrics,
)
from detente.events import (
    ErrorEvent,
    Inject,
    Outcome,
    Proposal,
    Response,
    Statement,
    Tally,
)
from detente.metrics import (
    MeanCI,
    Metric,
    Proportion,
    Ratio,
    RoundsStats,
    Stat,
    format_diff,
    party_metrics,
    shown_metrics,
    variant_metrics,
)
from detente.plots import (
    AGREED_OPTIONS_PNG,
    RATES_PNG,
    comparison_figures,
    comparison_of,
    figure_alt,
    figure_png,
    run_utility_figure,
)
from detente.runs import RunFolder
from detente.scenario import Package, Scenario

RECORD = "record"
"""The `data-party` of tallies, outcomes and errors: the negotiation's record, not a party."""

CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
       "script-src 'unsafe-inline'; base-uri 'none'; form-action 'none'")


def e(value: object) -> str:
    """`value` as escaped HTML text (quotes too, so it is safe in attributes)."""
    return html.escape(str(value), quote=True)


# --------------------------------------------------------------------------- messages


@dataclass
class Message:
    """One entry of a transcript, as rendered."""

    run: str
    party: str
    round: int
    kind: str
    visibility: str
    issues: list[str]
    title: str
    audience: str
    """Who could see it, in words."""
    body: str
    """Already-escaped HTML."""

    def render(self) -> str:
        round_label = "opening" if self.round == 0 else f"round {self.round}"
        # Public is the rule: only private messages (and the record) name their audience.
        audience = ("" if self.visibility == "public" and self.party != RECORD else
                    f'<span class="badge audience {e(self.visibility)}">{e(self.audience)}</span>')
        return (
            f'<li class="message {e(self.visibility)}" data-run="{e(self.run)}" '
            f'data-party="{e(self.party)}" data-round="{self.round}" '
            f'data-issue="{e(" ".join(self.issues))}" data-kind="{e(self.kind)}" '
            f'data-visibility="{e(self.visibility)}">'
            f'<div class="meta"><span class="speaker">{e(self.title)}</span>'
            f'<span class="badge round">{e(round_label)}</span>'
            + (f'<span class="badge kind">{e(self.kind.replace("_", " "))}</span>'
               if self.kind != "opening" else "")
            + f"{audience}</div>{self.body}</li>"
        )


class _Names:
    """Display names of parties and labels of issues, terms and options of one scenario."""

    def __init__(self, run: RunFolder) -> None:
        self.scenario: Scenario = run.scenario
        self.parties = {p: (b.display_name if (b := run.bundle.briefs.get(p)) else p)
                        for p in run.scenario.parties}
        self.dims: dict[str, str] = {i.id: i.label for i in run.scenario.issues}
        self.dims.update({t.id: t.label for t in run.scenario.terms})
        self._patterns = {dim: _mention_pattern(self.scenario, dim) for dim in self.dims}

    def party(self, party: str) -> str:
        name = self.parties.get(party, party)
        return name if name == party else f"{name} ({party})"

    def option(self, issue_id: str, value: str | float | None) -> str:
        if value is None:
            return ""
        for issue in self.scenario.issues:
            if issue.id == issue_id:
                return next((o.label for o in issue.options if o.id == value), str(value))
        for term in self.scenario.terms:
            if term.id == issue_id:
                number = value if isinstance(value, float | int) else None
                shown = f"{number:g}" if number is not None else str(value)
                return f"{shown} {term.unit}"
        return str(value)

    def mentioned(self, text: str) -> list[str]:
        """Dimensions whose label, option labels or (long enough) id the text mentions."""
        return [dim for dim, pattern in self._patterns.items() if pattern.search(text)]


def _mention_pattern(scenario: Scenario, dim: str) -> re.Pattern[str]:
    words: list[str] = []
    for issue in scenario.issues:
        if issue.id == dim:
            words += [issue.label] + [o.label for o in issue.options if len(o.label) > 3]
    for term in scenario.terms:
        if term.id == dim:
            words.append(term.label)
    if len(dim) > 2:
        words += [dim, dim.replace("_", " ")]
    alternatives = "|".join(re.escape(w) for w in sorted(set(words), key=len, reverse=True) if w)
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)" if alternatives else r"(?!x)x",
                      re.IGNORECASE)


def package_table(names: _Names, package: Package) -> str:
    """A package as a table of issue (and term) -> option label."""
    rows = []
    for issue in names.scenario.issues:
        chosen = package.options.get(issue.id)
        rows.append(f'<tr data-issue="{e(issue.id)}"><th scope="row">{e(issue.label)}</th>'
                    f"<td>{e(names.option(issue.id, chosen))} "
                    f'<code>{e(chosen if chosen is not None else "-")}</code></td></tr>')
    for term in names.scenario.terms:
        value = package.terms.get(term.id)
        shown = names.option(term.id, value) if value is not None else "-"
        rows.append(f'<tr data-issue="{e(term.id)}"><th scope="row">{e(term.label)}</th>'
                    f"<td>{e(shown)}</td></tr>")
    return ('<table class="package"><thead><tr><th>issue</th><th>option</th></tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>")


def _text(text: str, empty: str = "(nothing said)") -> str:
    shown = text.strip()
    return f'<div class="text">{e(shown) if shown else f"<em>{e(empty)}</em>"}</div>'


def messages_of(run: RunFolder) -> list[Message]:
    """The transcript of a run as messages, in log order (a response's private rationale right
    after its public statement)."""
    names = _Names(run)
    run_id = run.header.run_id
    dims = list(names.dims)
    last_round = max((getattr(ev, "round", 0) or 0 for ev in run.events), default=0)
    out: list[Message] = []

    def add(*, party: str, round: int, kind: str, visibility: str, issues: list[str],
            title: str, audience: str, body: str) -> None:
        out.append(Message(run=run_id, party=party, round=round, kind=kind,
                           visibility=visibility, issues=issues, title=title, audience=audience,
                           body=body))

    def seen_by(visible_to: Sequence[str] | str) -> tuple[str, str]:
        """(visibility, audience in words) of an event seen by `visible_to`."""
        if visible_to == "all" or isinstance(visible_to, str):
            return "public", "public: every party"
        return "private", "private: seen by " + " and ".join(names.party(p) for p in visible_to)

    for ev in run.events:
        if isinstance(ev, Inject):
            visibility, audience = seen_by(ev.visible_to)
            change = "" if ev.change is None else (
                f'<div class="text"><em>{e(names.party(ev.change.party))}\'s walk-away utility '
                f"is now {ev.change.reservation_utility:g} (only its agent is told the number)."
                "</em></div>")
            add(party=RECORD, round=ev.round, kind="event", visibility=visibility,
                issues=names.mentioned(ev.text),
                title=f"Event: {ev.kind.replace('_', '-')}", audience=audience,
                body=_text(ev.text) + change)
        elif isinstance(ev, Statement):
            flag = ' <span class="badge invalid">invalid response</span>' if ev.invalid else ""
            visibility, audience = seen_by(ev.visible_to)
            add(party=ev.speaker, round=ev.round, kind=ev.kind, visibility=visibility,
                issues=names.mentioned(ev.text), title=names.party(ev.speaker),
                audience=audience, body=_text(ev.text) + flag)
        elif isinstance(ev, Proposal):
            flag = ' <span class="badge invalid">invalid proposal</span>' if ev.invalid else ""
            visibility, audience = seen_by(ev.visible_to)
            add(party=ev.speaker, round=ev.round, kind="proposal", visibility=visibility,
                issues=dims, title=f"{names.party(ev.speaker)} tables a package",
                audience=audience,
                body=package_table(names, ev.package) + _text(ev.rationale) + flag)
        elif isinstance(ev, Response):
            objected = [d for d, s in ev.stances.items() if s.stance == "object"]
            vote = "invalid response (counted as reject)" if ev.invalid else ev.vote
            stances = "".join(
                f'<li data-issue="{e(d)}">{e(names.dims.get(d, d))}: objects'
                + (f", wants {e(names.option(d, s.wants))}" if s.wants is not None else "")
                + "</li>"
                for d, s in ev.stances.items() if s.stance == "object"
            )
            body = (f'<div class="vote {e(ev.vote)}">votes <strong>{e(vote)}</strong></div>'
                    + (f'<ul class="stances">{stances}</ul>' if stances else "")
                    + _text(ev.statement))
            visibility, audience = seen_by(ev.visible_to)
            add(party=ev.speaker, round=ev.round, kind="response", visibility=visibility,
                issues=_union(objected, names.mentioned(ev.statement)),
                title=names.party(ev.speaker), audience=audience, body=body)
            private = "; ".join(ev.errors) if ev.invalid else ev.private_rationale
            add(party=ev.speaker, round=ev.round, kind="private_rationale",
                visibility="private", issues=_union(objected, names.mentioned(private)),
                title=names.party(ev.speaker),
                audience=f"private: seen by {names.party(ev.speaker)} only (never shown to "
                         "other agents)",
                body=_text(private))
        elif isinstance(ev, Tally):
            accepts = sum(v == "accept" for v in ev.votes.values())
            verdict = "passes" if ev.accepted else "fails"
            votes = "".join(f'<li class="{e(v)}">{e(names.party(p))}: {e(v)}</li>'
                            for p, v in ev.votes.items())
            visibility, audience = seen_by(ev.visible_to)
            add(party=RECORD, round=ev.round, kind="tally", visibility=visibility,
                issues=dims, title="Tally", audience=audience,
                body=f'<div class="text">The package <strong>{verdict}</strong> the decision '
                     f"rule ({accepts} of {len(ev.votes)} accept).</div>"
                     f'<ul class="votes">{votes}</ul>')
        elif isinstance(ev, Outcome):
            body = f'<div class="text"><strong>{e(ev.status.replace("_", " "))}</strong>: ' \
                   f"{e(ev.reason)}</div>"
            if ev.package is not None:
                body += package_table(names, ev.package)
            add(party=RECORD, round=ev.rounds or last_round, kind="outcome",
                visibility="public", issues=dims if ev.package is not None else [],
                title="Outcome", audience="public: every party", body=body)
        elif isinstance(ev, ErrorEvent):
            add(party=ev.speaker or RECORD, round=ev.round or 0, kind="error",
                visibility="public", issues=[], title=names.party(ev.speaker or "") or "Error",
                audience="run record", body=_text(ev.message))
    return out


def _union(*lists: Iterable[str]) -> list[str]:
    out: dict[str, None] = {}
    for items in lists:
        out.update(dict.fromkeys(items))
    return list(out)


# --------------------------------------------------------------------------- sections


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _chart(name: str, fig: Figure, caption: str) -> str:
    """A chart as an image at its natural size, its alt text naming its axes and legend."""
    png = figure_png(fig)
    return (f'<figure class="chart-figure"><img class="chart" data-chart="{e(name)}" '
            f'src="{_data_uri(png)}" alt="{e(figure_alt(fig))}">'
            f"<figcaption>{e(caption)}</figcaption></figure>")


RUN_CHART_CAPTION = ("Each voting party's utility of the package on the table, by round; dashed "
                     "lines are reservation utilities; a cross marks a package breaking that "
                     "party's own red line.")


def _header(title: str, contents: Sequence[tuple[str, str, Sequence[tuple[str, str]]]]) -> str:
    """The title and the contents list: (anchor, label, [(anchor, label)...]) per section."""
    items = []
    for anchor, label, children in contents:
        sub = "".join(f'<li><a href="#{e(a)}">{e(text)}</a></li>' for a, text in children)
        items.append(f'<li><a href="#{e(anchor)}">{e(label)}</a>'
                     + (f"<ol>{sub}</ol>" if sub else "") + "</li>")
    return (f'<header id="summary"><h1>{e(title)}</h1>'
            '<nav id="contents" aria-label="Contents"><h2>Contents</h2>'
            f"<ol>{''.join(items)}</ol></nav></header>")


def _what_was_run(runs: Sequence[RunFolder]) -> str:
    scenarios: dict[str, RunFolder] = {}
    for r in runs:
        scenarios.setdefault(r.bundle.content_hash, r)
    scenario_items = "".join(
        f"<li><strong>{e(r.scenario.title)}</strong> <code>{e(r.scenario.id)}</code> "
        f"({e(r.header.scenario_path)}, content hash <code>{e(r.bundle.content_hash[:12])}"
        "</code>)</li>"
        for r in scenarios.values()
    )
    outcomes = Counter(r.result.status for r in runs)
    agents = Counter(agents_label(r.header.agents) for r in runs)
    agent_items = "".join(
        f"<li>{e(label)}" + (f" ({n} run{'s' if n > 1 else ''})" if len(runs) > 1 else "")
        + "</li>" for label, n in agents.items())
    outcome_text = ", ".join(f"{n} {status.replace('_', ' ')}" for status, n in outcomes.items())
    return (
        '<dl class="what-was-run">'
        f"<dt>Scenario{'s' if len(scenarios) > 1 else ''}</dt><dd><ul>{scenario_items}</ul></dd>"
        f'<dt>Runs</dt><dd><span id="run-count">{len(runs)}</span> ({e(outcome_text)})</dd>'
        f"<dt>Agents</dt><dd><ul>{agent_items}</ul></dd>"
        f"<dt>Made by</dt><dd>detente {e(__version__)}</dd></dl>"
    )


def _run_findings(run: RunFolder) -> list[str]:
    """One run in a few sentences: its outcome, and whose red lines it breaks."""
    result = run.result
    out = [f"{result.status.replace('_', ' ').capitalize()} after "
           f"{result.rounds_played} round{'s' if result.rounds_played != 1 else ''}: "
           f"{result.reason}."]
    broken = {p: ids for p, ids in result.red_lines_broken.items() if ids}
    if result.status == "deal":
        out.append("Red lines broken: " + "; ".join(f"{p}'s {', '.join(ids)}"
                                                     for p, ids in broken.items()) + "."
                   if broken else "The deal breaks no party's red line.")
    out.append(f"Tokens: {result.total_tokens:,}.")
    return out


def _findings(items: Sequence[str], runs: Sequence[RunFolder]) -> str:
    warn = ("Identical runs", "Every agent is scripted")
    bullets = "".join(f'<li{" class=warning" if item.startswith(warn) else ""}>{e(item)}</li>'
                      for item in items)
    return (f'<section id="findings"><h2>Findings</h2><ul class="findings">{bullets}</ul>'
            f"{_what_was_run(runs)}</section>")


def _ci(stat: MeanCI | None, digits: int = 1, fmt: Callable[[float], str] | None = None) -> str:
    if stat is None:
        return '<span class="na">n/a</span>'
    show = fmt or (lambda x: f"{x:.{digits}f}")
    if show(stat.lo) == show(stat.mean) == show(stat.hi):
        return e(show(stat.mean))
    return (f"{e(show(stat.mean))} <span class=\"ci\">[{e(show(stat.lo))}, "
            f"{e(show(stat.hi))}]</span>")


def _rate(p: Proportion) -> str:
    return (f"{p.rate:.0%} <span class=\"ci\">[{p.lo:.0%}, {p.hi:.0%}]</span> "
            f"<span class=\"count\">({p.count}/{p.n})</span>")


def _p(value: float | None) -> str:
    if value is None:
        return '<span class="na">n/a</span>'
    cls = ' class="significant"' if value < SIGNIFICANT else ""
    return f"<span{cls}>{value:.3g}</span>"


def _runs_cell(g: VariantStats) -> str:
    runs = g.runs or g.n
    if runs == g.n:
        return str(runs)
    return (f'{runs} <span class="identical" title="identical runs (the same events) count '
            f'once">({g.n} distinct)</span>')


def _stat(stat: Stat | None, metric: Metric | None = None) -> str:
    """A metric's statistic as a cell (see `detente.metrics`: rates, means, mean and median,
    ratios), its numbers written by the metric's `fmt`."""
    fmt = metric.fmt if metric is not None else None
    if isinstance(stat, Proportion):
        return _rate(stat)
    if isinstance(stat, MeanCI):
        return _ci(stat, fmt=fmt)
    if isinstance(stat, RoundsStats):
        return f"mean {stat.mean:.1f}, median {stat.median:g}"
    if isinstance(stat, Ratio) and stat.value is not None:
        return e(fmt(stat.value) if fmt is not None else f"{stat.value:.1f}")
    return '<span class="na">n/a</span>'


def _notes(notes: Iterable[str]) -> str:
    text = " ".join(n for n in notes if n)
    return f'<p class="note">{e(text)}</p>' if text else ""


def _comparison(comparison: Comparison) -> str:
    """The comparison's tables, a column for every metric of `detente.metrics`."""
    whole = shown_metrics(variant_metrics(), lambda key: (g.stat(key) for g in comparison.groups))
    per_party = shown_metrics(party_metrics(), lambda key: (
        p.stat(key) for g in comparison.groups for p in g.parties.values()))
    variant_rows = []
    for g in comparison.groups:
        ref = ' <span class="badge">reference</span>' if g.variant == comparison.reference \
            else ""
        statuses = ", ".join(f"{n} {s.replace('_', ' ')}" for s, n in g.statuses.items())
        cells = "".join(f'<td data-metric="{e(m.key)}">{_stat(g.stat(m.key), m)}</td>'
                        for m in whole)
        variant_rows.append(
            f'<tr data-variant="{e(g.variant)}"><th scope="row">{e(g.variant)}{ref}</th>'
            f"<td>{_runs_cell(g)}</td><td>{e(statuses)}</td>{cells}"
            f"<td>{e(', '.join(g.agents))}</td></tr>")
    party_rows = []
    for g in comparison.groups:
        for party, stats in g.parties.items():
            broken = ", ".join(f"{line} {p.rate:.0%}" for line, p in stats.red_lines.items()
                               if p.count)
            cells = "".join(f'<td data-metric="{e(m.key)}">{_stat(stats.stat(m.key), m)}</td>'
                            for m in per_party)
            party_rows.append(
                f'<tr data-variant="{e(g.variant)}" data-party="{e(party)}">'
                f"<td>{e(g.variant)}</td><th scope=\"row\">{e(party)}</th>{cells}"
                f"<td>{e(broken) or 'none'}</td></tr>")
    tests = ""
    if comparison.tests:
        tested, tested_parties = tested_metrics(per_party=False), tested_metrics(per_party=True)
        test_rows = []
        for t in comparison.tests:
            if t.note is not None:
                test_rows.append(
                    f'<tr data-variant="{e(t.a)}" class="untested"><th scope="row">{e(t.a)} vs '
                    f'{e(t.b)}</th><td colspan="{len(tested) + 1}">{e(t.note)}</td></tr>')
                continue
            cells = "".join(
                f'<td data-metric="{e(m.key)}">{e(format_diff(m, mt.diff))} '
                f'(p={_p(mt.p_judged)})</td>'
                if (mt := t.metrics.get(m.key)) is not None else '<td class="na">n/a</td>'
                for m in tested)
            parties = "; ".join(
                f"{e(party)}: " + ", ".join(
                    f"{e(m.named_in_tests)} {e(format_diff(m, mt.diff))} "
                    f"(p={_p(mt.p_judged)})"
                    for m in tested_parties if (mt := pt.metrics.get(m.key)) is not None)
                for party, pt in t.parties.items()
            )
            test_rows.append(
                f'<tr data-variant="{e(t.a)}"><th scope="row">{e(t.a)} vs {e(t.b)}</th>'
                f"{cells}<td>{parties}</td></tr>")
        headers = "".join(f"<th>{e(m.label)}</th>" for m in tested)
        tests = (
            '<h3 id="comparison-tests-title">Tests against the reference</h3>'
            '<p class="note">Difference from the reference and p-value: Fisher\'s exact test '
            "for rates (differences in percentage points), Mann-Whitney U for means, over "
            "distinct runs; two-sided, "
            + ("Holm-corrected for the groups tested against the reference (each measure a "
               "family)" if comparison.correction == "holm" else
               "not corrected for multiple comparisons (one group tested)")
            + f"; in red: p &lt; {SIGNIFICANT}. A group needs {MIN_TEST_RUNS} distinct runs to "
            "be tested: identical runs are one sample.</p>"
            f'<table id="comparison-tests"><thead><tr><th>variant</th>{headers}'
            "<th>per party</th></tr></thead>"
            f"<tbody>{''.join(test_rows)}</tbody></table>")
    skipped = ""
    if comparison.skipped:
        skipped = ("<p class=\"note\">Not compared (unfinished or unreadable): "
                   + ", ".join(e(s.run_dir) for s in comparison.skipped) + "</p>")
    variant_headers = "".join(f'<th data-metric="{e(m.key)}">{e(m.label)}</th>' for m in whole)
    party_headers = "".join(f'<th data-metric="{e(m.key)}">{e(m.label)}</th>'
                            for m in per_party)
    return (
        '<section id="comparison"><h2>Comparison</h2>'
        '<p class="note">Finished runs grouped by variant; identical runs (the same events) '
        "count once, and every figure is over the distinct runs. 95% intervals (Wilson for "
        "rates, bootstrap for means; a mean without one: one run, or every run the same). A "
        "run without a deal scores every party at its reservation utility and breaks no red "
        "line.</p>"
        '<table id="comparison-variants"><thead><tr><th>variant</th><th>runs</th>'
        f"<th>outcomes</th>{variant_headers}<th>agents</th></tr></thead>"
        f"<tbody>{''.join(variant_rows)}</tbody></table>{_notes(m.note for m in whole)}"
        '<details class="parties"><summary>Per party: '
        + e(", ".join(m.label for m in per_party)) + '</summary><table '
        'id="comparison-parties"><thead><tr><th>variant</th><th>party</th>'
        f"{party_headers}<th>red lines broken</th></tr></thead>"
        f"<tbody>{''.join(party_rows)}</tbody></table>{_notes(m.note for m in per_party)}"
        f"</details>{tests}{skipped}</section>"
    )


def _filters(runs: Sequence[RunFolder], messages: Sequence[Message]) -> str:
    parties: dict[str, str] = {}
    dims: dict[str, str] = {}
    for r in runs:
        names = _Names(r)
        for p in r.scenario.parties:
            parties.setdefault(p, names.party(p))
        for d, label in names.dims.items():
            dims.setdefault(d, label)
    for m in messages:
        parties.setdefault(m.party, m.party)
    if any(m.party == RECORD for m in messages):
        parties[RECORD] = "record (events, tallies, outcome)"
    rounds = sorted({m.round for m in messages})
    party_boxes = "".join(
        f'<label><input type="checkbox" name="party" value="{e(p)}" checked> {e(label)}</label>'
        for p, label in parties.items())
    round_options = "".join(
        f'<option value="{r}">{"opening" if r == 0 else f"round {r}"}</option>' for r in rounds)
    issue_options = "".join(f'<option value="{e(d)}">{e(label)}</option>'
                            for d, label in dims.items())
    run_select = ""
    if len(runs) > 1:
        run_options = "".join(f'<option value="{e(r.header.run_id)}">{e(r.label)}</option>'
                              for r in runs)
        run_select = ('<label>Run <select id="filter-run"><option value="">all runs</option>'
                      f"{run_options}</select></label>")
    return (
        '<div id="filters" role="search">'
        '<fieldset class="parties"><legend>Party</legend>'
        f"{party_boxes}"
        '<button type="button" id="party-all">all</button>'
        '<button type="button" id="party-none">none</button></fieldset>'
        '<fieldset><legend>Round and issue</legend>'
        '<label>Round <select id="filter-round"><option value="">all rounds</option>'
        f"{round_options}</select></label>"
        '<label>Issue <select id="filter-issue"><option value="">all issues</option>'
        f"{issue_options}</select></label>{run_select}</fieldset>"
        '<fieldset><legend>Visibility</legend>'
        '<label><input type="checkbox" name="visibility" value="public" checked> public</label>'
        '<label><input type="checkbox" name="visibility" value="private" checked> private '
        "(caucus, private rationales)</label></fieldset>"
        f'<output id="shown-count">{len(messages)} of {len(messages)} messages shown</output>'
        "</div>"
    )


def _scores(run: RunFolder, names: _Names) -> str:
    rows = []
    for party, s in run.result.scores.parties.items():
        broken = ", ".join(b.id for b in s.red_lines_broken) or "none"
        rows.append(f'<tr data-party="{e(party)}"><th scope="row">{e(names.party(party))}</th>'
                    f"<td>{s.utility:.1f}</td><td>{s.reservation_utility:.1f}</td>"
                    f"<td>{s.surplus:+.1f}</td><td>{e(broken)}</td><td>{e(s.vote or '')}</td>"
                    "</tr>")
    deal = run.result.scores.deal
    distance = "n/a" if deal.distance_to_nash is None else f"{deal.distance_to_nash:.1f}"
    return (
        '<table class="scores"><thead><tr><th>party</th><th>utility</th><th>reservation</th>'
        "<th>surplus</th><th>red lines broken</th><th>vote</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
        f'<p class="note">Pareto-optimal: {"yes" if deal.pareto_optimal else "no"}; distance '
        f"to the Nash package {distance}; Gini {deal.gini:.3f}; tokens "
        f"{run.result.total_tokens:,}.</p>"
    )


def _run_heading(run: RunFolder) -> str:
    h = run.header
    status = run.result.status.replace("_", " ")
    return (f"<code>{e(h.scenario_id)}</code> seed {h.seed} · run <code>{e(h.run_id)}</code> · "
            f"{e(status)}")


def _run_article(run: RunFolder, messages: Sequence[Message], chart: Figure | None, *,
                 is_open: bool, copies: Sequence[RunFolder]) -> str:
    names = _Names(run)
    h = run.header
    incentives = run.result.incentives
    agents = "".join(
        f"<li>{e(names.party(p))}: {e(a.label())}"
        + (f" <em>(private incentive: {e(incentives[p].describe())}, told to it alone)</em>"
           if p in incentives else "") + "</li>" for p, a in h.agents.items())
    chart_html = _chart(f"utilities-{h.run_id}", chart, RUN_CHART_CAPTION) \
        if chart is not None else ""
    same = ""
    if copies:
        same = ('<p class="note identical">Identical runs (the same events), not repeated: '
                + ", ".join(f'<a href="#run-{e(c.header.run_id)}">seed {c.header.seed}, run '
                            f"<code>{e(c.header.run_id)}</code></a>" for c in copies) + ".</p>")
    count = f"{len(messages)} messages" + (f", {len(copies)} identical run"
                                           f"{'s' if len(copies) != 1 else ''}" if copies else "")
    return (
        f'<article class="run" id="run-{e(h.run_id)}" data-run="{e(h.run_id)}" '
        f'data-scenario="{e(h.scenario_id)}" data-status="{e(run.result.status)}">'
        f'<details class="transcript"{" open" if is_open else ""}><summary><h3>'
        f'{_run_heading(run)}</h3> <span class="badge">{e(count)}</span></summary>'
        f'<p class="note"><strong>{e(run.scenario.title)}</strong>. {e(_sentence(run))} '
        f"Started {e(h.time)}; at most {h.max_rounds} rounds; folder "
        f"<code>{e(run.path)}</code>.</p>{same}"
        f'<ul class="agents">{agents}</ul>{_scores(run, names)}{chart_html}'
        f"{packed_messages(messages)}</details></article>"
    )


def packed_messages(messages: Sequence[Message]) -> str:
    """The transcript's `ol.messages`, its items gzipped in `data-packed` (base64): the page's
    script unpacks every transcript when it loads. Transcripts repeat themselves (names,
    options, packages) and compress about tenfold, which keeps a sweep's page small."""
    items = "".join(m.render() for m in messages).encode("utf-8")
    packed = base64.b64encode(gzip.compress(items, compresslevel=9, mtime=0)).decode("ascii")
    return (f'<ol class="messages" data-packed="{packed}" data-count="{len(messages)}">'
            '<li class="unpacking">Unpacking the transcript… (it needs JavaScript and a '
            "browser from 2023 or later; the run folder's transcript.md has the same)</li></ol>")


def unpack_messages(page: str) -> str:
    """`page` with every packed transcript unpacked in place, as the page's script does it."""
    def unpack(match: re.Match[str]) -> str:
        items = gzip.decompress(base64.b64decode(match.group(1))).decode("utf-8")
        return f'<ol class="messages" data-count="{match.group(2)}">{items}</ol>'

    return _PACKED.sub(unpack, page)


_PACKED = re.compile(r'<ol class="messages" data-packed="([^"]*)" data-count="(\d+)">.*?</ol>',
                     re.S)


def _sentence(run: RunFolder) -> str:
    reason = run.result.reason.strip().rstrip(".")
    return (reason[:1].upper() + reason[1:] + ".") if reason else ""


def _copy_article(run: RunFolder, original: RunFolder) -> str:
    h, o = run.header, original.header
    return (
        f'<article class="run copy" id="run-{e(h.run_id)}" data-run="{e(h.run_id)}" '
        f'data-scenario="{e(h.scenario_id)}" data-status="{e(run.result.status)}" '
        f'data-copy-of="{e(o.run_id)}"><p>{_run_heading(run)}: identical to '
        f'<a href="#run-{e(o.run_id)}">seed {o.seed}</a> (the same events), not repeated; '
        f"folder <code>{e(run.path)}</code>.</p></article>"
    )


# --------------------------------------------------------------------------- page


def copies_of(comparison: Comparison | None) -> dict[str, str]:
    """Run id -> the run id it is identical to (the one a comparison counts)."""
    out: dict[str, str] = {}
    for g in comparison.groups if comparison is not None else []:
        for ids in g.identical:
            out.update(dict.fromkeys(ids[1:], ids[0]))
    return out


def render_report(
    runs: Sequence[RunFolder],
    *,
    comparison: Comparison | None = None,
    run_charts: bool = True,
    title: str | None = None,
) -> str:
    """The report page of `runs` as one HTML string.

    It opens with a contents list and the findings. With several runs, the comparison (from
    `comparison`, else computed from the finished runs) and charts (b) and (c) follow; each
    distinct run's chart (a) goes with its transcript when `run_charts`, and a run identical
    to another is named instead of repeated. With one run, its chart (a) is the page's chart
    and its transcript is open.
    """
    if not runs:
        raise ValueError("no runs to report")
    several = len(runs) > 1
    if title is None:
        ids = list(dict.fromkeys(r.scenario.id for r in runs))
        title = (f"detente: {runs[0].label}" if not several
                 else f"detente: {len(runs)} runs of {', '.join(ids)}" if len(ids) <= 3
                 else f"detente: {len(runs)} runs of {len(ids)} scenarios")
    if several:
        comparison = comparison if comparison is not None else comparison_of(runs)
    else:
        comparison = None
    copy_of = copies_of(comparison)
    by_id = {r.header.run_id: r for r in runs}
    originals = [r for r in runs if r.header.run_id not in copy_of]

    sections: list[str] = []
    contents: list[tuple[str, str, list[tuple[str, str]]]] = [("findings", "Findings", [])]
    if comparison is not None:
        items = findings(comparison)
    elif several:
        items = ["No run has finished: nothing to compare."]
    else:
        items = _run_findings(runs[0])
    sections.append(_findings(items, runs))
    charts: list[str] = []
    if comparison is not None:
        sections.append(_comparison(comparison))
        contents.append(("comparison", "Comparison", [
            ("comparison-variants", "Outcomes per variant"),
            *([("comparison-tests-title", "Tests against the reference")]
              if comparison.tests else [])]))
        captions = {
            AGREED_OPTIONS_PNG: ("agreed-options", "What the deals settled each issue on, per "
                                 "variant with a deal; each option has its own colour, and "
                                 "runs without a deal are hatched grey."),
            RATES_PNG: ("rates", "Deal rate and each party's red-line violation rate per "
                        "variant: the darker, the higher; each cell gives the rate and count, "
                        "and its 95% Wilson interval where the variant has at least 2 distinct "
                        "runs."),
        }
        for name, fig in comparison_figures(runs, comparison).items():
            key, caption = captions[name]
            charts.append(_chart(key, fig, caption))
    elif not several:
        charts.append(_chart("utilities", run_utility_figure(runs[0]), RUN_CHART_CAPTION))
    if charts:
        sections.append(f'<section id="charts"><h2>Charts</h2>{"".join(charts)}</section>')
        contents.append(("charts", "Charts", []))

    per_run = {r.header.run_id: messages_of(r) for r in originals}
    everything = [m for ms in per_run.values() for m in ms]
    articles = []
    for r in runs:
        rid = r.header.run_id
        if rid in copy_of:
            articles.append(_copy_article(r, by_id[copy_of[rid]]))
            continue
        copies = [by_id[c] for c, o in copy_of.items() if o == rid]
        chart = run_utility_figure(r) if several and run_charts else None
        articles.append(_run_article(r, per_run[rid], chart, is_open=not several,
                                     copies=copies))
    contents.append(("transcripts", "Transcripts" if several else "Transcript", [
        (f"run-{r.header.run_id}", r.label) for r in originals] if several else []))
    collapsed = (f'<p class="note">{len(originals)} transcript'
                 f"{'s' if len(originals) != 1 else ''}, collapsed: open one at a time (a "
                 "contents link or the run filter opens it). The filters apply to every "
                 "transcript." + (f" {len(copy_of)} run{'s' if len(copy_of) != 1 else ''} "
                                  "identical to another are named, not repeated."
                                  if copy_of else "") + "</p>") if several else ""
    sections.append(
        f'<section id="transcripts"><h2>Transcript{"s" if several else ""}</h2>{collapsed}'
        f"{_filters(runs, everything)}{''.join(articles)}</section>"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{e(CSP)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="generator" content="detente {e(__version__)}">'
        f"<title>{e(title)}</title><style>{_CSS}</style></head><body>"
        f"{_header(title, contents)}{''.join(sections)}<script>{_JS}</script></body></html>\n"
    )


def write_report(
    runs: Sequence[RunFolder],
    out: Path,
    *,
    comparison: Comparison | None = None,
    run_charts: bool = True,
    title: str | None = None,
) -> Path:
    """Write the report page of `runs` to `out` (folders created); the path written."""
    page = render_report(runs, comparison=comparison, run_charts=run_charts, title=title)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out


_CSS = """
:root { --public: #2b6cb0; --private: #b7791f; --record: #4a5568; --line: #d9dde3; }
* { box-sizing: border-box; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto;
  max-width: 1200px; padding: 1rem 1.5rem 4rem; color: #1a202c; background: #fff; }
h1 { font-size: 1.5rem; } h2 { border-bottom: 2px solid var(--line); padding-bottom: .2rem; }
h3 { display: inline; font-size: 1.05rem; }
#contents { background: #f7f9fb; border: 1px solid var(--line); padding: .4rem 1rem;
  display: inline-block; min-width: 20rem; }
#contents h2 { font-size: 1rem; border: 0; margin: .2rem 0; }
#contents ol { margin: .2rem 0; padding-left: 1.4rem; } #contents ol ol { font-size: .9rem; }
ul.findings li { margin: .25rem 0; } ul.findings li.warning { color: #8a4b00; }
code { font-size: .85em; background: #f1f3f5; padding: 0 .25em; border-radius: 3px; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .2rem 1rem; }
dt { font-weight: 600; } dd { margin: 0; } dd ul { margin: 0; padding-left: 1.1rem; }
table { border-collapse: collapse; margin: .6rem 0; font-size: .9rem; }
th, td { border: 1px solid var(--line); padding: .25rem .5rem; text-align: left;
  vertical-align: top; }
thead th { background: #f5f7fa; }
.ci, .count, .note, .na, .identical { color: #5a6472; } .note { font-size: .88rem; }
tr.untested td { color: #5a6472; font-style: italic; }
.significant { font-weight: 700; color: #c53030; }
details.parties > summary { cursor: pointer; margin: .5rem 0; font-weight: 600; }
figure { margin: 1rem 0; overflow-x: auto; }
img.chart { display: block; max-width: none; height: auto; border: 1px solid var(--line); }
figcaption { font-size: .85rem; color: #5a6472; max-width: 60rem; }
#filters { position: sticky; top: 0; z-index: 2; background: #fbfcfd;
  border: 1px solid var(--line); padding: .5rem .75rem; display: flex; flex-wrap: wrap;
  gap: .5rem 1rem; align-items: center; }
#filters fieldset { border: 0; padding: 0; margin: 0; display: flex; flex-wrap: wrap;
  gap: .25rem .75rem; align-items: center; }
#filters legend { font-weight: 600; float: left; margin-right: .5rem; }
#filters button { font: inherit; font-size: .8rem; }
#shown-count { font-size: .85rem; color: #5a6472; }
article.run { margin: .6rem 0; border-bottom: 1px solid var(--line); padding-bottom: .4rem;
  scroll-margin-top: 10rem; }
article.run summary { cursor: pointer; }
article.run.copy { border: 0; margin: 0 0 0 1.2rem; padding: 0; }
article.run.copy p { margin: .1rem 0; color: #5a6472; font-size: .85rem; }
ol.messages { list-style: none; padding: 0; }
.message { border-left: 4px solid var(--public); background: #f7fafc; margin: .5rem 0;
  padding: .45rem .75rem; border-radius: 0 4px 4px 0; }
.message.private { border-left-color: var(--private); background: #fffaf0;
  border-style: dashed dashed dashed solid; border-width: 1px 1px 1px 4px;
  border-color: #ecc94b #ecc94b #ecc94b var(--private); }
.message[data-party="record"] { border-left-color: var(--record); background: #f4f5f7; }
.message .meta { display: flex; flex-wrap: wrap; gap: .4rem; align-items: baseline;
  margin-bottom: .25rem; }
.speaker { font-weight: 700; }
.badge { font-size: .75rem; border-radius: 9px; padding: 0 .45rem; background: #e2e8f0; }
.badge.audience.public { background: #ebf4ff; color: var(--public); }
.badge.audience.private { background: #fefcbf; color: #744210; font-weight: 600; }
.badge.invalid { background: #fed7d7; color: #9b2c2c; }
.message .text { white-space: pre-wrap; overflow-wrap: anywhere; }
.vote.accept strong { color: #276749; } .vote.reject strong { color: #9b2c2c; }
ul.stances, ul.votes { margin: .2rem 0; padding-left: 1.2rem; font-size: .9rem; }
table.package { font-size: .85rem; }
[hidden] { display: none !important; }
"""

_JS = """
(function () {
  'use strict';
  var transcripts = Array.prototype.slice.call(
    document.querySelectorAll('details.transcript'));
  // One transcript open at a time.
  transcripts.forEach(function (d) {
    d.addEventListener('toggle', function () {
      if (!d.open) { return; }
      transcripts.forEach(function (other) { if (other !== d) { other.open = false; } });
    });
  });
  window.detenteOpenRun = openRun;
  // Open the transcript of a run (a copy: the run it repeats); true if there was one.
  function openRun(id, scroll) {
    var article = document.getElementById('run-' + id);
    if (!article) { return false; }
    if (article.dataset.copyOf) {
      article = document.getElementById('run-' + article.dataset.copyOf) || article;
    }
    var details = article.querySelector('details.transcript');
    if (details) { details.open = true; }
    if (scroll) { article.scrollIntoView(); }
    return true;
  }
  function fromHash() {
    var hash = decodeURIComponent(location.hash || '');
    if (hash.indexOf('#run-') === 0) { openRun(hash.slice(5), true); }
  }
  document.addEventListener('click', function (event) {
    var link = event.target.closest ? event.target.closest('a[href^="#run-"]') : null;
    if (link) { openRun(decodeURIComponent(link.getAttribute('href').slice(5)), false); }
  });
  window.addEventListener('hashchange', fromHash);
  fromHash();

  // Transcripts come gzipped and base64-encoded in `data-packed`: unpack them all, then
  // start the filters. `body[data-ready]` says when that is done.
  function unpack(list) {
    var text = atob(list.dataset.packed);
    var bytes = new Uint8Array(text.length);
    for (var i = 0; i < text.length; i += 1) { bytes[i] = text.charCodeAt(i); }
    var stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream('gzip'));
    return new Response(stream).text().then(function (items) {
      list.innerHTML = items;
      list.removeAttribute('data-packed');
    });
  }
  var packed = Array.prototype.slice.call(document.querySelectorAll('ol[data-packed]'));
  var unpacking = typeof DecompressionStream === 'function'
    ? Promise.all(packed.map(unpack)) : Promise.reject(new Error('no DecompressionStream'));
  unpacking.then(filters, function () {
    packed.forEach(function (list) {
      list.firstElementChild.textContent = 'This browser cannot unpack the transcript; the ' +
        "run folder's transcript.md has the same.";
    });
  }).then(function () { document.body.dataset.ready = '1'; });
}());

function filters() {
  'use strict';
  var panel = document.getElementById('filters');
  if (!panel) { return; }
  var messages = Array.prototype.slice.call(document.querySelectorAll('.message'));
  var count = document.getElementById('shown-count');
  function values(name) {
    var boxes = panel.querySelectorAll('input[name="' + name + '"]');
    var out = {};
    Array.prototype.forEach.call(boxes, function (box) { out[box.value] = box.checked; });
    return out;
  }
  function selected(id) {
    var el = document.getElementById(id);
    return el ? el.value : '';
  }
  function apply() {
    var parties = values('party');
    var visibility = values('visibility');
    var round = selected('filter-round');
    var issue = selected('filter-issue');
    var run = selected('filter-run');
    var shown = 0;
    messages.forEach(function (m) {
      var d = m.dataset;
      var issues = d.issue ? d.issue.split(' ') : [];
      var ok = parties[d.party] !== false && visibility[d.visibility] !== false &&
        (round === '' || d.round === round) &&
        (issue === '' || issues.indexOf(issue) >= 0) &&
        (run === '' || d.run === run);
      m.hidden = !ok;
      if (ok) { shown += 1; }
    });
    Array.prototype.forEach.call(document.querySelectorAll('article.run'), function (a) {
      a.hidden = run !== '' && a.dataset.run !== run && a.dataset.copyOf !== run;
    });
    if (count) { count.textContent = shown + ' of ' + messages.length + ' messages shown'; }
  }
  function setParties(on) {
    Array.prototype.forEach.call(panel.querySelectorAll('input[name="party"]'),
      function (box) { box.checked = on; });
    apply();
  }
  panel.addEventListener('change', function (event) {
    if (event.target && event.target.id === 'filter-run' && event.target.value !== '') {
      var article = document.getElementById('run-' + event.target.value);
      if (article && article.dataset.copyOf) {
        event.target.value = article.dataset.copyOf;  // its transcript is the original's
      }
      window.detenteOpenRun(event.target.value, false);
    }
    apply();
  });
  document.getElementById('party-all').addEventListener('click', function () {
    setParties(true);
  });
  document.getElementById('party-none').addEventListener('click', function () {
    setParties(false);
  });
  apply();
}
"""
