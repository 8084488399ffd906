"""The pages for people: ``/`` and the API reference at ``/docs``, rendered from ``/openapi.json``.

In process: every operation of the document is on the page, hostile document strings are
escaped, the headers (CSP, nosniff) and HEAD/405 are right, and unrouted paths keep their JSON
404s. In Debian's Chromium: the page renders every operation, requests nothing from anywhere
but the server, and breaks no rule of its own Content-Security-Policy; a screenshot is kept.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import requests

from tapevault.http.openapi import openapi_document
from tapevault.http.reference import METHODS, render_reference
from tests.conftest import need
from tests.server import Server
from tests.support import CHROMIUM, CHROMIUM_FLAGS

HOSTILE = "<script>alert('x')</script>\"'&"


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite only: the pages do not touch the database."""
    return f"sqlite:///{tmp_path / 'meta.db'}"


class _Operations(HTMLParser):
    """Collects the (method, path) of every operation article and every script element."""

    def __init__(self) -> None:
        super().__init__()
        self.operations: list[tuple[str, str]] = []
        self.scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "script":
            self.scripts += 1
        if tag == "article" and found.get("class") == "op":
            self.operations.append((found["data-method"] or "", found["data-path"] or ""))


def operations_of(document: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in METHODS
    ]


def parsed(page: str) -> _Operations:
    parser = _Operations()
    parser.feed(page)
    parser.close()
    return parser


async def test_docs_lists_every_operation_of_the_document(client: httpx.AsyncClient) -> None:
    """Each (method, path) of the served /openapi.json is one operation on /docs, and nothing
    else is; the page holds no script."""
    document = (await client.get("/openapi.json")).json()
    answer = await client.get("/docs")
    assert answer.status_code == 200
    page = parsed(answer.text)
    assert sorted(page.operations) == sorted(operations_of(document))
    assert len(page.operations) > 30 and page.scripts == 0
    for name in document["components"]["schemas"]:
        assert f"<code>{name}</code>" in answer.text


def test_a_route_added_to_the_document_appears_without_other_changes() -> None:
    """The page is the document rendered: an operation added to it shows, with its summary,
    parameters, body schema and example."""
    document = openapi_document("https://vault.test")
    document["paths"]["/api/v1/sessions/{session_id}/player-links"] = {
        "post": {
            "tags": ["Administration"],
            "summary": "Make a player link",
            "operationId": "createPlayerLink",
            "parameters": [{"name": "ttl", "in": "query", "schema": {"type": "integer"}}],
            "requestBody": {
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/X"}}}
            },
            "responses": {"201": {"description": "Made.", "content": {"application/json": {
                "schema": {"type": "object"}, "example": {"url": "https://example/p/1"}}}}},
        }
    }  # fmt: skip
    document["components"]["schemas"]["X"] = {"type": "object"}
    page = render_reference(document)
    assert ("POST", "/api/v1/sessions/{session_id}/player-links") in parsed(page).operations
    assert "Make a player link" in page and "<code>ttl</code>" in page
    assert '<a href="#schema-X">X</a>' in page
    assert "&quot;https://example/p/1&quot;" in page


def test_hostile_strings_in_the_document_are_escaped() -> None:
    """Markup in any string of the document (title, tag, path, summary, description, parameter,
    schema name, example, header) shows as text: no element of it reaches the page."""
    document = copy.deepcopy(openapi_document("https://vault.test"))
    document["info"]["title"] = HOSTILE
    document["info"]["description"] = f"`{HOSTILE}`"
    document["tags"].append({"name": HOSTILE, "description": HOSTILE})
    document["components"]["schemas"][HOSTILE] = {"description": HOSTILE}
    document["paths"][f"/x/{HOSTILE}"] = {
        "get": {
            "tags": [HOSTILE],
            "operationId": HOSTILE,
            "summary": HOSTILE,
            "description": HOSTILE,
            "security": [{HOSTILE: []}],
            "parameters": [
                {"name": HOSTILE, "in": HOSTILE, "description": HOSTILE, "schema": {"x": HOSTILE}}
            ],
            "responses": {
                HOSTILE: {
                    "description": HOSTILE,
                    "headers": {HOSTILE: {"description": HOSTILE}},
                    "content": {
                        HOSTILE: {
                            "schema": {"$ref": f"#/components/schemas/{HOSTILE}"},
                            "example": {HOSTILE: HOSTILE},
                        }
                    },
                }
            },
        }
    }
    page = render_reference(document)
    assert "<script" not in page and "alert('x')" not in page
    assert "&lt;script&gt;" in page
    assert parsed(page).scripts == 0
    assert ("GET", f"/x/{HOSTILE}") in parsed(page).operations  # the attribute round-trips


