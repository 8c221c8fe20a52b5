"""The web page in a real headless browser: Debian's Chromium driven by Playwright.

Needs the system packages ``chromium`` (and ``chromium-driver`` for Selenium users); the test
skips with the reason when they are missing. Playwright's own browser downloads are never used:
the system binary is launched through ``executable_path``.

Set ``NER_RETRIEVER_SCREENSHOT=docs/screenshot-search.png`` to keep the results screenshot.
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from ner_retriever.retrieve.retriever import Retriever
from ner_retriever.serve.app import create_app
from ner_retriever.types import Document
from tests.serve.serve_support import live_server

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("NER_RETRIEVER_CHROMIUM") or shutil.which("chromium") or \
    "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage"]
XSS_TEXT = ('Senator Alice Brown wrote <script>window.__pwned = 1</script> and '
            '<img src=x onerror="window.__pwned = 2"> from Ohio.')
CORPUS = [
    Document("merkel", "Angela Merkel met Emmanuel Macron in Paris to discuss the budget.",
             {"source": "news", "year": 2019}),
    Document("danube", "The Danube flows through Vienna, Bratislava and Budapest."),
    Document("toyota", "Toyota unveiled the new Corolla at the Tokyo Motor Show."),
    Document("curie", "Marie Curie received the Nobel Prize in Physics."),
    Document("lakers", "The Los Angeles Lakers beat the Boston Celtics in the NBA Finals."),
    Document("beatles", "John Lennon and Paul McCartney founded The Beatles in Liverpool."),
    Document("amazon", "Amazon opened a new office in Seattle, led by Andy Jassy."),
    Document("everest", "Edmund Hillary and Tenzing Norgay climbed Mount Everest."),
    Document("obama", "Barack Obama spoke with Justin Trudeau in Ottawa."),
    Document("nile", "The Nile crosses Sudan and Egypt before reaching Cairo."),
    Document("emoji", "Fans \U0001F3C6 cheered as Lionel Messi lifted the trophy in Doha."),
    Document("xss", XSS_TEXT),
]


def _launch(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                      headless=True)


@pytest.fixture(scope="module")
def browser() -> Iterator:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install -y chromium chromium-driver")
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="the 'playwright' Python package is not installed")
    with sync_api.sync_playwright() as playwright:
        browser = _launch(playwright)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[str]:
    """A real uvicorn server on a free loopback port, in a background thread."""
    path = tmp_path_factory.mktemp("browser") / "index"
    retriever = Retriever.create(path, detector="spacy")
    retriever.add(CORPUS)
    retriever.close()
    app = create_app(Retriever.open(path, encoder=retriever.encoder), owns_retriever=True)
    with live_server(app) as url:
        yield url


def api(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=60) as response:
        return json.load(response)


@pytest.fixture()
def page(browser, server):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("request", lambda r: None if r.url.startswith(server) else
            problems.append(f"request outside the server: {r.url}"))
    page.problems = problems
    yield page
    context.close()


def search_for(page, query: str) -> None:
    page.fill("#q", query)
    page.press("#q", "Enter")
    page.wait_for_function(
        "q => document.getElementById('status').textContent.includes(q)", arg=query)
    page.wait_for_selector("#results li.result")


def test_search_highlight_more_and_document_view(page, server, tmp_path):
    page.goto(server + "/")
    page.wait_for_selector("#stats-list dt:text('documents')")
    assert page.text_content("#stats-list").count(str(len(CORPUS))) >= 1
    assert page.locator("#examples button.example").count() >= 3

    search_for(page, "politician")
    expected = api(f"{server}/search?q=politician&k=10")["results"]
    results = page.locator("#results li.result")
    assert results.count() == 10
    first = results.nth(0)
    assert first.get_attribute("data-doc-id") == expected[0]["doc_id"]
    best = expected[0]["mentions"][0]
    assert first.locator("mark.hit.best").first.text_content() == best["text"]
    assert first.locator(".score-value").text_content() == f"{expected[0]['score']:.3f}"
    for i, result in enumerate(expected):  # every shown mention that falls in the context
        row = results.nth(i)
        marks = row.locator(".context mark.hit").all_text_contents()
        ctx = result["context"]
        inside = [m["text"] for m in result["mentions"]
                  if ctx["start"] <= m["start"] and m["end"] <= ctx["end"]]
        assert sorted(marks) == sorted(inside)

    shot = Path(os.environ.get("NER_RETRIEVER_SCREENSHOT") or tmp_path / "search.png")
    shot.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000

    # "more" appends the next page and disappears at the end
    page.click("#more")
    page.wait_for_function("n => document.querySelectorAll('#results li.result').length == n",
                           arg=len(CORPUS))
    assert page.is_hidden("#more")
    ranks = page.locator("#results .rank").all_text_contents()
    assert ranks == [str(i) for i in range(1, len(CORPUS) + 1)]

    # the document view: full text, matched mention highlighted, other mentions underlined
    page.locator("#results li.result[data-doc-id='merkel'] button.doc-link").click()
    page.wait_for_selector("#doc-view[open] #doc-text mark.hit")
    text = page.text_content("#doc-text")
    assert text == CORPUS[0].text
    underlined = page.locator("#doc-text .mention, #doc-text mark.hit").all_text_contents()
    assert {"Angela Merkel", "Emmanuel Macron", "Paris"} <= set(underlined)
    assert "news" in page.text_content("#doc-meta")
    page.keyboard.press("Escape")
    page.wait_for_selector("#doc-view", state="hidden")

    # a character outside the BMP before the mention: offsets still line up
    page.locator("#results li.result[data-doc-id='emoji'] button.doc-link").click()
    page.wait_for_selector("#doc-view[open] #doc-text mark.hit, #doc-view[open] #doc-text .mention")
    marked = page.locator("#doc-text .mention, #doc-text mark.hit").all_text_contents()
    assert "Lionel Messi" in marked
    page.click("#doc-close")
    assert page.problems == []


def test_document_markup_renders_as_inert_text(page, server):
    page.goto(server + "/?q=senator")
    page.wait_for_selector("#results li.result")
    if page.locator("#results li.result[data-doc-id='xss']").count() == 0:
        page.click("#more")
    page.wait_for_selector("#results li.result[data-doc-id='xss']")
    row = page.locator("#results li.result[data-doc-id='xss']")
    assert "<script>" in row.locator(".context").text_content()
    row.locator("button.doc-link").click()
    page.wait_for_selector("#doc-view[open] #doc-text mark, #doc-view[open] #doc-text .mention")
    assert page.text_content("#doc-text") == XSS_TEXT
    assert page.is_visible("#doc-text")
    assert page.evaluate("document.querySelectorAll('main script, main img, dialog script, "
                         "dialog img').length") == 0
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.problems == []


def test_errors_are_shown_not_thrown(page, server):
    page.goto(server + "/?q=" + "x" * 300)  # longer than the API allows
    page.wait_for_selector("#status.error")
    assert "at most 256 characters" in page.text_content("#status")
    assert page.locator("#results li").count() == 0
    assert [p for p in page.problems if "422" not in p] == []


def test_narrow_screens_stack_the_layout(browser, server, tmp_path):
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    try:
        page = context.new_page()
        page.goto(server + "/?q=city")
        page.wait_for_selector("#results li.result")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390  # nothing sticks out sideways
        stats_top = page.locator(".stats").bounding_box()["y"]
        results_top = page.locator("#results").bounding_box()["y"]
        assert stats_top > results_top  # the side panel moved below the results
    finally:
        context.close()
