"""The HTML report in a real browser: headless Chromium (Debian's, at /usr/bin/chromium) driven by
Playwright. Checks that the page opens with its contents and findings, that transcripts come
collapsed and open one at a time (from a contents link or the run filter too, a copy opening the
run it repeats), that the filters hide what they should, that the charts are shown whole at their
natural size and name their axes and legends, that nothing reaches for the network and that the
console stays free of errors. Skipped when /usr/bin/chromium is missing (CI installs it)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from detente.html_report import write_report
from detente.plots import load_run, load_runs
from test_plots_report import CAUCUS_TEXT, SampleRuns, make_runs

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Chromium at /usr/bin/chromium"),
    pytest.mark.timeout(120),
]


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> SampleRuns:
    return make_runs(tmp_path_factory.mktemp("browser"))


@pytest.fixture(scope="module")
def report(sample: SampleRuns) -> Path:
    runs = load_runs(sorted(sample.sweep.glob("*/seed-*")))
    return write_report(runs, sample.sweep.parent / "report.html")


@pytest.fixture(scope="module")
def ids(sample: SampleRuns) -> dict[str, str]:
    """Run ids: the run with the caucus, the identical copy and the run it repeats."""
    return {"caucus": load_run(sample.with_caucus).header.run_id,
            "copy": load_run(sample.copy).header.run_id,
            "original": load_run(sample.copy.parent / "seed-0").header.run_id}


class Browser:
    """A page with the report loaded, and everything the console and network saw."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.console_errors: list[str] = []
        self.requests: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.console_errors.append(f"pageerror: {exc}"))
        page.on("request", lambda request: self.requests.append(request.url))

    def _console(self, message: Any) -> None:
        if message.type in ("error", "assert"):
            self.console_errors.append(f"console.{message.type}: {message.text}")

    def visible(self, selector: str = ".message") -> list[dict[str, str]]:
        """The data attributes of the matching elements a reader can see (inside a closed
        `<details>` counts as unseen)."""
        found: list[dict[str, str]] = self.page.eval_on_selector_all(
            selector,
            "els => els.filter(e => e.checkVisibility())"
            ".map(e => Object.assign({}, e.dataset))",
        )
        return found

    def count(self, selector: str) -> int:
        return int(self.page.locator(selector).count())

    def opened(self) -> list[str]:
        """The runs whose transcript is open."""
        found: list[str] = self.page.eval_on_selector_all(
            "details.transcript[open]", "ds => ds.map(d => d.closest('article').dataset.run)")
        return found

    def show_run(self, run: str) -> None:
        """Pick a run in the run filter (which opens its transcript)."""
        self.page.select_option("#filter-run", run)


@pytest.fixture(scope="module")
def browser(report: Path) -> Iterator[Browser]:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                              args=CHROMIUM_ARGS)
        try:
            page = chromium.new_page(viewport={"width": 1280, "height": 900})
            watched = Browser(page)
            page.goto(report.as_uri(), wait_until="load")
            page.wait_for_selector("body[data-ready]")
            yield watched
        finally:
            chromium.close()


def test_the_page_opens_with_contents_findings_and_collapsed_transcripts(
    browser: Browser,
) -> None:
    page = browser.page
    first = page.eval_on_selector(
        "body", "b => Array.from(b.firstElementChild.children).map(e => e.tagName + '#' + e.id)")
    assert first == ["H1#", "NAV#contents"]
    contents = page.locator("#contents").bounding_box()
    findings = page.locator("#findings").bounding_box()
    assert contents is not None and findings is not None
    assert contents["y"] < 900 and contents["y"] < findings["y"]
    links = page.eval_on_selector_all("#contents a", "as => as.map(a => a.getAttribute('href'))")
    assert {"#findings", "#comparison", "#charts", "#transcripts"} <= set(links)
    assert "Identical runs are counted once" in page.locator("#findings").inner_text()

    total = browser.count(".message")
    assert total > 0
    assert browser.count("details.transcript") == 3  # four runs, one a copy
    assert browser.opened() == []
    assert browser.visible() == []  # collapsed: nothing of the transcripts shows
    assert page.locator("#shown-count").inner_text() == f"{total} of {total} messages shown"
    assert browser.count("#filters input[name=party]") == 5  # a, b, c, m and the record
    assert browser.count("#filters #filter-round option") > 2
    assert browser.count("#filters #filter-issue option") == 4  # all, x, y, t
    assert browser.count("#comparison table") == 3
    assert browser.count("article.run") == 4


def test_one_transcript_opens_at_a_time(browser: Browser) -> None:
    page = browser.page
    summaries = page.locator("details.transcript > summary")
    runs = page.eval_on_selector_all(
        "details.transcript", "ds => ds.map(d => d.closest('article').dataset.run)")
    summaries.nth(0).click()
    assert browser.opened() == [runs[0]]
    shown = browser.visible()
    expected = page.eval_on_selector(
        f'article[data-run="{runs[0]}"] ol.messages', "o => Number(o.dataset.count)")
    assert len(shown) == expected and {m["run"] for m in shown} == {runs[0]}
    summaries.nth(1).click()
    assert browser.opened() == [runs[1]]
    assert {m["run"] for m in browser.visible()} == {runs[1]}
    summaries.nth(1).click()
    assert browser.opened() == [] and browser.visible() == []


