"""The HTTP contract: the OpenAPI schema states every constraint the server enforces.

schemathesis (all checks, the write token, every phase: examples, coverage of each
constraint's boundaries, fuzzing, stateful POST-then-GET/DELETE) runs against a real uvicorn
server over the tiny-encoder index (no real model: about 30 s on 2 cores); it fails on any 5xx,
any schema-valid request refused, any invalid one accepted and any response (status, headers,
body, ``Allow`` of a 405) that the schema does not describe, but for the one rule OpenAPI
cannot state (``/search`` takes exactly one of ``q`` and ``like``: tests/serve/
schemathesis_hooks.py drops exactly that refusal). ``/docs`` must work offline: its
page and assets come from the package (``serve/docs_assets``), never from another host.
"""

from __future__ import annotations

import fnmatch
import os
import re
import subprocess
import sys
import tomllib
import unicodedata
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from tests.serve.serve_support import TINY_AUTH, TINY_TOKEN, live_server

import ner_retriever
from ner_retriever.serve.schemas import NON_BLANK, WHITESPACE

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
EXAMPLES = 40  # per operation and phase: about 30 s on 2 busy cores
FUZZ_TIMEOUT_S = 180  # a hang fails the test in minutes, not the suite's time
SEED = 21
EXTERNAL_URL = re.compile(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", re.I)
ABSOLUTE_URL = re.compile(r"(?:https?:)?//[\w.-]+", re.I)
ASSETS = Path(ner_retriever.__file__).parent / "serve" / "docs_assets"
ROOT = Path(__file__).resolve().parents[2]
HOOKS = "tests.serve.schemathesis_hooks"


@pytest.mark.skipif(not SCHEMATHESIS.exists(), reason="schemathesis is not installed "
                    "(pip install -e .[test])")
@pytest.mark.parametrize("index", ["mentions", pytest.param("hybrid", marks=pytest.mark.slow)])
def test_schemathesis_finds_no_contract_violation(request, index):
    """On the mention-only index (all=, several q and /entities answer 409) and, slow, on the
    hybrid one (MiniLM document vectors: every feature answers)."""
    if index == "hybrid":
        app = request.getfixturevalue("hybrid_app")(writable=True, max_documents=10,
                                                    max_text_chars=4000)
    else:
        app = request.getfixturevalue("tiny_app")(max_documents=10, max_text_chars=4000)
    with live_server(app) as url:
        run = subprocess.run(
            [str(SCHEMATHESIS), "run", f"{url}/openapi.json", "--checks", "all",
             "-H", f"Authorization: Bearer {TINY_TOKEN}", "--max-examples", str(EXAMPLES),
             "--seed", str(SEED), "--workers", "1", "--continue-on-failure", "--no-color",
             "--generation-database", "none"],
            capture_output=True, text=True, timeout=FUZZ_TIMEOUT_S, check=False, cwd=ROOT,
            env={**os.environ, "SCHEMATHESIS_HOOKS": HOOKS,
                 "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                            os.environ.get("PYTHONPATH")]))})
    report = run.stdout[-6000:] + run.stderr[-2000:]
    assert run.returncode == 0, report
    assert "No issues found" in run.stdout or "passed" in run.stdout, report
    selected = re.search(r"Selected: (\d+)/(\d+)", run.stdout)
    assert selected and selected[1] == selected[2] and int(selected[1]) >= 6, report
    assert f"Tested: {selected[1]}" in run.stdout, report  # every operation was reached


def test_the_two_gaps_the_fuzzer_found_are_stated_in_the_schema(tiny_app):
    with TestClient(tiny_app(max_documents=7)) as client:
        schema = client.get("/openapi.json").json()
        q = next(p for p in schema["paths"]["/search"]["get"]["parameters"]
                 if p["name"] == "q")["schema"]["anyOf"][0]["items"]  # q repeats (types)
        assert q["pattern"] == NON_BLANK and q["minLength"] == 1
        bodies = schema["components"]["schemas"]
        documents = bodies["AddDocumentsRequest"]["properties"]["documents"]
        assert (documents["minItems"], documents["maxItems"]) == (1, 7)
        assert bodies["DocumentIn"]["properties"]["text"]["pattern"] == NON_BLANK
        post = schema["paths"]["/documents"]["post"]
        assert post["security"] == [{"bearer": []}]
        assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
        # and the server refuses exactly those, with a message that says why
        blank = client.get("/search", params={"q": " \u3000\t"})
        assert blank.status_code == 422
        assert blank.json()["detail"] == ("invalid request: query parameter 'q': must hold a "
                                          "character other than whitespace")
        empty = client.post("/documents", json={"documents": []}, headers=TINY_AUTH)
        assert empty.status_code == 422 and "at least 1 item" in empty.json()["detail"]
        # a character that is not whitespace anywhere makes a query valid
        assert client.get("/search", params={"q": " \u3000x "}).status_code == 200


def test_the_blank_pattern_is_what_strip_removes():
    """The pattern lists exactly the characters ``str.strip()`` removes, as explicit escapes,
    so Python, pydantic (Rust) and browsers (ECMAScript) read it alike."""
    everything = [chr(c) for c in range(sys.maxunicode + 1)]
    assert WHITESPACE == [c for c in everything if c.isspace()]  # none outside the BMP
    pattern = re.compile(NON_BLANK)
    for c in WHITESPACE + ["a", "\x00", "\u200b", "\U0001F30D", "\ufeff"]:
        assert bool(pattern.search(c)) == bool(c.strip()), (hex(ord(c)), unicodedata.name(c, ""))
    assert NON_BLANK.isascii() and "\\s" not in NON_BLANK


def test_ids_texts_and_repeats_are_refused_as_the_schema_says(tiny_app):
    with TestClient(tiny_app(max_id_chars=8)) as client:
        def post(*docs):
            return client.post("/documents", json={"documents": list(docs)}, headers=TINY_AUTH)

        cases = [
            ({"id": " ", "text": "Rome"}, "documents[0].id: must hold a character other than"),
            ({"id": "a", "text": "\u2003\n"}, "documents[0].text: must hold a character other"),
            ({"id": "123456789", "text": "Rome"}, "documents[0].id: String should have at most 8"),
            ({"id": 2 ** 63, "text": "Rome"}, "documents[0].id: Input should be less than"),
            ({"id": True, "text": "Rome"}, "documents[0].id: must be a string or an integer"),
        ]
        for doc, expected in cases:
            response = post(doc)
            assert response.status_code == 422, response.text
            assert expected in response.json()["detail"]
        repeated = post({"id": "a", "text": "Rome"}, {"id": "a", "text": "Oslo"})
        assert repeated.status_code == 409
        assert "documents[1]: document id 'a' repeats documents[0]" in repeated.json()["detail"]
        assert post({"id": 2 ** 63 - 1, "text": "Oslo is in Norway."}).status_code == 201


def test_docs_work_offline(tiny_app):
    with TestClient(tiny_app()) as client:
        page = client.get("/docs")
        assert page.status_code == 200 and "SwaggerUIBundle" in page.text
        assert not EXTERNAL_URL.search(page.text), EXTERNAL_URL.findall(page.text)
        # no other host anywhere on the page: not in src/href, nor as the spec's URL or
        # Swagger UI's validator badge (validator.swagger.io by default)
        assert not ABSOLUTE_URL.search(page.text), ABSOLUTE_URL.findall(page.text)
        assert '"validatorUrl": null' in page.text
        assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text)
        assert len(assets) >= 3
        for asset in assets:
            assert asset.startswith("/docs-assets/"), asset
            response = client.get(asset)
            assert response.status_code == 200 and response.content, asset
            assert response.content == (ASSETS / asset.removeprefix("/docs-assets/")).read_bytes()
        assert "SwaggerUIBundle" in client.get("/docs-assets/swagger-ui-bundle.js").text
        assert "Apache License" in client.get("/docs-assets/LICENSE").text
        assert client.get("/redoc").status_code == 404  # it would need a CDN
        assert client.get("/docs-assets/../app.py").status_code == 404


def test_the_docs_assets_ship_in_the_package():
    """The vendored Swagger UI and its licence are package files, listed as package data, and
    schemathesis is pinned in the test extra."""
    names = {"swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png", "LICENSE"}
    assert names <= {p.name for p in ASSETS.iterdir()}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = project["tool"]["setuptools"]["package-data"]["ner_retriever"]
    for name in names:
        assert any(fnmatch.fnmatch(f"serve/docs_assets/{name}", g) for g in globs), name
    assert any(re.fullmatch(r"schemathesis==[\d.]+", d)
               for d in project["project"]["optional-dependencies"]["test"])


def test_a_405_lists_every_method_of_the_path(tiny_app):
    """starlette's 405 names only the first matching route's methods; schemathesis found
    ``Allow: GET`` on ``/documents/{id}``, which also takes ``DELETE``."""
    with TestClient(tiny_app()) as client:
        response = client.options("/documents/merkel")
        assert response.status_code == 405 and response.headers["allow"] == "DELETE, GET"
        assert client.put("/documents").headers["allow"] == "POST"
        assert client.post("/search").headers["allow"] == "GET"
        assert response.json() == {"detail": "Method Not Allowed"}
