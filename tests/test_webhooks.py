"""Webhooks: management and permissions, signed Standard Webhooks deliveries to a real receiver on loopback
that fails in every way and comes back, ordering per model, SSRF refusals, and nothing lost across a kill."""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook as Verifier
from standardwebhooks.webhooks import WebhookVerificationError

from graphql_api.auth import create_token
from graphql_api.config import Settings
from graphql_api.roles import Role
from tests.receiver import Receiver, Request
from tests.servers import ServeProcess, SharedApps, Stores, eventually, make_settings

CREATE = """mutation($input: CreateWebhookInput!) {
  createWebhook(input: $input) {
    __typename
    ... on WebhookWithSecret { secret webhook { id url events enabled createdBy filter } }
    ... on InvalidInput { field message }
  }
}"""
DELIVERIES = """query { webhooks { id enabled disabledReason failingSince
  deliveries(first: 100) { nodes { id: webhookId eventType status attempts lastStatusCode lastError payload } } } }"""
REGISTER = """mutation($input: RegisterModelInput!) {
  registerModel(input: $input) { __typename ... on UserError { code message } }
}"""
FAST = {
    "webhook_allowed_hosts": ["127.0.0.1"],
    "webhook_backoff_initial_seconds": 0.2,
    "webhook_backoff_max_seconds": 0.5,
    "webhook_timeout_seconds": 1.5,
    "webhook_connect_timeout_seconds": 1.0,
    "webhook_poll_seconds": 0.2,
}


@dataclass
class World:
    http: httpx.AsyncClient
    tokens: dict[str, str]
    stores: Stores
    bucket: str
    settings: Settings

    async def gql(self, who: str, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        resp = await self.http.post(
            "/graphql",
            json={"query": query, "variables": variables or {}},
            headers={"Authorization": f"Bearer {self.tokens[who]}"},
        )
        assert resp.status_code == 200, resp.text
        body: dict[str, Any] = resp.json()
        return body

    async def data(self, who: str, query: str, variables: dict[str, Any] | None = None) -> Any:
        body = await self.gql(who, query, variables)
        assert not body.get("errors"), body["errors"]
        return body["data"]

    async def create(self, url: str, events: list[str], **extra: Any) -> dict[str, Any]:
        result: dict[str, Any] = (
            await self.data("admin", CREATE, {"input": {"url": url, "events": events, **extra}})
        )["createWebhook"]
        return result

    async def register(self, name: str, key: str = "w.bin") -> None:
        self.stores.put(self.bucket, f"{name}/{key}", b"weights of " + name.encode())
        variables = {"name": name, "projectName": "p", "bucket": self.bucket, "key": f"{name}/{key}"}
        result = (await self.data("alice", REGISTER, {"input": variables}))["registerModel"]
        assert result["__typename"] == "ModelVersion", result

    async def deliveries(self) -> list[dict[str, Any]]:
        hooks = (await self.data("admin", DELIVERIES))["webhooks"]
        return [d for hook in hooks for d in hook["deliveries"]["nodes"]]


def world_settings(mongo_uri: str, tmp_path: Path, **extra: Any) -> Settings:
    return make_settings("local", mongo_uri, None, tmp_path / "data", auth="token", **{**FAST, **extra})


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as server:
        yield server


async def open_world(settings: Settings, bucket: str, shared_apps: SharedApps) -> AsyncIterator[World]:
    async with shared_apps.running(settings) as app:
        tokens = {}
        for who, role in (("admin", Role.ADMIN), ("alice", Role.ENGINEER), ("rita", Role.READER)):
            tokens[who], _ = await create_token(who, who, role, "test")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=30) as http:
            yield World(http, tokens, Stores("local", settings), bucket, settings)


@pytest.fixture
async def world(mongo_uri: str, clean_db: str, bucket: str, shared_apps: SharedApps) -> AsyncIterator[World]:
    settings = shared_apps.settings_for("local", mongo_uri, None, clean_db, auth="token", **FAST)
    async for w in open_world(settings, bucket, shared_apps):
        yield w


def verified(request: Request, secret: str) -> dict[str, Any]:
    """The body, after the library's own verifier accepted its signature."""
    payload: dict[str, Any] = Verifier(secret).verify(request.body, request.headers)
    return payload


async def delivered(receiver: Receiver, count: int, seconds: float = 30) -> list[Request]:
    async def enough() -> list[Request] | None:
        got = receiver.delivered()
        return got if len({r.headers["webhook-id"] for r in got}) >= count else None

    found = await eventually(enough, seconds)
    assert found, f"only {len(receiver.delivered())} of {count} delivered: {receiver.requests}"
    return list(found)