@pytest.mark.parametrize("path", ["/", "/docs"])
async def test_pages_are_html_under_a_strict_policy(client: httpx.AsyncClient, path: str) -> None:
    """GET: HTML with a CSP that allows no script and nothing from elsewhere, nosniff; HEAD: the
    same headers and no body; any other method: 405 with Allow."""
    answer = await client.get(path)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "text/html; charset=utf-8"
    assert answer.headers["x-content-type-options"] == "nosniff"
    policy = dict(
        part.strip().split(" ", 1) for part in answer.headers["content-security-policy"].split(";")
    )
    assert policy["default-src"] == "'self'" and policy["script-src"] == "'none'"
    assert policy["style-src"].startswith("'sha256-") and policy["frame-ancestors"] == "'none'"
    head = await client.head(path)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(answer.content))
    assert head.headers["content-security-policy"] == answer.headers["content-security-policy"]
    post = await client.post(path)
    assert post.status_code == 405 and post.headers["allow"] == "GET, HEAD"


async def test_root_says_what_this_is_and_links_on(client: httpx.AsyncClient) -> None:
    """/ names the server and links the reference, the document and liveness."""
    page = (await client.get("/")).text
    assert "tapevault" in page and "conversation audio" in page
    for link in ("/docs", "/openapi.json", "/healthz"):
        assert f'href="{link}"' in page


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/docs/nothing", {"code": 404, "message": "Not found."}),
        ("/player", {"code": 404, "message": "Not found."}),
        ("/v1/docs", {"detail": "Not Found"}),
        ("/api/public/docs", {"errors": [{"msg": "Not found.", "code": 404}]}),
    ],
)
async def test_unrouted_paths_keep_their_json_404(
    client: httpx.AsyncClient, path: str, body: dict[str, Any]
) -> None:
    """The new pages take exactly their paths: anything else is still its dialect's JSON 404."""
    answer = await client.get(path)
    assert (answer.status_code, answer.json()) == (404, body)


# --- a real browser -----------------------------------------------------------------------------


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path / "data").start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.mark.server
def test_chromium_renders_every_operation_and_fetches_nothing_else(
    server: Server, tmp_path: Path
) -> None:
    """Chromium opens /docs from a live server: every operation of /openapi.json is a visible
    heading with its method and path, every request the page made went to the server, and the
    console reports no Content-Security-Policy violation (the style hash is right). A
    screenshot is kept in the test's directory (docs/api-reference.png is a copy)."""
    need(Path(CHROMIUM).is_file(), "chromium is not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - a test dependency
        need(False, "playwright is not installed")
        raise
    document = requests.get(f"{server.base}/openapi.json", timeout=10).json()
    requested: list[str] = []
    console: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1600})
            page.on("request", lambda request: requested.append(request.url))
            page.on("console", lambda message: console.append(message.text))
            answer = page.goto(f"{server.base}/docs", wait_until="networkidle")
            assert answer is not None and answer.status == 200
            shown = page.eval_on_selector_all(
                "article.op h3",
                "heads => heads.map(h => [h.querySelector('.method').innerText,"
                " h.querySelector('.path').innerText, h.checkVisibility()])",
            )
            style = page.eval_on_selector("h3 .method", "e => getComputedStyle(e).color")
            page.screenshot(path=str(tmp_path / "api-reference.png"))
        finally:
            browser.close()
    assert sorted((m, p) for m, p, _ in shown) == sorted(operations_of(document))
    assert all(visible for _, _, visible in shown)
    assert style == "rgb(255, 255, 255)"  # the stylesheet applied: its hash is in the policy
    origin = urlsplit(server.base).netloc
    assert requested and all(urlsplit(url).netloc == origin for url in requested), requested
    assert not [m for m in console if "Content Security Policy" in m], console
    assert (tmp_path / "api-reference.png").stat().st_size > 10_000
