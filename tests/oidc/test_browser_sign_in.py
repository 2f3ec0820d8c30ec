"""Single sign-on in a real browser: headless Chromium signs in to /ui through the provider's login page
(authorization-code flow with PKCE, the code exchanged by the page itself) and sees the overview; GraphiQL
opened from /ui runs a query with the signed-in token."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import pytest_asyncio

from graphql_api.app import create_app
from graphql_api.auth import create_token
from graphql_api.config import Settings
from graphql_api.roles import Role
from tests.oidc.provider import UI_CLIENT, OidcProvider
from tests.oidc.test_sign_in import REGISTER, oidc_settings
from tests.servers import GraphQLClient, LiveServer, free_port
from tests.test_browser import CHROMIUM_ARGS

pytestmark = [
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.browser,
    pytest.mark.external,
    pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="Debian's chromium is not installed"),
]

ACCOUNTS = {"alice": {"email": "alice@example.com", "groups": ["auditors"]}}


async def seed(settings: Settings) -> None:
    """One model, registered by an ADMIN API token (in-process, before the live server starts)."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        value, _ = await create_token("seed", "admin", Role.ADMIN, "test")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            made = await GraphQLClient(http)(REGISTER, {"n": "detector", "p": "vision"},
                                             Authorization=f"Bearer {value}")  # fmt: skip
            assert made["registerModel"]["model"]["owner"] == "admin"


@pytest.fixture(scope="module")
def signed_in_world(
    oidc_installed: None, mongo_uri: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[OidcProvider, LiveServer]]:
    """The provider (with /ui's public client registered) and a live server that trusts it."""
    work = tmp_path_factory.mktemp("sso")
    provider_port = free_port()
    settings = oidc_settings(
        mongo_uri, work / "data", f"http://127.0.0.1:{provider_port}", oidc_client_id=UI_CLIENT
    )
    asyncio.run(seed(settings))
    server = LiveServer(settings)
    provider = OidcProvider(
        work / "oidc", redirect_uris=[server.url + "/ui"], accounts=ACCOUNTS, port=provider_port
    )
    with provider, server:
        yield provider, server


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Any]:
    """Chromium with a fresh profile directory of its own."""
    from playwright.async_api import async_playwright

    profile = tmp_path_factory.mktemp("chromium-profile")
    async with async_playwright() as pw:
        context = await pw.chromium.launch_persistent_context(
            str(profile), executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 800},
        )  # fmt: skip
        try:
            yield context
        finally:
            await context.close()


async def test_ui_signs_in_through_the_provider_and_shows_the_overview(
    browser: Any, signed_in_world: tuple[OidcProvider, LiveServer], tmp_path: Path
) -> None:
    """Sign in on /ui goes to the provider's login page; after it the page holds an access token for the
    API (the code exchanged with PKCE), names the user, lists the models and draws the overview; GraphiQL
    opened from the page runs a query as that user; signing out takes the token out of GraphiQL too. Nothing is loaded from outside loopback except the
    provider's own web font, which is blocked."""
    provider, server = signed_in_world
    outside: list[str] = []

    async def gate(route: Any) -> None:
        if urlsplit(route.request.url).hostname in ("127.0.0.1", "localhost"):
            await route.continue_()
        else:
            outside.append(route.request.url)
            await route.abort()

    await browser.route("**/*", gate)
    page = await browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(server.url + "/ui")
    await page.get_by_role("button", name="Sign in").click()

    await page.wait_for_url(provider.issuer + "/interaction/**")
    await page.fill("input[name=login]", "alice")
    await page.fill("input[name=password]", "any password")
    await page.click("button[type=submit]")

    await page.wait_for_url(server.url + "/ui")
    await page.get_by_role("button", name="Sign out alice@example.com").wait_for()
    await page.wait_for_selector('#models button[data-model="detector"]')
    await page.wait_for_selector("#cards .card")
    assert "Completed downloads" in await page.inner_text("#cards")
    assert await page.locator("#error").is_hidden()
    await page.screenshot(path=str(tmp_path / "ui-signed-in.png"))

    await page.click("#graphiql")
    await page.wait_for_url(server.url + "/graphql")
    # GraphiQL's headers editor holds the token /ui handed it: a query typed in runs as alice.
    editor = ".graphiql-query-editor .CodeMirror"
    await page.wait_for_selector(editor)
    assert "Bearer ey" in await page.evaluate("localStorage.getItem('graphiql:tabState')")
    await page.evaluate(
        "([sel, q]) => document.querySelector(sel).CodeMirror.setValue(q)",
        # Named as GraphiQL's default document's operation: GraphiQL may send the name it parsed last.
        [editor, "query RecentModels { models(first: 5) { totalCount nodes { owner } } }"],
    )
    await page.click(".graphiql-execute-button", timeout=20_000)
    result = page.locator(".result-window")
    await result.get_by_text('"totalCount": 1').wait_for(timeout=20_000)

    await page.goto(server.url + "/ui")
    await page.get_by_role("button", name="Sign out alice@example.com").click()
    await page.get_by_role("button", name="Sign in").wait_for()
    assert "Bearer ey" not in await page.evaluate(
        "localStorage.getItem('graphiql:tabState')"
    )  # the token (the default
    # document's comment shows the header's form)
    assert errors == []
    assert all(urlsplit(u).hostname in ("fonts.googleapis.com", "fonts.gstatic.com") for u in outside), (
        outside
    )