async def test_only_admins_manage_and_the_secret_is_shown_once(world: World, receiver: Receiver) -> None:
    """ADMIN creates (secret returned once, never listed); ENGINEER is FORBIDDEN, and so is a READER's listing."""
    created = await world.create(receiver.url, ["VERSION_REGISTERED"], filter={"modelNames": ["m"]})
    assert created["__typename"] == "WebhookWithSecret"
    assert created["secret"].startswith("whsec_")
    assert created["webhook"]["createdBy"] == "admin"
    assert created["webhook"]["filter"] == {"modelNames": ["m"]}
    listed = await world.gql("admin", "{ webhooks { id url } }")
    assert listed["data"]["webhooks"] == [{"id": created["webhook"]["id"], "url": receiver.url}]
    assert "secret" not in json.dumps(listed) and created["secret"] not in json.dumps(listed)
    refused = await world.gql(
        "alice", CREATE, {"input": {"url": receiver.url, "events": ["VERSION_REGISTERED"]}}
    )
    assert refused["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    listing = await world.gql("rita", "{ webhooks { id } }")
    assert listing["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    rotated = await world.data(
        "admin",
        "mutation($id: ID!) { rotateWebhookSecret(input: {id: $id}) { ... on WebhookWithSecret { secret } } }",
        {"id": created["webhook"]["id"]},
    )
    assert rotated["rotateWebhookSecret"]["secret"] not in (created["secret"], None)
    gone = await world.data(
        "admin",
        "mutation($id: ID!) { deleteWebhook(input: {id: $id}) { __typename } }",
        {"id": created["webhook"]["id"]},
    )
    assert gone["deleteWebhook"]["__typename"] == "Webhook"
    again = await world.data(
        "admin",
        "mutation($id: ID!) { deleteWebhook(input: {id: $id}) { __typename ... on UserError { code } } }",
        {"id": created["webhook"]["id"]},
    )
    assert again["deleteWebhook"] == {"__typename": "WebhookNotFound", "code": "WEBHOOK_NOT_FOUND"}


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.2/hook",
        "http://localhost/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://10.1.2.3/",
        "http://192.168.0.1/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[64:ff9b::7f00:1]/",
        "http://[64:ff9b:1::a00:1]/",
        "http://[2001::1]/",
        "http://[::7f00:1]/",
        "http://[fec0::1]/",
        "http://0.0.0.0/",
        "ftp://example.com/",
        "http://user:pw@example.com/",
        "not a url",
    ],
)
async def test_unsafe_targets_are_refused(world: World, url: str) -> None:
    """Loopback, link-local, private, unspecified, mapped and NAT64 loopback, local-use NAT64, Teredo,
    IPv4-compatible and site-local addresses, other schemes and credentials are refused at creation (127.0.0.1 itself is allowed by the test's MODELHUB_WEBHOOK_ALLOWED_HOSTS)."""
    created = await world.create(url, ["VERSION_REGISTERED"])
    assert created["__typename"] == "InvalidInput", created
    assert created["field"] == "input.url"


async def test_a_host_no_longer_allowed_is_refused_at_delivery(world: World, receiver: Receiver) -> None:
    """The address is checked again at every attempt: a host taken off the allowlist gets nothing."""
    created = await world.create(receiver.url, ["VERSION_REGISTERED"])
    assert created["__typename"] == "WebhookWithSecret"
    world.settings.webhook_allowed_hosts.clear()
    await world.register("m")

    async def refused() -> list[dict[str, Any]]:
        return [d for d in await world.deliveries() if (d["lastError"] or "").startswith("refused:")]

    found = await eventually(refused, 15)
    assert found and "loopback" in found[0]["lastError"]
    assert receiver.requests == []


