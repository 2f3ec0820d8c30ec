"""Prometheus rules, Grafana dashboards and the compose file, checked with the real tools against a live app."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from graphql_api.config import Settings
from tests.servers import (
    GraphQLClient,
    LiveServer,
    SharedApps,
    Stores,
    abandon,
    free_port,
    wait_ready,
)

ROOT = Path(__file__).resolve().parent.parent
PROM_DIR = ROOT / "observability" / "prometheus"
GRAFANA_DIR = ROOT / "observability" / "grafana"
DASHBOARDS = sorted((GRAFANA_DIR / "dashboards").glob("*.json"))
METRICS_TOKEN = (PROM_DIR / "metrics-token").read_text().strip()


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path, (
        f"{name} is not installed: run `make system-deps` (Debian packages prometheus, docker-compose)"
    )
    return path


@pytest.mark.process
@pytest.mark.external
def test_promtool_checks_config_and_rules() -> None:
    """promtool accepts prometheus.yml and rules.yml, and the rule unit tests in tests.yml pass."""
    for args in (["check", "config", "prometheus.yml"], ["test", "rules", "tests.yml"]):
        done = subprocess.run([tool("promtool"), *args], cwd=PROM_DIR, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.process
@pytest.mark.external
def test_compose_file_is_valid() -> None:
    """docker-compose validates the stack, and every long-running service has a healthcheck."""
    done = subprocess.run(
        [tool("docker-compose"), "-f", "docker-compose.yml", "config"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    services = yaml.safe_load(done.stdout)["services"]
    assert {"app", "mongo", "minio", "minio-init", "prometheus", "grafana"} <= set(services)
    assert all("healthcheck" in spec for spec in services.values())
    assert "--workers" in services["app"]["command"] and "2" in services["app"]["command"]
    assert "--replSet" in services["mongo"]["command"]
    # Token mode, with Grafana reading the API through the READER token that token-init provisions.
    assert services["app"]["environment"]["MODELHUB_AUTH"] == "token"
    token = services["token-init"]["environment"]["MODELHUB_GRAFANA_TOKEN"]
    assert services["grafana"]["environment"]["MODELHUB_GRAFANA_TOKEN"] == token and len(token) >= 32
    # /metrics is guarded, and compose's Prometheus sends the app's token.
    assert services["app"]["environment"]["MODELHUB_METRICS_TOKEN"] == METRICS_TOKEN
    scrape = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())["scrape_configs"][0]
    assert scrape["authorization"]["credentials_file"] == "metrics-token"
    assert "READER" in services["token-init"]["command"]


@pytest.fixture
def settings(
    store_kind: str, mongo_uri: str, clean_db: str, shared_apps: SharedApps, request: pytest.FixtureRequest
) -> Settings:
    """The suite's settings with /metrics guarded by the token compose's Prometheus sends."""
    s3 = request.getfixturevalue("s3_endpoint") if store_kind == "s3" else None
    return shared_apps.settings_for(store_kind, mongo_uri, s3, clean_db, metrics_token=METRICS_TOKEN)


def panels() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            yield path.name, panel


def test_dashboards_use_provisioned_datasources() -> None:
    """Every panel points at a provisioned datasource uid, and no panel groups by an unbounded label."""
    provisioned = yaml.safe_load(
        (GRAFANA_DIR / "provisioning" / "datasources" / "datasources.yml").read_text()
    )
    uids = {ds["uid"] for ds in provisioned["datasources"]}
    assert {p.name for p in DASHBOARDS} == {"api.json", "downloads.json"}
    for name, panel in panels():
        for target in panel["targets"]:
            assert target["datasource"]["uid"] in uids, (name, panel["title"])
            assert "engineer" not in target.get("expr", ""), (name, panel["title"])


def prom_exprs() -> list[tuple[str, str]]:
    """(where, expr) for every dashboard query and rule, ready to evaluate as an instant query."""
    found = []
    for name, panel in panels():
        for target in panel["targets"]:
            if "expr" in target:
                found.append((f"{name}: {panel['title']}", target["expr"].replace("$__rate_interval", "1m")))
    rules = yaml.safe_load((PROM_DIR / "rules.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            expr = rule["expr"]
            if (
                "alert" in rule
            ):  # the alert's condition as a 0/1 sample, so a healthy system still returns data
                expr = re.sub(r"\s(>=|<=|==|!=|>|<)\s", r" \1 bool ", expr, count=1)
            found.append((f"rules.yml: {rule.get('record') or rule['alert']}", expr))
    return found


def infinity_queries(since: datetime, until: datetime) -> list[tuple[str, str, str]]:
    found = []
    for name, panel in panels():
        for target in panel["targets"]:
            if target.get("type") == "graphql":
                query = target["url_options"]["body_graphql_query"]
                query = query.replace("${__from:date:iso}", since.isoformat()).replace(
                    "${__to:date:iso}", until.isoformat()
                )
                found.append((f"{name}: {panel['title']}", query, target["root_selector"]))
    return found


@pytest.fixture
def prometheus(live: LiveServer, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    # The committed scrape config (with its bearer token file), pointed at the live server.
    scrape = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())["scrape_configs"][0]
    scrape["static_configs"] = [{"targets": [f"127.0.0.1:{live.port}"]}]
    scrape["authorization"]["credentials_file"] = str(PROM_DIR / scrape["authorization"]["credentials_file"])
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(PROM_DIR / "rules.yml")],
        "scrape_configs": [scrape],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    proc = subprocess.Popen(
        [
            tool("prometheus"),
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(f"{base}/-/ready", proc, 30)
        yield base
    finally:
        proc.terminate()
        proc.communicate(timeout=30)  # reaps it and closes its pipes


async def query(prom: httpx.AsyncClient, expr: str) -> list[Any]:
    body = (await prom.get("/api/v1/query", params={"query": expr})).json()
    assert body["status"] == "success", (expr, body)
    result: list[Any] = body["data"]["result"]
    return result


@pytest.mark.process
@pytest.mark.external
@pytest.mark.parametrize("store_kind", ["local"])
async def test_dashboards_and_rules_return_data(
    prometheus: str, live_gql: GraphQLClient, live_http: httpx.AsyncClient, stores: Stores, bucket: str
) -> None:
    """On an idle server every dashboard and rule expression already reads a number (0, not NaN or "no
    data"); after a real workload every one returns data from a real Prometheus."""
    exprs = prom_exprs()
    assert len(exprs) >= 20
    async with httpx.AsyncClient(base_url=prometheus, timeout=10) as prom:
        deadline = time.monotonic() + 60
        while True:
            idle: list[str] = []
            for where, expr in exprs:
                samples = await query(prom, expr)
                values = [float(sample["value"][1]) for sample in samples]
                if not values or any(math.isnan(v) for v in values):
                    idle.append(f"{where}: {expr} -> {values}")
            if not idle or time.monotonic() > deadline:
                break
            await _sleep(1)
        assert not idle, "no number on an idle server for:\n" + "\n".join(idle)

    stores.put(bucket, "m/a.bin", b"a" * 300_000)
    stores.put(bucket, "m/big.bin", b"b" * (24 * 1024 * 1024))
    reg = 'mutation($k: String!, $b: String!) { registerModel(input: {name: "m", projectName: "p", bucket: $b, key: $k}) { __typename } }'
    assert (await live_gql(reg, {"k": "m/a.bin", "b": bucket}))["registerModel"][
        "__typename"
    ] == "ModelVersion"
    assert (await live_gql(reg, {"k": "m/big.bin", "b": bucket}))["registerModel"][
        "__typename"
    ] == "ModelVersion"
    await live_gql(reg, {"k": "missing.bin", "b": bucket})  # StorageObjectNotFound
    assert (await live_gql.raw("{ models(first: 0) { totalCount } }"))["errors"]  # a failed request
    ticket = 'mutation($v: Int!, $m: DownloadMode!) { requestDownload(input: {name: "m", version: $v, mode: $m}) { ... on DownloadTicket { url } } }'
    for _ in range(3):
        url = (await live_gql(ticket, {"v": 1, "m": "STREAM"}, **{"X-Engineer-ID": "eve"}))[
            "requestDownload"
        ]["url"]
        assert (await live_http.get(url)).status_code == 200
    await live_gql(ticket, {"v": 1, "m": "PRESIGNED"})
    url = (await live_gql(ticket, {"v": 2, "m": "STREAM"}))["requestDownload"]["url"]
    await abandon(url)  # an abort
    url = (await live_gql(ticket, {"v": 1, "m": "STREAM"}))["requestDownload"]["url"]
    stores.delete(bucket, "m/a.bin")
    assert (await live_http.get(url)).status_code == 404  # a failed download

    async with httpx.AsyncClient(base_url=prometheus, timeout=10) as prom:
        deadline = time.monotonic() + 60
        missing: list[str] = []
        failed = 0.0
        while True:  # scrapes every second and rules evaluate every second; give them a few rounds
            missing = [f"{where}: {expr}" for where, expr in exprs if not await query(prom, expr)]
            samples = await query(prom, "modelhub_downloads_failed_total")
            failed = sum(float(sample["value"][1]) for sample in samples)
            ratio = await query(prom, "modelhub:download_failure_ratio:rate5m")
            if (
                not missing and failed == 1 and float(ratio[0]["value"][1]) > 0
            ) or time.monotonic() > deadline:
                break
            await _sleep(1)
        assert not missing, "no data for:\n" + "\n".join(missing)
        assert failed == 1
        assert float(ratio[0]["value"][1]) > 0  # the failure shows in the ratio the alert watches
        rules = (await prom.get("/api/v1/rules")).json()["data"]["groups"]
        assert all(rule["health"] == "ok" for group in rules for rule in group["rules"]), rules

    now = datetime.now(UTC)
    graphql = infinity_queries(now - timedelta(hours=6), now + timedelta(minutes=1))
    assert len(graphql) == 3
    for where, text, root in graphql:
        body = await live_gql.raw(text, **{"X-Engineer-ID": "grafana"})
        assert "errors" not in body, (where, body)
        rows: Any = body
        for part in root.split("."):
            rows = rows[part]
        assert rows, f"{where} returned no rows"


async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)
