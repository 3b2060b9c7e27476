"""The HTML report in a real browser: headless Chromium (Debian's, at /usr/bin/chromium) driven by
Playwright. Checks that the page renders its messages, filters and charts from the file alone,
that the filters hide what they should, that nothing reaches for the network and that the console
stays free of errors. Skipped when /usr/bin/chromium is missing (CI installs it)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from detente.html_report import write_report
from detente.plots import load_runs
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
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("browser")
    sample: SampleRuns = make_runs(root)
    runs = load_runs(sorted(sample.sweep.glob("*/seed-*")))
    return write_report(runs, root / "report.html")


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
        """The data attributes of the matching elements that are displayed."""
        found: list[dict[str, str]] = self.page.eval_on_selector_all(
            selector,
            "els => els.filter(e => e.offsetParent !== null)"
            ".map(e => Object.assign({}, e.dataset))",
        )
        return found

    def count(self, selector: str) -> int:
        return int(self.page.locator(selector).count())


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
            yield watched
        finally:
            chromium.close()


def test_the_page_renders_messages_filters_and_charts(browser: Browser) -> None:
    page = browser.page
    total = browser.count(".message")
    assert total > 0
    assert len(browser.visible()) == total
    assert page.locator("#shown-count").inner_text() == f"{total} of {total} messages shown"
    assert browser.count("#filters input[name=party]") == 5  # a, b, c, m and the record
    assert browser.count("#filters #filter-round option") > 2
    assert browser.count("#filters #filter-issue option") == 4  # all, x, y, t
    assert browser.count("#comparison table") == 3
    assert browser.count("article.run") == 4
    charts = page.eval_on_selector_all(
        "img.chart", "imgs => imgs.map(i => [i.dataset.chart, i.complete, i.naturalWidth])")
    assert len(charts) == 6
    assert all(complete and width > 0 for _, complete, width in charts), charts


def test_party_filter_hides_the_other_parties(browser: Browser) -> None:
    page = browser.page
    page.click("#party-none")
    assert browser.visible() == []
    page.check("#filters input[name=party][value=a]")
    shown = browser.visible()
    assert shown and {m["party"] for m in shown} == {"a"}
    assert page.locator('.message[data-party="b"]').first.is_hidden()
    page.click("#party-all")
    assert len(browser.visible()) == browser.count(".message")


def test_round_issue_and_visibility_filters(browser: Browser) -> None:
    page = browser.page
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
    assert len(browser.visible()) == browser.count(".message")


def test_private_messages_look_different_and_say_who_saw_them(browser: Browser) -> None:
    page = browser.page
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


def test_model_text_is_shown_as_text_never_run(browser: Browser) -> None:
    page = browser.page
    assert page.evaluate("typeof window.__pwned") == "undefined"
    text = page.locator('.message[data-kind="caucus"] .text').inner_text()
    assert text == CAUCUS_TEXT


def test_no_network_and_no_console_errors(browser: Browser) -> None:
    # Runs last: the filters above have all been exercised by then.
    online = [url for url in browser.requests if url.startswith(("http:", "https:", "ws"))]
    assert online == []
    assert browser.console_errors == []
