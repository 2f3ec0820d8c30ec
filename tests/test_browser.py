"""Real-browser tests: Debian's headless Chromium driven by Playwright against live servers on loopback.

GraphiQL runs with every non-loopback request blocked; /ui's daily chart equals downloadStats; clicking (or
keyboarding to) a model shows its history; the empty and error states; a page on another loopback origin
calls the API when CORS allows it and is refused when not. Screenshots go to the test's temp dir
(MODELHUB_README_SCREENSHOT=path also writes the README's)."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import random
import shutil
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import pytest
import pytest_asyncio

from graphql_api.app import create_app
from graphql_api.config import Settings
from graphql_api.documents import DownloadMode, DownloadStatus, RegisteredModel
from graphql_api.http import assets
from tests.analytics.test_stats import store
from tests.servers import GraphQLClient, LiveServer, ServeProcess, free_port, make_settings

pytestmark = [
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.browser,
    pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="Debian's chromium is not installed"),
]

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
WHO = {"X-Engineer-ID": "alice"}
MODELS = [("bert", "nlp"), ("resnet", "vision"), ("yolo", "vision"), ("whisper", "audio")]
ENGINEERS = ["alice", "bob", "carol", "dave", "erin"]
REGISTER = """mutation($n: String!, $p: String!, $k: String!) {
  registerModel(input: {name: $n, projectName: $p, bucket: "models", key: $k, tags: ["demo"]}) { __typename }
}"""
DAILY = """query($f: DownloadFilter) {
  downloadStats(groupBy: [], interval: DAY, filter: $f, limit: 1000) { rows { periodStart completed } }
}"""


def ui_range() -> tuple[datetime, datetime]:
    """The page's default range: the last 30 UTC days, today included."""
    now = datetime.now(UTC)
    until = now.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    return until - timedelta(days=30), until


async def seed(settings: Settings) -> None:
    """Four registered models and ~300 downloads over the last 20 days (some days left empty), written the
    way the app writes them (event, then rollups)."""
    rng = random.Random(3)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            gql = GraphQLClient(http)
            for name, project in MODELS:
                path = settings.objects_dir / "models" / f"{name}.bin"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(name.encode() * 1000)
                await gql(REGISTER, {"n": name, "p": project, "k": f"{name}.bin"}, **WHO)
        ids = {m.name: m.id for m in await RegisteredModel.find_all().to_list()}
        today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        quiet = {3, 4, 11}  # days with no downloads at all
        events = []
        for _ in range(300):
            back = rng.randrange(0, 20)
            if back in quiet:
                continue
            name, project = rng.choices(MODELS, weights=[8, 4, 2, 1])[0]
            started = today - timedelta(days=back) + timedelta(seconds=rng.randrange(0, 86400))
            started = min(started, datetime.now(UTC) - timedelta(seconds=5))
            status = rng.choice([DownloadStatus.COMPLETED] * 5 + [DownloadStatus.ABORTED])
            events.append(
                dict(
                    model_id=ids[name], model_name=name, model_version=1, project_name=project,
                    engineer=rng.choice(ENGINEERS), mode=DownloadMode.STREAM, status=status, size_bytes=4000,
                    bytes_sent=4000 if status is DownloadStatus.COMPLETED else 1000, started_at=started,
                    duration_seconds=0.5, finished_at=started + timedelta(seconds=0.5),
                )
            )  # fmt: skip
        await store(events, bulk=True)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        launched = await pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture(scope="module")