async def test_every_event_is_delivered_signed_through_failures(world: World, receiver: Receiver) -> None:
    """A receiver that answers 500, 503 + Retry-After, too slowly, drops the connection and redirects, then
    comes back, gets every event; each signature verifies with the standardwebhooks verifier; a retry keeps
    its webhook-id."""
    events = [
        "VERSION_REGISTERED",
        "VERSION_UPDATED",
        "VERSION_ARCHIVED",
        "ALIAS_MOVED",
        "DOWNLOAD_COMPLETED",
    ]
    created = await world.create(receiver.url, events)
    secret = created["secret"]
    receiver.plan.extend(["500", "retry-after", "slow", "drop", "redirect"])
    await world.register("m")
    await world.register("m", "w2.bin")
    await world.data(
        "alice",
        'mutation { updateModelVersion(input: {name: "m", version: 1, description: "d"}) { __typename } }',
    )
    await world.data(
        "alice", 'mutation { setAlias(input: {name: "m", alias: "prod", version: 2}) { __typename } }'
    )
    await world.data(
        "alice", 'mutation { archiveModelVersion(input: {name: "m", version: 1}) { __typename } }'
    )
    resp = await world.http.get(
        "/models/m/download", headers={"Authorization": f"Bearer {world.tokens['rita']}"}
    )
    assert resp.status_code == 200
    got = await delivered(receiver, 6)
    payloads = [verified(r, secret) for r in got]
    types = sorted(p["type"] for p in payloads)
    assert types == sorted(
        [
            "model_version.registered.v1", "model_version.registered.v1", "model_version.updated.v1",
            "alias.moved.v1", "model_version.archived.v1", "download.completed.v1",
        ]
    )  # fmt: skip
    by_type = {p["type"]: p["data"] for p in payloads}
    assert by_type["model_version.updated.v1"]["description"] == "d"
    assert by_type["alias.moved.v1"] == {**by_type["alias.moved.v1"], "alias": "prod", "toVersion": 2}
    assert by_type["download.completed.v1"]["status"] == "COMPLETED"
    assert by_type["download.completed.v1"]["engineer"] == "rita"
    with pytest.raises(WebhookVerificationError):
        Verifier("whsec_" + "A" * 43 + "=").verify(got[0].body, got[0].headers)
    # Five failed attempts, retried under the same webhook-id: 11 requests for 6 events.
    assert len(receiver.requests) == 11
    assert len({r.headers["webhook-id"] for r in receiver.requests}) == 6

    async def recorded() -> list[dict[str, Any]] | None:
        found = await world.deliveries()  # the outcome is written just after the receiver answered
        return found if {d["status"] for d in found} == {"DELIVERED"} else None

    deliveries = await eventually(recorded, 10)
    assert deliveries, await world.deliveries()
    assert sum(d["attempts"] for d in deliveries) == 11
    assert {d["lastStatusCode"] for d in deliveries} == {200}


async def test_events_of_one_model_arrive_in_order(world: World, receiver: Receiver) -> None:
    """Registry events about one model are sent one at a time in recorded order, even while the receiver
    fails: versions 1..5 registered in order arrive in order, each delivered once."""
    created = await world.create(receiver.url, ["VERSION_REGISTERED"])
    receiver.plan.extend(["500", "drop", "500"])
    for i in range(5):
        await world.register("ordered", f"w{i}.bin")
    got = await delivered(receiver, 5)
    versions = [verified(r, created["secret"])["data"]["version"] for r in got]
    assert versions == [1, 2, 3, 4, 5]


async def test_test_webhook_and_redeliver(world: World, receiver: Receiver) -> None:
    """testWebhook queues a signed webhook.test.v1; redeliver sends a delivery again with the same id."""
    created = await world.create(receiver.url, ["VERSION_REGISTERED"])
    hook_id = created["webhook"]["id"]
    queued = await world.data(
        "admin",
        "mutation($id: ID!) { testWebhook(input: {id: $id}) { ... on WebhookDelivery { id: webhookId eventType status } } }",
        {"id": hook_id},
    )
    delivery = queued["testWebhook"]
    assert delivery["eventType"] == "TEST" and delivery["status"] == "PENDING"
    first = await delivered(receiver, 1)
    assert verified(first[0], created["secret"])["type"] == "webhook.test.v1"
    again = await world.data(
        "admin",
        "mutation($d: ID!) { redeliver(input: {delivery: $d}) { __typename ... on WebhookDelivery { status } } }",
        {"d": delivery["id"]},
    )
    assert again["redeliver"] == {"__typename": "WebhookDelivery", "status": "PENDING"}
    await eventually(lambda: asyncio.sleep(0, len(receiver.delivered()) >= 2), 15)
    assert [r.headers["webhook-id"] for r in receiver.delivered()] == [delivery["id"]] * 2
    missing = await world.data(
        "admin",
        'mutation { redeliver(input: {delivery: "msg_nope"}) { __typename ... on UserError { code } } }',
    )
    assert missing["redeliver"] == {"__typename": "DeliveryNotFound", "code": "DELIVERY_NOT_FOUND"}


