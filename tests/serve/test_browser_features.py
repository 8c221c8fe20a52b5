"""The page's search features in a real headless browser (Debian's Chromium through
Playwright, as in test_browser.py): several types joined by ``&``, the filter fields, the
entity list (click one: its documents) and "more like this" on a mention, each checked
against what the API answers for the same request. The index is the tiny hybrid one (tiny
encoder, gold mentions, MiniLM document vectors), so no SmolLM2 is loaded.
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlparse

import pytest
from tests.serve.serve_support import TINY_CORPUS, live_server
from tests.serve.test_browser import browser  # noqa: F401 - the Chromium fixture

pytestmark = pytest.mark.slow

NEWS = {d.id for d in TINY_CORPUS if d.metadata["source"] == "news"}


@pytest.fixture()
def server(hybrid_app) -> Iterator[str]:
    with live_server(hybrid_app()) as url:
        yield url


@pytest.fixture()
def page(browser, server):  # noqa: F811 - the fixture imported above
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    problems: list[str] = []
    searches: list[dict] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))

    def seen(request) -> None:
        if not request.url.startswith(server):
            problems.append(f"request outside the server: {request.url}")
        url = urlparse(request.url)
        if url.path in ("/search", "/entities"):
            searches.append({"path": url.path, **parse_qs(url.query)})

    page.on("request", seen)
    page.problems, page.searches = problems, searches
    yield page
    context.close()


def api(server: str, path: str, **params) -> dict:
    with urllib.request.urlopen(f"{server}{path}?{urlencode(params, doseq=True)}",
                                timeout=60) as response:
        return json.load(response)


def wait_status(page, text: str) -> None:
    """Until the status line reports a finished search (``text``: e.g. "documents for")."""
    page.wait_for_function("t => document.getElementById('status').textContent.includes(t) "
                           "&& !document.getElementById('go').disabled", arg=text)


def shown_ids(page) -> list[str]:
    return [r.get_attribute("data-doc-id") for r in page.locator("#results li.result").all()]


def test_several_types_and_filters(page, server):
    page.goto(server + "/")
    page.fill("#q", "a person & a city")
    page.fill("#where", "source=news; year>=2000")
    page.press("#q", "Enter")
    wait_status(page, "for \u201ca person & a city\u201d \u00b7")
    sent = page.searches[-1]
    assert sent["q"] == ["a person", "a city"] and sent["where"] == ["source=news", "year>=2000"]
    expected = api(server, "/search", q=["a person", "a city"],
                   where=["source=news", "year>=2000"], k=10)
    assert shown_ids(page) == [r["doc_id"] for r in expected["results"]]
    assert set(shown_ids(page)) <= NEWS and shown_ids(page)
    labels = page.locator("#results .chip .chip-label").all_text_contents()
    assert set(labels) <= {"a person", "a city"} and labels
    assert "where=source%3Dnews" in page.url
    # a keyword, and a bad condition shown as the server's message
    page.fill("#where", "")
    page.fill("#must", "Paris")
    page.press("#q", "Enter")
    wait_status(page, "documents for")
    assert set(shown_ids(page)) == {"merkel", "curie"}
    page.fill("#where", "year")
    page.press("#q", "Enter")
    page.wait_for_selector("#status.error")
    assert "where: 'year' has no operator" in page.text_content("#status")
    assert [p for p in page.problems if "422" not in p] == []


def test_the_entity_list_opens_the_documents_of_an_entity(page, server, tmp_path):
    page.goto(server + "/")
    page.fill("#q", "a city")
    page.click("#entities-go")
    page.wait_for_selector("#entity-view:not([hidden]) button.entity")
    expected = api(server, "/entities", q="a city", top=50)["entities"]
    names = page.locator("#entity-list .entity-text").all_text_contents()
    assert names == [e["text"] for e in expected] and "Paris" in names
    counts = page.locator("#entity-list .entity-counts").all_text_contents()
    paris = names.index("Paris")
    assert counts[paris] == "2 documents \u00b7 2 mentions"
    assert "entities=a+city" in page.url and page.searches[-1]["path"] == "/entities"

    page.locator("#entity-list button.entity", has_text="Paris").click()
    wait_status(page, "documents for \u201ca city\u201d")
    assert page.input_value("#must") == "Paris"
    assert page.searches[-1]["must"] == ["Paris"] and page.searches[-1]["q"] == ["a city"]
    want = api(server, "/search", q="a city", must="Paris", k=10)["results"]
    assert shown_ids(page) == [r["doc_id"] for r in want] and set(shown_ids(page)) == {
        "merkel", "curie"}
    assert page.is_visible("#entity-view")  # another entity is one click away
    shot = Path(os.environ.get("NER_RETRIEVER_ENTITY_SCREENSHOT") or tmp_path / "entities.png")
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    page.go_back()  # the address bar holds the list
    page.wait_for_function("() => location.search.includes('entities=')")
    page.wait_for_selector("#entity-view:not([hidden]) button.entity")
    assert page.problems == []


def test_more_like_this_searches_with_the_marked_mention(page, server):
    page.goto(server + "/?q=a+city")
    wait_status(page, "documents for \u201ca city\u201d")
    first = api(server, "/search", q="a city", k=10)["results"][0]
    mention = first["mentions"][0]
    row = page.locator(f"#results li.result[data-doc-id='{first['doc_id']}']")
    button = row.get_by_role("button", name=f"More like \u201c{mention['text']}\u201d")
    button.first.click()
    wait_status(page, f"documents like \u201c{mention['text']}\u201d")
    ctx = first["context"]
    lo, hi = mention["start"] - ctx["start"], mention["end"] - ctx["start"]
    like = ctx["text"][:lo] + "[[" + mention["text"] + "]]" + ctx["text"][hi:]
    sent = page.searches[-1]
    assert sent["like"] == [like] and "q" not in sent
    want = api(server, "/search", like=like, k=10)["results"]
    assert shown_ids(page) == [r["doc_id"] for r in want]
    assert "like=" in page.url
    page.reload()  # the example search comes back from the address bar
    wait_status(page, f"documents like \u201c{mention['text']}\u201d")
    assert shown_ids(page) == [r["doc_id"] for r in want]
    assert page.problems == []