def seeded(mongo_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A live server over a seeded database (seeded in-process first, then served by uvicorn)."""
    settings = make_settings("local", mongo_uri, None, tmp_path_factory.mktemp("ui"))
    import asyncio

    asyncio.run(seed(settings))
    with LiveServer(settings) as server:
        yield server


@contextlib.asynccontextmanager
async def page_on(browser: Any, shots: Path | None = None) -> AsyncIterator[Any]:
    """A fresh context at 1280x800 in which any request leaving loopback is blocked (and recorded)."""
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    blocked: list[str] = []

    async def gate(route: Any) -> None:
        host = urlsplit(route.request.url).hostname
        if host in ("127.0.0.1", "localhost") or route.request.url.startswith("data:"):
            await route.continue_()
        else:
            blocked.append(route.request.url)
            await route.abort()

    await context.route("**/*", gate)
    page = await context.new_page()
    page.blocked = blocked
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.js_errors = errors
    try:
        yield page
    finally:
        await context.close()


async def daily_completed(url: str, flt: dict[str, Any]) -> dict[str, int]:
    async with httpx.AsyncClient(base_url=url) as http:
        data = await GraphQLClient(http)(DAILY, {"f": flt}, **WHO)
    return {r["periodStart"][:10]: r["completed"] for r in data["downloadStats"]["rows"] if r["completed"]}


async def bars(page: Any, chart: str) -> dict[str, int]:
    found = await page.eval_on_selector_all(
        f"{chart} g.bar", "els => els.map(e => [e.dataset.day, Number(e.dataset.total)])"
    )
    return dict(found)


async def test_graphiql_runs_a_query_with_the_internet_blocked(browser: Any, seeded: LiveServer) -> None:
    """GraphiQL loads its pinned assets from this server (no request leaves loopback) and runs a query."""
    assert not assets.missing(assets.default_dir(), assets.pinned(_cdn_page())), "run `modelhub fetch-assets`"
    query = quote("{ models(first: 10) { totalCount } }")
    headers = quote('{"X-Engineer-ID": "alice"}')
    async with page_on(browser) as page:
        await page.goto(f"{seeded.url}/graphql?q={query}&headers={headers}")
        await page.click(".graphiql-execute-button", timeout=20_000)
        result = page.locator(".result-window")
        await result.get_by_text('"totalCount": 4').wait_for(timeout=20_000)
        assert page.blocked == [] and page.js_errors == []


def _cdn_page() -> str:
    from strawberry.http.ides import get_graphql_ide_html

    return get_graphql_ide_html(graphql_ide="graphiql")


async def test_ui_daily_chart_equals_download_stats(browser: Any, seeded: LiveServer, tmp_path: Path) -> None:
    """/ui draws one bar per day with downloads whose heights' totals equal downloadStats per day, lists
    the models and the top engineers, and loads nothing from outside loopback."""
    since, until = ui_range()
    want = await daily_completed(seeded.url, {"since": since.isoformat(), "until": until.isoformat()})
    assert len(want) >= 10
    async with page_on(browser) as page:
        await page.goto(f"{seeded.url}/ui")
        await page.wait_for_selector("#daily-chart g.bar")
        assert await bars(page, "#daily-chart") == want
        names = await page.eval_on_selector_all("#models button", "els => els.map(e => e.dataset.model)")
        assert names == sorted(n for n, _ in MODELS)
        engineers = await page.inner_text("#top-engineers")
        assert all(e in engineers for e in ENGINEERS)
        total = await page.inner_text("#cards")
        assert f"{sum(want.values())}" in total.replace(",", "")
        shot = tmp_path / "ui-overview.png"
        await page.screenshot(path=str(shot))
        assert shot.stat().st_size > 10_000
        if target := os.environ.get("MODELHUB_README_SCREENSHOT"):
            shutil.copy(shot, target)
        assert page.blocked == [] and page.js_errors == []


async def test_clicking_a_model_shows_its_history(browser: Any, seeded: LiveServer, tmp_path: Path) -> None:
    from playwright.async_api import expect

    """A click on a model opens its page: its daily chart equals downloadStats for that model; the keyboard
    alone (/, arrows, Enter, Escape) reaches a model and comes back."""
    since, until = ui_range()
    flt = {"since": since.isoformat(), "until": until.isoformat(), "modelNames": ["resnet"]}
    want = await daily_completed(seeded.url, flt)
    async with page_on(browser) as page:
        await page.goto(f"{seeded.url}/ui")
        await page.wait_for_selector("#models button")
        await page.click('#models button[data-model="resnet"]')
        await page.wait_for_selector("#history-chart g.bar")
        assert await page.inner_text("#detail-title") == "resnet"
        assert await bars(page, "#history-chart") == want
        assert "v1" in await page.inner_text("#versions")
        await page.screenshot(path=str(tmp_path / "ui-model.png"))

        await page.keyboard.press("Escape")
        await page.wait_for_selector("#overview:not([hidden])")
        await page.keyboard.press("/")
        await page.keyboard.type("yo")
        await expect(page.locator("#models button")).to_have_count(1)
        await page.keyboard.press("ArrowDown")
        assert await page.evaluate("document.activeElement.dataset.model") == "yolo"
        await page.keyboard.press("Enter")
        await expect(page.locator("#detail-title")).to_have_text("yolo")
        assert page.js_errors == []


async def test_empty_and_error_states(browser: Any, mongo_uri: str, tmp_path: Path) -> None:
    """An empty registry says so (no models, no downloads in range); an API that fails shows an alert with
    the reason, and Retry recovers once it answers again."""
    # Other servers run as processes: two apps in one process would share Beanie's class-level binding.
    with ServeProcess(make_settings("local", mongo_uri, None, tmp_path / "data")) as server:
        async with page_on(browser) as page:
            await page.goto(f"{server.url}/ui")
            await page.get_by_text("No models yet").wait_for()
            await page.get_by_text("No downloads in this range").first.wait_for()
            await page.screenshot(path=str(tmp_path / "ui-empty.png"))

            async def fail(route: Any) -> None:
                await route.fulfill(status=503, content_type="application/json", body='{"errors": [{"message": '
                                    '"the database is unavailable", "extensions": {"code": "DATABASE_UNAVAILABLE"}}]}')  # fmt: skip

            await page.route("**/graphql", fail)
            await page.select_option("#range", "7")
            alert = page.get_by_role("alert")
            await alert.get_by_text("the database is unavailable").wait_for()
            await page.screenshot(path=str(tmp_path / "ui-error.png"))
            await page.unroute("**/graphql", fail)
            await page.click("#retry")
            await alert.wait_for(state="hidden")


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


@contextlib.contextmanager
def static_site(directory: Path) -> Iterator[str]:
    """Another loopback origin (its own port) serving a plain page."""
    port = free_port()
    handler = functools.partial(_Quiet, directory=str(directory))
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()


FETCH = """async (api) => {
  try {
    const resp = await fetch(api + "/graphql", {
      method: "POST",
      headers: {"Content-Type": "application/json", "X-Engineer-ID": "frontend"},
      body: JSON.stringify({query: "{ models(first: 1) { totalCount } }"}),
    });
    return {ok: true, body: await resp.json()};
  } catch (err) {
    return {ok: false, error: String(err)};
  }
}"""


async def test_cors_from_another_loopback_origin(browser: Any, mongo_uri: str, tmp_path: Path) -> None:
    """A page on another origin calls the API (a preflighted POST with X-Engineer-ID) when its origin is
    allowed, and the browser refuses the answer when it is not."""
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "index.html").write_text("<!doctype html><title>frontend</title><p>frontend</p>")
    with static_site(tmp_path / "site") as allowed, static_site(tmp_path / "site") as other:
        settings = make_settings("local", mongo_uri, None, tmp_path / "data")
        with ServeProcess(settings, MODELHUB_CORS_ORIGINS=json.dumps([allowed])) as api:
            async with page_on(browser) as page:
                await page.goto(allowed + "/index.html")
                got = await page.evaluate(FETCH, api.url)
                assert got["ok"] and got["body"]["data"]["models"]["totalCount"] == 0, got
                await page.goto(other + "/index.html")
                got = await page.evaluate(FETCH, api.url)
                assert not got["ok"] and "Failed to fetch" in got["error"], got