def test_contents_links_and_the_run_filter_open_a_transcript(browser: Browser,
                                                             ids: dict[str, str]) -> None:
    page = browser.page
    page.click(f'#contents a[href="#run-{ids["caucus"]}"]')
    assert browser.opened() == [ids["caucus"]]
    box = page.locator(f'#run-{ids["caucus"]}').bounding_box()
    assert box is not None and 0 <= box["y"] < 900  # scrolled to it
    # A copy's transcript is the run it repeats: picking it shows that one.
    browser.show_run(ids["copy"])
    assert page.locator("#filter-run").input_value() == ids["original"]
    assert browser.opened() == [ids["original"]]
    assert {m["run"] for m in browser.visible()} == {ids["original"]}
    assert page.locator(f'#run-{ids["copy"]}').is_visible()  # the copy's note stays in view
    browser.show_run("")


def test_party_filter_hides_the_other_parties(browser: Browser, ids: dict[str, str]) -> None:
    page = browser.page
    browser.show_run(ids["caucus"])
    in_run = len(browser.visible())
    assert in_run > 10
    page.click("#party-none")
    assert browser.visible() == []
    page.check("#filters input[name=party][value=a]")
    shown = browser.visible()
    assert shown and {m["party"] for m in shown} == {"a"}
    assert page.locator('.message[data-party="b"]').first.is_hidden()
    page.click("#party-all")
    assert len(browser.visible()) == in_run


def test_round_issue_and_visibility_filters(browser: Browser, ids: dict[str, str]) -> None:
    page = browser.page
    browser.show_run(ids["caucus"])
    in_run = len(browser.visible())
    page.select_option("#filter-round", "1")
    shown = browser.visible()
    assert shown and {m["round"] for m in shown} == {"1"}
    page.select_option("#filter-issue", "t")
    shown = browser.visible()
    assert shown and all("t" in m["issue"].split() for m in shown)
    page.select_option("#filter-issue", "")
    page.uncheck("#filters input[name=visibility][value=public]")
    shown = browser.visible()
    assert shown and {m["visibility"] for m in shown} == {"private"}
    assert {"caucus", "caucus_reply", "private_rationale"} <= {m["kind"] for m in shown}
    page.check("#filters input[name=visibility][value=public]")
    page.select_option("#filter-round", "")
    assert len(browser.visible()) == in_run


def test_private_messages_look_different_and_say_who_saw_them(
    browser: Browser, ids: dict[str, str],
) -> None:
    page = browser.page
    browser.show_run(ids["caucus"])
    caucus = page.locator('.message[data-kind="caucus"]')
    assert caucus.count() == 1
    assert caucus.get_attribute("data-visibility") == "private"
    assert "private: seen by" in caucus.locator(".audience").inner_text()
    public = page.locator('.message[data-kind="response"]').first

    def style(locator: Any) -> tuple[str, str]:
        result: tuple[str, str] = locator.evaluate(
            "e => [getComputedStyle(e).backgroundColor, getComputedStyle(e).borderLeftColor]")
        return result

    assert style(caucus) != style(public)


def test_model_text_is_shown_as_text_never_run(browser: Browser, ids: dict[str, str]) -> None:
    page = browser.page
    browser.show_run(ids["caucus"])
    assert page.evaluate("typeof window.__pwned") == "undefined"
    text = page.locator('.message[data-kind="caucus"] .text').inner_text()
    assert text == CAUCUS_TEXT


def test_charts_are_whole_at_their_natural_size_and_name_their_axes(
    browser: Browser, ids: dict[str, str],
) -> None:
    page = browser.page
    browser.show_run(ids["caucus"])  # its transcript holds its utilities chart
    charts = page.eval_on_selector_all(
        "img.chart",
        """imgs => imgs.filter(i => i.checkVisibility()).map(i => {
          const box = i.getBoundingClientRect();
          return {name: i.dataset.chart, complete: i.complete, alt: i.alt,
                  natural: [i.naturalWidth, i.naturalHeight],
                  shown: [i.clientWidth, i.clientHeight],
                  right: box.right, page: document.documentElement.clientWidth};
        })""")
    names = [c["name"] for c in charts]
    assert names[:2] == ["agreed-options", "rates"] and f"utilities-{ids['caucus']}" in names
    for chart in charts:
        assert chart["complete"] and chart["natural"][0] > 0, chart["name"]
        assert chart["shown"] == chart["natural"], chart["name"]  # not scaled down
        assert chart["right"] <= chart["page"], chart["name"]  # nor cut at the page's edge
    alt = {c["name"]: c["alt"] for c in charts}
    assert "Axes: variant" in alt["agreed-options"] and "no deal" in alt["agreed-options"]
    assert "variant" in alt["rates"] and "party whose red lines the outcome breaks" in alt["rates"]
    run_alt = alt[f"utilities-{ids['caucus']}"]
    assert "round" in run_alt and "reservation utility" in run_alt
    assert all(party in run_alt for party in ("a", "b", "c"))
    browser.show_run("")


def test_no_network_and_no_console_errors(browser: Browser) -> None:
    # Runs last: the filters above have all been exercised by then.
    online = [url for url in browser.requests if url.startswith(("http:", "https:", "ws"))]
    assert online == []
    assert browser.console_errors == []
