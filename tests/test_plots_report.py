"""`detente plot` and `detente report`: PNG charts and the self-contained HTML page.

The runs are scripted negotiations of the tiny scenario and a variant of it, laid out like a
sweep (`<sweep>/<scenario id>/seed-<n>/`). One run gets a private caucus exchange added to its log,
with text that would run script if it were not escaped; the variant's two runs are identical (its
agents are scripted), so the report names the second instead of repeating it. `make_runs` is
shared with `test_report_browser.py`. The charts are checked on eleven variants with long names
and labels: no text outside the figure, one colour per option, a rates chart legible at its
natural size. The size of a real sweep's report is checked on scripted runs of the baseline.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import struct
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.text import Text

from detente.agents import make_agent
from detente.comparison import Comparison
from detente.events import LOG_NAME, Statement
from detente.html_report import messages_of, render_report, unpack_messages
from detente.loading import load_bundle
from detente.plots import (
    NO_DEAL,
    agreed_options_figure,
    figure_alt,
    figure_labels,
    load_run,
    load_runs,
    rates_figure,
    run_utility_figure,
    write_charts,
)
from detente.runner import RunPlan, start_run
from detente.runs import RunFolder
from detente.scenario import Scenario
from helpers import TINY, CliResult, invoke, scripted, tiny_variant
from test_compare import many_variants

ROOT = Path(__file__).resolve().parent.parent
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SCRIPT_PAYLOAD = "<script>window.__pwned = 1</script>"
IMG_PAYLOAD = '<img src="https://example.com/x.png" onerror="window.__pwned = 2">'
CAUCUS_TEXT = f"Between us: {SCRIPT_PAYLOAD} X2 is as far as I can go on X."
REPLY_TEXT = f"{IMG_PAYLOAD} We could live with T at 5 units, see https://example.com/terms."


@dataclass(frozen=True)
class SampleRuns:
    sweep: Path
    """`<sweep>/<scenario id>/seed-<n>/` for tiny and tiny_unanimous, seeds 0 and 1."""
    with_caucus: Path
    """The run whose log holds the added caucus exchange (tiny, seed 0)."""
    variants: tuple[str, str] = ("tiny", "tiny_unanimous")

    @property
    def copy(self) -> Path:
        """tiny_unanimous seed 1: identical to its seed 0 (scripted agents ignore the seed)."""
        return self.sweep / "tiny_unanimous" / "seed-1"


def make_runs(root: Path) -> SampleRuns:
    """Four finished scripted runs of two variants, one with a private caucus added. A variant's
    runs share their players (compare refuses to pool different ones)."""
    variant = tiny_variant(root, "tiny_unanimous", required=["a", "b", "c"])
    sweep = root / "sweep"
    for path, strategy in ((TINY, "boulware"), (variant, "linear")):
        bundle = load_bundle(path)
        scenario = bundle.scenario
        for seed in (0, 1):
            agents = {p: scripted(strategy) for p in scenario.voters}
            assert scenario.mediator is not None
            agents[scenario.mediator] = scripted("nash")
            plan = RunPlan(bundle=bundle, agents=agents, seed=seed)
            start_run(plan, make_agent, run_dir=sweep / scenario.id / f"seed-{seed}")
    with_caucus = sweep / "tiny" / "seed-0"
    _add_caucus(with_caucus / LOG_NAME)
    return SampleRuns(sweep=sweep, with_caucus=with_caucus)


def _add_caucus(log: Path) -> None:
    """A mediator-party caucus in round 1, right after the proposal, as an LLM run logs it."""
    lines = log.read_text(encoding="utf-8").splitlines()
    at = next(k for k, line in enumerate(lines) if '"id":"r1/proposal"' in line) + 1
    caucus = Statement(id="r1/caucus", kind="caucus", round=1, speaker="m",
                       visible_to=["m", "a"], text=CAUCUS_TEXT)
    reply = Statement(id="r1/caucus_reply", kind="caucus_reply", round=1, speaker="a",
                      visible_to=["m", "a"], text=REPLY_TEXT)
    lines[at:at] = [caucus.model_dump_json(), reply.model_dump_json()]
    log.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> SampleRuns:
    return make_runs(tmp_path_factory.mktemp("runs"))


def _detente(*args: str) -> CliResult:
    """In this process: plot and report only read runs and write files."""
    return invoke(*args, cwd=ROOT)


@pytest.fixture(scope="module")
def sweep_report(sample: SampleRuns, tmp_path_factory: pytest.TempPathFactory) -> str:
    """`detente report <sweep folder>`: the page."""
    out = tmp_path_factory.mktemp("report") / "sweep.html"
    done = _detente("report", str(sample.sweep), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(out)
    return out.read_text(encoding="utf-8")


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


# --------------------------------------------------------------------------- plot


def test_plot_of_one_run_writes_its_utility_chart(sample: SampleRuns, tmp_path: Path) -> None:
    out = tmp_path / "charts"
    done = _detente("plot", str(sample.with_caucus), "--out", str(out))
    assert done.returncode == 0, done.stderr
    written = [Path(line) for line in done.stdout.split()]
    assert len(written) == 1
    assert written[0].parent == out and written[0].name.startswith("utilities-tiny-seed0-")
    width, height = _png_size(written[0])
    assert width > 100 and height > 100


def test_plot_of_a_sweep_writes_the_comparison_charts(sample: SampleRuns, tmp_path: Path) -> None:
    out = tmp_path / "charts"
    done = _detente("plot", str(sample.sweep), "--out", str(out))
    assert done.returncode == 0, done.stderr
    written = [Path(line) for line in done.stdout.split()]
    assert [p.name for p in written] == ["agreed-options.png", "rates.png"]
    for path in written:
        assert path.stat().st_size > 0
        assert min(_png_size(path)) > 100


def test_per_run_charts_come_on_request(sample: SampleRuns, tmp_path: Path) -> None:
    runs = load_runs(sorted(sample.sweep.glob("*/seed-*")))
    written = write_charts(runs, tmp_path, per_run=True)
    names = [p.name for p in written]
    assert names[:2] == ["agreed-options.png", "rates.png"]
    assert len([n for n in names if n.startswith("utilities-")]) == 4
    assert all(min(_png_size(p)) > 100 for p in written)


# --------------------------------------------------------------------------- report


class _Page(HTMLParser):
    """Tags and attributes of a page, and the text inside <script> and <style>."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.inline: list[str] = []
        self._inside: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._inside = tag if tag in ("script", "style") else None

    def handle_endtag(self, tag: str) -> None:
        self._inside = None

    def handle_data(self, data: str) -> None:
        if self._inside:
            self.inline.append(data)


