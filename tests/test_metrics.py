"""/metrics: domain, HTTP and GraphQL metrics with bounded labels, in one process and across 2 workers."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from graphql_api.app import create_app
from graphql_api.config import Settings
from graphql_api.metrics import SIZE_BUCKETS, Metrics, reap_dead_workers
from tests.servers import GraphQLClient, Stores, free_port, wait_ready

REGISTER = """mutation Reg($n: String!, $b: String!) {
  registerModel(input: {name: $n, projectName: "p", bucket: $b, key: "m.bin"}) { __typename }
}"""


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for (sample, lbls), v in samples(text).items():
        if sample == name and all(dict(lbls).get(k) == w for k, w in labels.items()):
            total += v
    return total


async def test_metrics_token_guards_the_exposition(settings: Settings) -> None:
    """With MODELHUB_METRICS_TOKEN set, /metrics answers 401 (JSON, UNAUTHENTICATED) to no or a wrong bearer
    token, in constant shape, and the exposition only to the right one."""
    app = create_app(settings.model_copy(update={"metrics_token": SecretStr("metrics-secret-token")}))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            for headers in (
                {},
                {"Authorization": "Bearer wrong"},
                {"Authorization": "Basic metrics-secret-token"},
            ):
                refused = await client.get("/metrics", headers=headers)
                assert refused.status_code == 401
                assert refused.json()["error"]["code"] == "UNAUTHENTICATED"
                assert refused.headers["www-authenticate"].startswith("Bearer")
                assert "modelhub_" not in refused.text
            ok = await client.get("/metrics", headers={"Authorization": "Bearer metrics-secret-token"})
            assert ok.status_code == 200 and "modelhub_build_info" in ok.text


async def test_domain_and_graphql_metrics(gql: GraphQLClient, stores: Stores, bucket: str) -> None:
    """Registrations count by outcome, GraphQL errors count though HTTP says 200, and no engineer is a label."""
    stores.put(bucket, "m.bin", b"abc")
    await gql(REGISTER, {"n": "ok", "b": bucket}, **{"X-Engineer-ID": "secret-engineer"})
    await gql(REGISTER, {"n": "bad name", "b": bucket})
    await gql(REGISTER, {"n": "ok", "b": "missing-bucket"})
    body = await gql.raw("query Broken { models(first: 1000) { totalCount } }")
    assert body["errors"]  # HTTP 200 (checked by gql.raw) with an error inside
    await gql.raw("{ nope }")  # a validation error
    await gql("query ListModels { models { totalCount } }")  # allowlisted by default (the SDK's name)
    text = (await gql.http.get("/metrics")).text
    assert value(text, "modelhub_registrations_total", outcome="created") == 1
    assert value(text, "modelhub_registrations_total", outcome="invalid_input") == 1
    assert value(text, "modelhub_registrations_total", outcome="storage_object_not_found") == 1
    assert value(text, "modelhub_graphql_operations_total", operation_name="other", outcome="error") >= 1
    assert value(text, "modelhub_graphql_operations_total", operation_type="mutation", outcome="success") == 3
    assert value(text, "modelhub_graphql_operations_total", outcome="error") == 2
    assert (
        value(text, "modelhub_graphql_operations_total", operation_name="ListModels", outcome="success") == 1
    )
    assert value(text, "modelhub_build_info") == 1
    assert value(text, "modelhub_http_requests_total", path="/graphql") >= 5
    assert "secret-engineer" not in text and 'operation_name="Reg"' not in text and "Broken" not in text


def test_label_allowlists_and_buckets() -> None:
    """Operation and model names outside their allowlists become `other`; size buckets reach past 100 GB."""
    metrics = Metrics(operation_allowlist=["TopModels"], model_allowlist=["bert"])
    assert metrics.operation_label("TopModels") == "TopModels"
    assert metrics.operation_label("EveryUserGetsALabel") == "other"
    assert metrics.operation_label(None) == "anonymous"
    assert metrics.model_label("bert") == "bert" and metrics.model_label("alice-private") == "other"
    assert SIZE_BUCKETS[-1] > 100e9


@pytest.mark.process
def test_reap_dead_workers(tmp_path: Path) -> None:
    """Live-gauge files of a dead pid are dropped; counters of the dead pid and files of live pids stay."""
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(dead.stdout)
    for name in (f"gauge_livesum_{dead_pid}.db", f"counter_{dead_pid}.db", f"gauge_livesum_{os.getpid()}.db"):
        (tmp_path / name).write_bytes(b"")
    assert reap_dead_workers(str(tmp_path)) == [dead_pid]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"counter_{dead_pid}.db", f"gauge_livesum_{os.getpid()}.db"]
    )


@pytest.mark.process
def test_two_workers_add_up(mongo_uri: str, tmp_path: Path, bucket: str) -> None:
    """Under `modelhub serve --workers 2` the counters scraped from either worker add up to the real total."""
    port = free_port()
    data_dir = tmp_path / "data"
    (data_dir / "objects" / bucket).mkdir(parents=True)
    (data_dir / "objects" / bucket / "m.bin").write_bytes(b"abc")
    env = {
        **os.environ,
        "MODELHUB_MONGO_URI": mongo_uri,
        "MODELHUB_MONGO_DB": "workers_" + bucket.replace("-", "_"),
        "MODELHUB_SIGNING_SECRET": "s" * 32,
        "MODELHUB_AUTH": "header",
    }
    cmd = [sys.executable, "-m", "graphql_api.cli", "serve", "--workers", "2", "--port", str(port)]
    proc = subprocess.Popen(
        [*cmd, "--data-dir", str(data_dir)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(f"{base}/readyz", proc)
        for i in range(30):  # a new connection each time, so the kernel spreads them over both workers
            r = httpx.post(
                f"{base}/graphql", json={"query": REGISTER, "variables": {"n": f"m{i}", "b": bucket}}
            )
            assert r.json()["data"]["registerModel"]["__typename"] == "ModelVersion"
        pids = {
            int(m)
            for p in (data_dir / "prometheus-multiproc").iterdir()
            if (m := re.sub(r"\D", "", p.stem.rsplit("_", 1)[-1]))
        }
        assert len(pids) >= 2, pids
        for _ in range(4):  # whichever worker answers the scrape, the totals are the same
            text = httpx.get(f"{base}/metrics").text
            assert value(text, "modelhub_registrations_total", outcome="created") == 30
            assert value(text, "modelhub_graphql_operations_total", operation_type="mutation") == 30
    finally:
        proc.terminate()
        proc.communicate(timeout=30)  # reaps it and closes its pipes
