"""A real browser for the UI test: Selenium driving Debian's Chromium through Debian's chromedriver.

Both come from Debian packages (`make browser`); nothing is downloaded at run time: the driver's
path is given, so Selenium Manager never looks one up. Every failed check saves a screenshot and the
page's DOM under the artifacts folder and names them in the assertion message.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from pathlib import Path
from typing import Callable, Iterator, Optional

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# MLflow 3.17 opens in its GenAI view (a "Traces: 0" overview) unless the URL asks for the model
# training one; the UI keeps the choice in the URL, not in any experiment tag (see the notes of issue 16).
TRAINING_VIEW = "workflowType=machine_learning"
# Anything MLflow's UI shows while a chart or table is still loading.
LOADING = "[role=progressbar], [aria-busy=true], [class*=spin], [class*=Spin], [class*=skeleton], [class*=Skeleton]"


def artifacts_dir() -> Path:
    """Where failed UI checks leave screenshots: $TEST_ARTIFACTS_DIR or outputs/test-artifacts (git-ignored)."""
    default = Path(__file__).resolve().parent.parent / "outputs" / "test-artifacts"
    path = Path(os.environ.get("TEST_ARTIFACTS_DIR", default)) / "ui"
    path.mkdir(parents=True, exist_ok=True)
    return path


def require_browser() -> None:
    """A missing browser or driver fails the test with the fix (never a skip: the check would silently vanish)."""
    import pytest

    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not path.exists():
            pytest.fail(f"{path} is missing: run `make browser` (installs Debian's {package} package)")
    try:
        import selenium  # noqa: F401
    except ImportError:
        pytest.fail("selenium is not installed: run `make install` (it is pinned in requirements-dev.txt)")


@contextlib.contextmanager
def browser(width: int = 1600, height: int = 1200) -> Iterator["Browser"]:
    require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager: never reach out for a driver or browser
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--window-size={width},{height}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield Browser(driver)
    finally:
        driver.quit()  # also ends the Chromium processes the driver started


class Browser:
    def __init__(self, driver):
        self.driver = driver

    def open(self, url: str) -> None:
        self.driver.get(url)

    def screenshot(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.driver.save_screenshot(str(path))
        return path

    def fail(self, name: str, message: str) -> None:
        """Save a screenshot and the DOM of the page as `name`.png/.html, then fail with both paths."""
        folder = artifacts_dir()
        shot = self.screenshot(folder / f"{name}.png")
        (folder / f"{name}.html").write_text(self.driver.page_source)
        raise AssertionError(f"{message}\n  page: {self.driver.current_url}\n  screenshot: {shot}\n"
                             f"  DOM: {folder / f'{name}.html'}")

    def wait(self, name: str, what: str, check: Callable[[], Optional[str]], timeout: float = 60.0) -> None:
        """Poll ``check`` (None when satisfied, else what is still missing) until it passes or ``timeout``."""
        deadline = time.monotonic() + timeout
        missing = "not checked yet"
        while time.monotonic() < deadline:
            try:
                missing = check()
            except Exception as exc:  # the page re-rendered under us (stale element): look again
                missing = f"{type(exc).__name__}: {exc}".splitlines()[0]
            if missing is None:
                return
            time.sleep(1.0)
        self.fail(name, f"{what} within {timeout:.0f} s: {missing}")

    def css(self, selector: str, root=None) -> list:
        from selenium.webdriver.common.by import By

        return (root or self.driver).find_elements(By.CSS_SELECTOR, selector)

    def scroll_to(self, element) -> None:
        self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", element)


def rendered_charts(page: Browser, keys: list[str]) -> Optional[str]:
    """None when every metric in ``keys`` has a drawn chart on the run's metrics tab, else what is missing.

    A chart counts when its card (titled with the full metric key) holds a Plotly plot with at least one
    drawn trace and no loading indicator. The tab renders only the sections and cards in view, so each
    section header and card is scrolled into view first.
    """
    for header in page.css("[data-testid=experiment-view-compare-runs-section-header]"):
        page.scroll_to(header)
    cards = {}
    for card in page.css("[data-testid=experiment-view-compare-runs-card]"):
        titles = [h.get_attribute("title") for h in page.css("h4[title]", card)]
        for title in titles:
            if title in keys:
                cards[title] = card
    problems = []
    for key in keys:
        card = cards.get(key)
        if card is None:
            problems.append(f"{key}: no chart")
            continue
        page.scroll_to(card)
        if page.css(LOADING, card):
            problems.append(f"{key}: still loading")
        elif not page.css(".js-plotly-plot .scatterlayer .trace path", card):
            problems.append(f"{key}: chart has no drawn line")
    return "; ".join(problems) or None


SEARCH_BOX = "input[placeholder='Search metric charts']"


def filter_charts(page: Browser, text: str) -> None:
    """Type ``text`` into the metrics tab's chart search box (fewer cards to render and scroll through)."""
    from selenium.webdriver.common.keys import Keys

    page.wait("metrics-tab", "the metrics tab showed no chart search box",
              lambda: None if page.css(SEARCH_BOX) else "no search box")
    box = page.css(SEARCH_BOX)[0]
    # React owns the input's value: select and delete what is there (element.clear() is undone on render).
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(Keys.BACKSPACE)
    box.send_keys(text)


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")