def _parse(page: str) -> _Page:
    """The page as its script leaves it: transcripts unpacked."""
    parser = _Page()
    parser.feed(unpack_messages(page))
    return parser


def _messages(page: _Page) -> list[dict[str, str | None]]:
    return [a for t, a in page.tags if t == "li" and "message" in (a.get("class") or "").split()]


def test_report_of_one_run(sample: SampleRuns, tmp_path: Path) -> None:
    out = tmp_path / "one.html"
    done = _detente("report", str(sample.with_caucus), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(out)
    page = _parse(out.read_text(encoding="utf-8"))
    ids = {a.get("id") for _, a in page.tags}
    assert {"summary", "charts", "transcripts", "filters", "shown-count"} <= ids
    assert "comparison" not in ids  # one run: nothing to compare
    charts = [a for t, a in page.tags if t == "img" and a.get("class") == "chart"]
    assert [c["data-chart"] for c in charts] == ["utilities"]
    messages = _messages(page)
    assert len(messages) > 10
    assert {m["data-party"] for m in messages} == {"a", "b", "c", "m", "record"}
    assert {m["data-visibility"] for m in messages} == {"public", "private"}
    assert all(re.fullmatch(r"\d+", m["data-round"] or "") for m in messages)
    proposals = [m for m in messages if m["data-kind"] == "proposal"]
    assert proposals and all(m["data-issue"] == "x y t" for m in proposals)


def test_report_of_a_sweep_compares_the_variants(sample: SampleRuns, sweep_report: str) -> None:
    page = _parse(sweep_report)
    ids = {a.get("id") for _, a in page.tags}
    assert {"comparison", "comparison-variants", "comparison-parties", "comparison-tests",
            "filters", "filter-run"} <= ids
    variants = {a.get("data-variant") for t, a in page.tags
                if t == "tr" and a.get("data-variant") and "data-party" not in a}
    assert variants == set(sample.variants)
    charts = [a["data-chart"] for t, a in page.tags if t == "img" and a.get("class") == "chart"]
    assert charts[:2] == ["agreed-options", "rates"]
    assert len(charts) == 2 + 3  # and one utilities chart per distinct run
    runs = [a for t, a in page.tags if t == "article" and "run" in (a.get("class") or "")]
    assert len(runs) == 4
    copies = [a for a in runs if a.get("data-copy-of")]
    assert len(copies) == 1 and copies[0]["data-scenario"] == "tiny_unanimous"
    distinct = {a["data-run"] for a in runs if not a.get("data-copy-of")}
    assert {m["data-run"] for m in _messages(page)} == distinct
    assert copies[0]["data-copy-of"] in distinct


def test_report_opens_with_contents_and_findings(sweep_report: str) -> None:
    page = _parse(sweep_report)
    tags = [(t, a) for t, a in page.tags if t not in ("meta", "title", "style", "html", "head",
                                                      "body")]
    assert [t for t, _ in tags[:3]] == ["header", "h1", "nav"]
    assert tags[2][1].get("id") == "contents"
    ids = [a.get("id") for _, a in page.tags if a.get("id")]
    assert ids.index("contents") < ids.index("findings") < ids.index("comparison") \
        < ids.index("charts") < ids.index("transcripts")
    links = [a["href"] for t, a in page.tags if t == "a" and (a.get("href") or "").startswith("#")]
    for section in ("#findings", "#comparison", "#charts", "#transcripts"):
        assert section in links
    assert all(link[1:] in ids for link in links)  # every contents link has its target
    section = sweep_report[sweep_report.index('<section id="findings">'):
                           sweep_report.index('<section id="comparison">')]
    findings = " ".join(html.unescape(re.sub(r"<[^>]+>", " ", section)).split())
    assert "Identical runs are counted once: 4 runs, 3 distinct (tiny_unanimous: 1 of 2)" \
        in findings
    assert "Every agent is scripted in every variant" in findings
    assert "Deals: tiny 100% (2/2); tiny_unanimous 100% (1/1)." in findings
    assert "No variant could be tested against tiny: a test needs 2 distinct runs" in findings


def test_transcripts_are_collapsed_and_identical_runs_named_once(
    sample: SampleRuns, sweep_report: str,
) -> None:
    page = _parse(sweep_report)
    transcripts = [a for t, a in page.tags
                   if t == "details" and "transcript" in (a.get("class") or "")]
    assert len(transcripts) == 3 and all("open" not in a for a in transcripts)
    copy_run = load_run(sample.copy).header.run_id
    original = load_run(sample.copy.parent / "seed-0").header.run_id
    assert f'href="#run-{original}"' in sweep_report
    assert re.search(rf'<article class="run copy" id="run-{copy_run}"[^>]*'
                     rf'data-copy-of="{original}">', sweep_report)
    one = render_report([load_run(sample.with_caucus)])
    assert '<details class="transcript" open>' in one  # one run: its transcript is open
    assert len(sweep_report.encode("utf-8")) < 400_000


def test_report_escapes_what_models_said(sample: SampleRuns) -> None:
    run = load_run(sample.with_caucus)
    packed = render_report([run])
    text = unpack_messages(packed)  # what the page's script puts in the page
    assert SCRIPT_PAYLOAD not in packed and IMG_PAYLOAD not in packed
    assert SCRIPT_PAYLOAD not in text and IMG_PAYLOAD not in text
    assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in text
    page = _parse(text)
    assert [t for t, _ in page.tags].count("script") == 1  # only the report's own
    assert not any("onerror" in a for _, a in page.tags)


def test_caucus_and_private_rationales_are_marked_private(sample: SampleRuns) -> None:
    run: RunFolder = load_run(sample.with_caucus)
    messages = messages_of(run)
    caucus = [m for m in messages if m.kind in ("caucus", "caucus_reply")]
    assert [(m.party, m.visibility) for m in caucus] == [("m", "private"), ("a", "private")]
    assert all("seen by" in m.audience and "(m)" in m.audience and "(a)" in m.audience
               for m in caucus)
    assert "x" in caucus[0].issues and "t" in caucus[1].issues  # mentioned: "X2", "T"
    rationales = [m for m in messages if m.kind == "private_rationale"]
    assert rationales and all(m.visibility == "private" and "only" in m.audience
                              for m in rationales)
    public = [m for m in messages if m.kind == "response"]
    assert len(public) == len(rationales) and all(m.visibility == "public" for m in public)


def test_private_proposals_answers_and_tallies_are_marked_private(sample: SampleRuns,
                                                                   tmp_path: Path) -> None:
    """Protocols with a bilateral phase log proposals, answers and tallies seen by a few."""
    run_dir = tmp_path / "run"
    shutil.copytree(sample.with_caucus, run_dir)
    log = run_dir / LOG_NAME
    lines = log.read_text(encoding="utf-8").splitlines()
    for k, line in enumerate(lines):
        event = json.loads(line)
        if event.get("type") in ("proposal", "response", "tally") and event.get("round") == 1:
            event.update(visible_to=["m", "a"], phase="bilateral")
            lines[k] = json.dumps(event)
    log.write_text("\n".join(lines) + "\n", encoding="utf-8")
    messages = messages_of(load_run(run_dir))
    first = [m for m in messages if m.round == 1 and m.kind in ("proposal", "response", "tally")]
    assert first and all(m.visibility == "private" for m in first)
    assert all("seen by" in m.audience and "(m)" in m.audience and "(a)" in m.audience
               for m in first)
    later = [m for m in messages if m.round == 2 and m.kind in ("proposal", "response", "tally")]
    assert later and all(m.visibility == "public" for m in later)


def test_report_needs_no_network(sweep_report: str) -> None:
    page = _parse(sweep_report)
    for tag, attrs in page.tags:
        assert tag != "link", "no external stylesheets"
        for name in ("src", "href", "action", "data", "poster", "srcset", "formaction"):
            value = (attrs.get(name) or "").strip().lower()
            assert not value.startswith(("http:", "https:", "//")), f"<{tag} {name}={value}>"
        if tag == "img":
            assert (attrs.get("src") or "").startswith("data:image/png;base64,")
        if tag == "script":
            assert "src" not in attrs
    inline = "".join(page.inline)
    assert "http://" not in inline and "https://" not in inline
    assert "url(" not in inline and "@import" not in inline
    csp = [a for t, a in page.tags
           if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"]
    assert csp and "default-src 'none'" in (csp[0].get("content") or "")


# --------------------------------------------------------------------------- where files go


def _detente_in(cwd: Path, *args: str) -> CliResult:
    return invoke(*args, cwd=cwd)


def test_plot_and_report_write_into_the_sweep_or_run_folder(sample: SampleRuns,
                                                             tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    shutil.copytree(sample.sweep, sweep)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run = sweep / "tiny" / "seed-0"
    done = [_detente_in(elsewhere, *args) for args in (
        ("plot", str(sweep)), ("report", str(sweep)), ("plot", str(run)), ("report", str(run)),
        ("plot", f"{sweep}/*/seed-1"))]
    assert [d.returncode for d in done] == [0] * 5, [d.stderr for d in done]
    assert [Path(line) for line in done[0].stdout.split()] == [
        sweep / "plots" / "agreed-options.png", sweep / "plots" / "rates.png"]
    assert done[1].stdout.strip() == str(sweep / "report.html")
    assert (sweep / "report.html").stat().st_size > 0
    (chart,) = [Path(line) for line in done[2].stdout.split()]
    assert chart.parent == run / "plots" and chart.name.startswith("utilities-tiny-seed0-")
    assert done[3].stdout.strip() == str(run / "report.html")
    assert Path(done[4].stdout.split()[0]).parent == sweep / "plots"  # the runs' common folder
    assert list(elsewhere.iterdir()) == []  # nothing where the command was run
    assert load_runs(sorted(sweep.glob("*/seed-*")))  # the folder still reads as a sweep


def test_runs_without_a_common_folder_need_out(sample: SampleRuns, tmp_path: Path) -> None:
    for name in ("a", "b"):
        shutil.copytree(sample.sweep / "tiny" / f"seed-{0 if name == 'a' else 1}",
                        tmp_path / name / "run")
    for command in ("plot", "report"):
        done = _detente_in(tmp_path, command, "a/run", "b/run")
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith("error: --out: ") and "--out" in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


# --------------------------------------------------------------------------- bad input


def test_bad_paths_exit_2_with_one_message(sample: SampleRuns, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    not_a_run = tmp_path / "notes.txt"
    not_a_run.write_text("hello")
    cases = [
        ("plot", str(tmp_path / "missing"), "--out", str(tmp_path / "o")),
        ("report", str(empty), "--out", str(tmp_path / "r.html")),
        ("report", str(tmp_path / "nothing-*"), "--out", str(tmp_path / "r.html")),
        ("plot", str(not_a_run), "--out", str(tmp_path / "o")),
        ("plot", str(sample.with_caucus), "--out", str(not_a_run)),
    ]
    for args in cases:
        done = _detente(*args)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, done.stderr)
    assert not (tmp_path / "o").exists() and not (tmp_path / "r.html").exists()


# --------------------------------------------------------------------------- charts


def _outside(fig: Figure) -> list[str]:
    """The texts of `fig` that reach beyond its edges (cut off in the PNG)."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    width, height = fig.bbox.width, fig.bbox.height
    undrawn: set[int] = set()  # tick labels beyond an axis's limits are never drawn
    for ax in fig.axes:
        for axis, limits in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
            lo, hi = sorted(limits)
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                if not lo - 1e-9 <= tick.get_loc() <= hi + 1e-9:
                    undrawn.update({id(tick.label1), id(tick.label2)})
    out = []
    for text in fig.findobj(Text):
        if not text.get_visible() or not text.get_text().strip() or id(text) in undrawn:
            continue
        if text.axes is not None and not text.axes.get_visible():
            continue
        box = text.get_window_extent(renderer)
        if box.x0 < -0.5 or box.y0 < -0.5 or box.x1 > width + 0.5 or box.y1 > height + 0.5:
            out.append(text.get_text())
    return out


@pytest.fixture(scope="module")
def eleven() -> tuple[Comparison, dict[str, Scenario]]:
    """Eleven variants with the shipped names, four distinct runs each, the baseline's labels."""
    comparison = many_variants()
    scenario = load_bundle(ROOT / "scenarios" / "baseline.yaml").scenario
    return comparison, {g.variant: scenario for g in comparison.groups}


def test_no_chart_cuts_off_a_label(eleven: tuple[Comparison, dict[str, Scenario]],
                                   sample: SampleRuns) -> None:
    comparison, scenarios = eleven
    figures = {"agreed options": agreed_options_figure(comparison, scenarios),
               "rates": rates_figure(comparison),
               "utilities": run_utility_figure(load_run(sample.with_caucus))}
    for name, fig in figures.items():
        assert _outside(fig) == [], name
    labels = figure_labels(figures["agreed options"])
    # whole names and labels, wrapped but never shortened
    assert set(labels["ticks"]) >= {g.variant for g in comparison.groups}
    legends = {" ".join(t.split()) for t in labels["legends"]}
    assert {"Donbass only, then freeze", "Donbass and a pull-back toward Zaporozhye city",
            "Outside NATO with multilateral guarantees", "100 thousand troops",
            "no deal"} <= legends
    assert not any("…" in t for texts in labels.values() for t in texts)


def test_each_option_has_its_own_colour_across_panels(
    eleven: tuple[Comparison, dict[str, Scenario]],
) -> None:
    comparison, scenarios = eleven
    fig = agreed_options_figure(comparison, scenarios)
    seen: dict[str, set[tuple[tuple[float, ...], str]]] = {}
    for ax in fig.axes:
        legend = ax.get_legend()
        if legend is None:
            continue
        for handle, text in zip(legend.legend_handles, legend.get_texts(), strict=True):
            assert isinstance(handle, Rectangle)
            style = (tuple(round(c, 3) for c in handle.get_facecolor()), handle.get_hatch() or "")
            seen.setdefault(text.get_text(), set()).add(style)
    assert len(seen) >= 8
    assert all(len(styles) == 1 for styles in seen.values())  # one style per option...
    styles = [next(iter(v)) for k, v in seen.items() if k != NO_DEAL]
    assert len(styles) == len(set(styles))  # ...and no style shared by two options


def test_the_rates_chart_is_legible_at_its_natural_size(
    eleven: tuple[Comparison, dict[str, Scenario]],
) -> None:
    comparison, _ = eleven
    fig = rates_figure(comparison)
    width, height = (fig.get_size_inches() * 110).round()
    assert 600 <= width <= 1150 and height <= 900  # shown 1:1 in the report's column
    labels = figure_labels(fig)
    assert {"variant", "party whose red lines the outcome breaks"} <= set(labels["axes"])
    assert {"us", "russia", "ukraine", "eu", "ukraine_eu_no_territorial_concession"} \
        <= set(labels["ticks"])
    texts = [t for t in fig.findobj(Text) if t.get_text().strip()]
    assert min(t.get_fontsize() for t in texts) >= 7.5
    # every cell names its rate and count; intervals from two distinct runs
    cells = [t.get_text() for t in fig.axes[1].texts]
    ukraine = comparison.groups[1].parties["ukraine"].violation_rate
    assert f"{ukraine.rate:.0%} ({ukraine.count}/{ukraine.n})\n[{ukraine.lo:.0%}, " \
           f"{ukraine.hi:.0%}]" in cells
    assert "variant" in figure_alt(fig) and "Legend" not in figure_alt(fig)


# --------------------------------------------------------------------------- a real sweep


@pytest.fixture(scope="module")
def baseline_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The README's sweep in small: the baseline and one variant, two seeds each, scripted."""
    sweep = tmp_path_factory.mktemp("readme") / "sweep"
    for path in (ROOT / "scenarios" / "baseline.yaml",
                 ROOT / "scenarios" / "variants" / "bilateral_us_russia.yaml"):
        bundle = load_bundle(path)
        scenario = bundle.scenario
        agents = {p: scripted("boulware") for p in scenario.voters}
        assert scenario.mediator is not None
        agents[scenario.mediator] = scripted("nash")
        for seed in (0, 1):
            start_run(RunPlan(bundle=bundle, agents=agents, seed=seed), make_agent,
                      run_dir=sweep / scenario.id / f"seed-{seed}")
    return sweep


def test_a_real_sweeps_report_stays_small(baseline_sweep: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    done = _detente("report", str(baseline_sweep), "--out", str(out))
    assert done.returncode == 0, done.stderr
    size = out.stat().st_size
    # The README's sweep has eleven such variants, 1 MB at most: 1 MB / 11 per distinct run.
    assert size < 2 * 1_000_000 / 11, size
    page = out.read_text(encoding="utf-8")
    assert page.count('<details class="transcript"') == 2
    assert page.count('<article class="run copy"') == 2