async def test_filter_narrows_events(world: World, receiver: Receiver) -> None:
    """A webhook filtered to one model hears nothing about another."""
    created = await world.create(receiver.url, ["VERSION_REGISTERED"], filter={"modelNames": ["wanted"]})
    await world.register("other")
    await world.register("wanted")
    got = await delivered(receiver, 1)
    assert verified(got[0], created["secret"])["data"]["name"] == "wanted"
    await asyncio.sleep(1.0)
    assert len(receiver.delivered()) == 1


async def test_a_webhook_failing_for_the_whole_window_is_disabled(
    mongo_uri: str, tmp_path: Path, bucket: str, receiver: Receiver, shared_apps: SharedApps
) -> None:
    """With a 2 s retry window, a receiver that always answers 500 gets its webhook disabled with a reason,
    and its delivery given up (FAILED)."""
    receiver.default = "500"
    async for world in open_world(
        world_settings(mongo_uri, tmp_path, webhook_retry_seconds=2.0), bucket, shared_apps
    ):
        await world.create(receiver.url, ["VERSION_REGISTERED"])
        await world.register("m")

        async def disabled(world: World = world) -> dict[str, Any] | None:
            hooks = (await world.data("admin", DELIVERIES))["webhooks"]
            return hooks[0] if not hooks[0]["enabled"] else None

        hook = await eventually(disabled, 20)
        assert hook, "the webhook was not disabled"
        assert "HTTP 500" in hook["disabledReason"]
        assert {d["status"] for d in hook["deliveries"]["nodes"]} == {"FAILED"}
        assert len(receiver.requests) >= 2


@pytest.mark.process
async def test_nothing_is_lost_across_a_kill(
    mongo_uri: str, tmp_path: Path, bucket: str, receiver: Receiver, shared_apps: SharedApps
) -> None:
    """`modelhub serve` killed (SIGKILL) with deliveries pending and events just recorded: restarted, every
    event reaches the receiver (receivers deduplicate by webhook-id)."""
    settings = world_settings(mongo_uri, tmp_path)
    async for world in open_world(settings, bucket, shared_apps):
        created = await world.create(receiver.url, ["VERSION_REGISTERED"])
        engineer = world.tokens["alice"]
    receiver.default = "500"
    env = {
        "MODELHUB_WEBHOOK_ALLOWED_HOSTS": '["127.0.0.1"]',
        "MODELHUB_WEBHOOK_BACKOFF_INITIAL_SECONDS": "0.2",
        "MODELHUB_WEBHOOK_BACKOFF_MAX_SECONDS": "0.5",
        "MODELHUB_WEBHOOK_POLL_SECONDS": "0.2",
        "MODELHUB_AUTH": "token",
    }
    stores = Stores("local", settings)
    count = 8
    with ServeProcess(settings, **env) as first:
        async with httpx.AsyncClient(base_url=first.url, timeout=30) as http:
            for i in range(count):
                stores.put(bucket, f"k/{i}.bin", b"w%d" % i)
                variables = {"name": f"k{i}", "projectName": "p", "bucket": bucket, "key": f"k/{i}.bin"}
                resp = await http.post(
                    "/graphql",
                    json={"query": REGISTER, "variables": {"input": variables}},
                    headers={"Authorization": f"Bearer {engineer}"},
                )
                assert resp.json()["data"]["registerModel"]["__typename"] == "ModelVersion", resp.text
        first.proc.kill()
        first.proc.wait()
    assert len({r.headers["webhook-id"] for r in receiver.delivered()}) == 0
    receiver.default = "ok"
    with ServeProcess(settings, **env):
        got = await delivered(receiver, count, 60)
    names = sorted({verified(r, created["secret"])["data"]["name"] for r in got})
    assert names == sorted(f"k{i}" for i in range(count))


async def test_delivery_metrics(world: World, receiver: Receiver) -> None:
    """Every outcome and event type is exported from the start; deliveries, their duration and the outbox
    gauges move with real deliveries."""
    text = (await world.http.get("/metrics")).text
    assert 'modelhub_webhook_deliveries_total{event_type="DOWNLOAD_FAILED",outcome="failed"} 0.0' in text
    assert "modelhub_webhook_outbox_depth 0.0" in text
    assert "modelhub_webhook_outbox_oldest_age_seconds 0.0" in text
    receiver.plan.append("500")
    await world.create(receiver.url, ["VERSION_REGISTERED"])
    await world.register("m")
    await delivered(receiver, 1)

    async def counted() -> str | None:
        text = (await world.http.get("/metrics")).text
        wanted = 'modelhub_webhook_deliveries_total{event_type="VERSION_REGISTERED",outcome="delivered"} 1.0'
        return text if wanted in text else None

    text = await eventually(counted, 10) or ""
    assert 'modelhub_webhook_deliveries_total{event_type="VERSION_REGISTERED",outcome="retried"} 1.0' in text
    assert 'modelhub_webhook_delivery_seconds_count{event_type="VERSION_REGISTERED"} 2.0' in text


