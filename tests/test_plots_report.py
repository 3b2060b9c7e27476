"""`detente plot` and `detente report`: PNG charts and the self-contained HTML page.

The runs are scripted negotiations of the tiny scenario and a variant of it, laid out like a
sweep (`<sweep>/<scenario id>/seed-<n>/`). One run gets a private caucus exchange added to its log,
with text that would run script if it were not escaped. `make_runs` is shared with
`test_report_browser.py`.
"""

from __future__ import annotations

import re
import struct
import subprocess
import sys
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import pytest

from detente.agents import make_agent
from detente.events import LOG_NAME, Statement
from detente.html_report import messages_of, render_report
from detente.loading import load_bundle
from detente.plots import RunData, load_run, load_runs, write_charts
from detente.runner import RunPlan, start_run
from helpers import TINY, scripted, tiny_variant

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


def make_runs(root: Path) -> SampleRuns:
    """Four finished scripted runs of two variants, one with a private caucus added. A variant's
    runs share their players (compare refuses to pool different ones)."""
    variant = tiny_variant(root, "tiny_unanimous", required=["a", "b", "c"])
    sweep = root / "sweep"
    for path, strategy in ((TINY, "linear"), (variant, "boulware")):
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


def _detente(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "detente", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


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
    parser = _Page()
    parser.feed(page)
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
    assert len(charts) == 2 + 4  # and one utilities chart per run
    runs = [a for t, a in page.tags if t == "article" and "run" in (a.get("class") or "")]
    assert len(runs) == 4
    assert {m["data-run"] for m in _messages(page)} == {a["data-run"] for a in runs}


def test_report_escapes_what_models_said(sample: SampleRuns) -> None:
    run = load_run(sample.with_caucus)
    text = render_report([run])
    assert SCRIPT_PAYLOAD not in text and IMG_PAYLOAD not in text
    assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in text
    page = _parse(text)
    assert [t for t, _ in page.tags].count("script") == 1  # only the report's own
    assert not any("onerror" in a for _, a in page.tags)


def test_caucus_and_private_rationales_are_marked_private(sample: SampleRuns) -> None:
    run: RunData = load_run(sample.with_caucus)
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
    procs = [subprocess.Popen([sys.executable, "-m", "detente", *args], cwd=ROOT, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for args in cases]
    for args, proc in zip(cases, procs, strict=True):
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 2, (args, stdout, stderr)
        assert "Traceback" not in stderr
        lines = stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, stderr)
    assert not (tmp_path / "o").exists() and not (tmp_path / "r.html").exists()
