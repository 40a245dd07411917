"""GraphiQL in a real browser with no internet: Debian's Chromium (through Playwright)
opens ``/graphql`` on a real server, every request off this host is refused (and
recorded, and must not happen at all), an API key goes into GraphiQL's headers editor
and a query typed into it comes back with the factory's twins. Also: the page and its
assets as the server sends them."""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from argon2 import PasswordHasher
from playwright.sync_api import Page, Request, Response, Route, expect, sync_playwright

from twinforge.auth.api_keys import ApiKeyStore
from twinforge.auth.authenticator import Authenticator
from twinforge.auth.tokens import TokenIssuer
from twinforge.graphql.context import ApiServices
from twinforge.runtime.events import EventBus
from twinforge.runtime.stores import open_graph_store
from twinforge.runtime.twin_service import TwinService, import_ndjson
from twinforge.sim.layout import sample_plant
from twinforge.web.app import create_app
from twinforge.web.graphiql import graphiql_html, offline_html
from twinforge.web.serving import ApiServer

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
QUERY = "{ twins(first: 3) { edges { node { dtId } } } }"
SCREENSHOT = Path("/tmp/graphiql.png")


@dataclass
class Server:
    url: str
    key: str

    def post(self, query: str) -> dict:
        request = urllib.request.Request(
            self.url,
            json.dumps({"query": query}).encode(),
            {"Content-Type": "application/json", "X-API-Key": self.key},
        )
        return json.load(urllib.request.urlopen(request, timeout=30))


@dataclass
class Traffic:
    """What the page asked for: refused off-host requests, failed local ones, errors."""

    off_host: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def watch(self, page: Page) -> None:
        page.context.route("**/*", self._route)
        page.on("websocket", lambda socket: self._check(socket.url))
        page.on("requestfailed", lambda r: self.failed.append(f"{r.url}: {r.failure}"))
        page.on("response", self._response)
        page.on("pageerror", lambda error: self.errors.append(str(error)))

    def assert_clean(self) -> None:
        assert self.off_host == [], f"the page reached off-host: {self.off_host}"
        assert self.failed == [], f"requests failed: {self.failed}"
        assert self.errors == [], f"errors on the page: {self.errors}"

    def _check(self, url: str) -> bool:
        parts = urlsplit(url)
        local = parts.scheme in ("data", "blob") or parts.hostname in LOCAL_HOSTS
        if not local:
            self.off_host.append(url)
        return local

    def _response(self, response: Response) -> None:
        if response.status >= 400:
            self.failed.append(f"{response.url}: HTTP {response.status}")

    def _route(self, route: Route, request: Request) -> None:
        if self._check(request.url):
            route.continue_()
        else:
            route.abort("internetdisconnected")


def chromium() -> str:
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).is_file():
        pytest.fail(
            "Chromium is not installed: this browser test needs Debian's chromium "
            "(as root: apt-get update && apt-get install -y chromium); "
            "Playwright's own browser download is not used"
        )
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("graphiql")
    store = open_graph_store(None, tmp / "graph")
    twins = TwinService(store)
    report = import_ndjson(twins, sample_plant(equipment=4).to_import_ndjson().splitlines())
    assert not report.errors
    cheap = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    keys = ApiKeyStore(tmp / "keys.sqlite3", hasher=cheap)
    tokens = TokenIssuer(b"k" * 32)
    services = ApiServices(
        twins=twins,
        authenticator=Authenticator(keys, tokens),
        keys=keys,
        tokens=tokens,
        live=EventBus(),
    )
    key = keys.create("graphiql-viewer", ["viewer"]).secret
    api = ApiServer(create_app(services), "127.0.0.1", 0).start()
    try:
        yield Server(api.url, key)
    finally:
        api.stop()
        keys.close()
        store.close()


@pytest.fixture
def page() -> Iterator[Page]:
    executable = chromium()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport={"width": 1400, "height": 900})
        finally:
            browser.close()


def test_graphiql_runs_a_query_with_no_internet(server: Server, page: Page) -> None:
    started = time.monotonic()
    answer = server.post(QUERY)
    assert "errors" not in answer, answer
    ids = [edge["node"]["dtId"] for edge in answer["data"]["twins"]["edges"]]
    assert len(ids) == 3

    traffic = Traffic()
    traffic.watch(page)
    page.goto(server.url, wait_until="load")  # every script and style sheet is in
    traffic.assert_clean()
    query_editor = page.locator(".graphiql-query-editor .CodeMirror")
    expect(query_editor).to_be_visible(timeout=20_000)

    # The API key, as a user types it into the headers editor.
    page.locator('.graphiql-editor-tools button[data-name="headers"]').click()
    headers_editor = page.locator(".graphiql-editor-tool .graphiql-editor:not(.hidden) .CodeMirror")
    expect(headers_editor).to_be_visible()
    headers_editor.click()
    page.keyboard.insert_text(json.dumps({"X-API-Key": server.key}))
    # The query, in place of the welcome text.
    query_editor.click()
    page.keyboard.press("ControlOrMeta+A")
    page.keyboard.insert_text(QUERY)
    page.locator(".graphiql-execute-button").click()

    response = page.locator(".graphiql-response")
    for twin_id in ids:
        expect(response).to_contain_text(f'"{twin_id}"', timeout=15_000)
    shown = page.evaluate(
        "document.querySelector('.graphiql-response .CodeMirror').CodeMirror.getValue()"
    )
    assert json.loads(shown) == answer
    page.screenshot(path=SCREENSHOT)

    traffic.assert_clean()
    assert time.monotonic() - started < 30


def test_the_page_and_its_assets_come_from_the_server(server: Server) -> None:
    request = urllib.request.Request(server.url, headers={"Accept": "text/html"})
    with urllib.request.urlopen(request, timeout=30) as response:
        page = response.read().decode()
    assert page == graphiql_html()
    assert "unpkg" not in page and "integrity=" not in page and "crossorigin" not in page
    assets = re.findall(r'(?:src|href)="(graphql/static/[^"]+)"', page)
    assert len(assets) == 7
    base = server.url.removesuffix("graphql")
    for asset in assets:
        with urllib.request.urlopen(base + asset, timeout=30) as response:
            assert response.headers["Cache-Control"] == "public, max-age=31536000, immutable"
            kind = "text/css" if asset.endswith(".css") else "javascript"
            assert kind in response.headers["Content-Type"]
            assert response.read()
    for missing in ("graphql/static/nothing.js", "graphql/static/../app.py"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(base + missing, timeout=30)
        assert refused.value.code == 404


def test_an_asset_not_vendored_stays_on_its_cdn_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    html = (
        '<script crossorigin src="https://unpkg.com/react@18.2.0/umd/react.production.min.js"'
        ' integrity="sha384-a"></script>\n'
        '<script crossorigin src="https://unpkg.com/graphiql@9.9.9/graphiql.min.js"'
        ' integrity="sha384-b"></script>'
    )
    with caplog.at_level(logging.WARNING, logger="twinforge.web.graphiql"):
        page = offline_html(html)
    assert page.splitlines() == [
        '<script src="graphql/static/react-18.2.0/react.production.min.js"></script>',
        '<script crossorigin src="https://unpkg.com/graphiql@9.9.9/graphiql.min.js"'
        ' integrity="sha384-b"></script>',
    ]
    assert "https://unpkg.com/graphiql@9.9.9/graphiql.min.js" in caplog.text