def readme_receiver() -> dict[str, Any]:
    """The README's receiver example, run as a module (not as __main__, so it does not serve on 8080)."""
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    code = re.search(r"<!-- webhook-receiver -->\n```python\n(.*?)```", text, re.DOTALL)
    assert code, "the README has no webhook receiver example"
    namespace: dict[str, Any] = {"__name__": "readme_receiver"}
    exec(compile(code.group(1), "README.md", "exec"), namespace)
    return namespace


async def test_the_readme_receiver_verifies_and_deduplicates(world: World) -> None:
    """The README's receiver accepts real deliveries (signature checked), refuses a forged one, and handles
    a redelivered event once."""
    example = readme_receiver()
    server = ThreadingHTTPServer(("127.0.0.1", 0), example["Receiver"])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        created = await world.create(url, ["VERSION_REGISTERED"])
        example["SECRET"] = created["secret"]
        await world.register("readme")

        async def handled() -> bool:
            return len(example["seen"]) == 1

        assert await eventually(handled, 15)

        async def recorded() -> dict[str, Any] | None:
            [found] = [d for d in await world.deliveries() if d["eventType"] == "VERSION_REGISTERED"]
            return found if found["status"] == "DELIVERED" else None

        delivery = await eventually(recorded, 10)
        assert delivery and delivery["lastStatusCode"] == 204
        again = await world.data(
            "admin",
            "mutation($d: ID!) { redeliver(input: {delivery: $d}) { __typename } }",
            {"d": delivery["id"]},
        )
        assert again["redeliver"]["__typename"] == "WebhookDelivery"

        async def redelivered() -> bool:
            found = [d for d in await world.deliveries() if d["id"] == delivery["id"]]
            return found[0]["status"] == "DELIVERED"

        assert await eventually(redelivered, 15)
        assert example["seen"] == {delivery["id"]}
        async with httpx.AsyncClient() as http:
            forged = await http.post(
                url,
                content=b"{}",
                headers={"webhook-id": "msg_x", "webhook-timestamp": "1", "webhook-signature": "v1,AAAA"},
            )
        assert forged.status_code == 400
    finally:
        server.shutdown()
        server.server_close()


async def test_concurrency_is_bounded_per_webhook_and_overall(
    mongo_uri: str, tmp_path: Path, bucket: str, receiver: Receiver, shared_apps: SharedApps
) -> None:
    """A receiver that holds every request gets at most MODELHUB_WEBHOOK_CONCURRENCY_PER_WEBHOOK at once from
    one webhook, and at most MODELHUB_WEBHOOK_CONCURRENCY from all; download outcomes go side by side."""
    settings = world_settings(
        mongo_uri,
        tmp_path,
        webhook_concurrency=3,
        webhook_concurrency_per_webhook=2,
        webhook_timeout_seconds=8,
    )

    async def held(count: int) -> None:
        async def reached() -> bool:
            return receiver.most_active >= count

        assert await eventually(reached, 15), receiver.most_active
        await asyncio.sleep(0.5)  # room for one more, if the bound let it through

    async for world in open_world(settings, bucket, shared_apps):
        headers = {"Authorization": f"Bearer {world.tokens['rita']}"}
        await world.register("m")
        assert (await world.create(receiver.url, ["DOWNLOAD_COMPLETED"]))["__typename"] == "WebhookWithSecret"
        receiver.gate.clear()
        for _ in range(6):
            assert (await world.http.get("/models/m/download", headers=headers)).status_code == 200
        await held(2)
        assert receiver.most_active == 2  # one webhook: its own bound
        receiver.gate.set()
        await delivered(receiver, 6)
        receiver.gate.clear()
        receiver.most_active = 0
        second = await world.create(receiver.url + "?second", ["DOWNLOAD_COMPLETED"])
        assert second["__typename"] == "WebhookWithSecret"
        for _ in range(6):
            assert (await world.http.get("/models/m/download", headers=headers)).status_code == 200
        await held(3)
        assert receiver.most_active == 3  # two webhooks: the overall bound
        receiver.gate.set()
        await delivered(receiver, 18)
        assert len(receiver.requests) == 18
