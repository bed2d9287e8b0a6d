"""What the benchmark and screenshot scripts share: a free port, app.py started over a build folder,
a page in Debian's Chromium and a sentence classified on it, and the sentences a build times its latency
on. One copy here instead of one per script."""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import urllib.parse
from pathlib import Path

from compression.hubserver import free_port, wait_http  # noqa: F401  (the scripts start and wait for their app with them)

REPO = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def app_over(folder: Path, log=None):
    """Start ``python app.py`` over a built ``folder`` on a free port (no build); yield its URL."""
    port = free_port()
    env = {**os.environ, "BCS_VARIANTS_DIR": str(Path(folder).resolve()), "PORT": str(port), "BCS_BUILD": "0"}
    out = dict(stdout=log, stderr=subprocess.STDOUT) if log is not None else {}
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=REPO, env=env, **out)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_http(url, proc)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@contextlib.contextmanager
def browser_page():
    """One 1280x1000 page in Debian's Chromium (Playwright, headless); the browser closed after."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--headless", "--no-sandbox"])
        try:
            yield browser.new_page(viewport={"width": 1280, "height": 1000})
        finally:
            browser.close()


def open_with_text(page, url: str, text: str, variant: str | None = None) -> None:
    """Open the app at ``url`` through its shareable link (``?text=``, ``&variant=``) and wait until the
    box holds ``text``: a click before the page has bound the box sends an empty sentence."""
    query = {"text": text, **({"variant": variant} if variant else {})}
    page.goto(f"{url}?{urllib.parse.urlencode(query)}")
    page.wait_for_function(f"() => document.querySelector('textarea')?.value === {text!r}", timeout=60000)


def click_classify(page) -> None:
    """Click Classify and wait for the answer's first table cell."""
    page.get_by_role("button", name="Classify").click()
    page.wait_for_selector('#predictions [data-testid^="cell-"]', timeout=60000)


def latency_texts(folder: Path) -> tuple[list[str], object]:
    """The evaluation sentences a build's p50 cycles through, and the build's recipe."""
    from compression import artifacts
    from compression.data import load_splits
    from compression.recipe import load_recipe

    recipe = load_recipe(Path(folder) / artifacts.RECIPE)
    return load_splits(recipe.dataset, REPO / "recipes")["eval"].texts[: recipe.evaluation.latency_sentences], recipe
