"""Catalogue pages side by side with MLflow's model registry: `models(first: 50, filter: {namePrefix})` and
`{projectNames}` against MLflow's `search_registered_models` with the same filter and `max_results=50`.

Usage: python -m bench.mlflow_listing --mlflow /tmp/mlflow-venv/bin/mlflow [--names 600,20000]

MLflow is never a project dependency: install it in a venv of its own (`python -m venv /tmp/mlflow-venv &&
/tmp/mlflow-venv/bin/pip install mlflow`) and pass its `mlflow` command. Starts MLflow's tracking server on
SQLite and `modelhub serve` on the embedded SecantusDB (one worker each), fills both straight through their
databases with the same names (m00000.., two projects: a tag `project` in MLflow), and prints each shape's
median over rounds that alternate between the two servers (so that they share the machine's noise). A
project filter in MLflow is `tags.project = 'q'`; the prefix is `name LIKE 'm00%'` (the REST call the
client's `search_registered_models` makes).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import statistics
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from pymongo import MongoClient

from bench._common import app_env, free_port, start_app, stop, wait_http
from graphql_api.embedded import EmbeddedMongo

PAGE = "{ models(first: 50, filter: %s) { nodes { name } } }"
SEARCH = "/api/2.0/mlflow/registered-models/search"
SHAPES = {  # title: (modelhub filter, MLflow filter_string)
    "prefix m000 (100 match)": ('{namePrefix: "m000"}', "name LIKE 'm000%'"),
    "prefix m00 (10x more)": ('{namePrefix: "m00"}', "name LIKE 'm00%'"),
    "project q (half)": ('{projectNames: ["q"]}', "tags.project = 'q'"),
}


def start_mlflow(mlflow: str, data: Path, port: int) -> subprocess.Popen[bytes]:
    cmd = [mlflow, "server", "--backend-store-uri", f"sqlite:///{data / 'mlflow.db'}",
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--default-artifact-root", str(data / "artifacts")]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_http(f"http://127.0.0.1:{port}/health", timeout=180)
    return proc


def fill_mlflow(db: Path, start: int, end: int, now_ms: int) -> None:
    with sqlite3.connect(db) as conn:
        conn.executemany(
            "INSERT INTO registered_models (name, creation_time, last_updated_time, description) "
            "VALUES (?, ?, ?, ?)",
            [(f"m{i:05d}", now_ms - i, now_ms - i, "") for i in range(start, end)],
        )
        conn.executemany(
            "INSERT INTO registered_model_tags (key, value, name) VALUES (?,?,?)",
            [("project", "pq"[i % 2], f"m{i:05d}") for i in range(start, end)],
        )


def fill_modelhub(uri: str, start: int, end: int, now: datetime) -> None:
    docs = []
    for i in range(start, end):
        at = now - timedelta(seconds=random.Random(i).uniform(0, 90 * 86400))
        docs.append({"name": f"m{i:05d}", "project_name": "pq"[i % 2], "owner": "o", "description": None,
                     "tags": [], "metadata": {}, "aliases": {}, "alias_moves": 0, "created_at": at,
                     "updated_at": at})  # fmt: skip
    models = MongoClient(uri)["bench"]["models"]
    for at in range(0, len(docs), 2000):
        models.insert_many(docs[at : at + 2000])


async def timed(call: Callable[[], Awaitable[httpx.Response]]) -> float:
    started = time.perf_counter()
    resp = await call()
    assert resp.status_code == 200, resp.text
    return time.perf_counter() - started


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mlflow", required=True, help="the `mlflow` command of a venv with MLflow")
    parser.add_argument("--names", default="600,20000", help="registry sizes to measure at")
    parser.add_argument("--rounds", type=int, default=31)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="modelhub-mlflow-") as tmp, EmbeddedMongo(Path(tmp)) as mongo:
        data = Path(tmp)
        ml_port, app_port = free_port(), free_port()
        ml = start_mlflow(args.mlflow, data, ml_port)
        app = start_app(app_env(mongo.uri, tmp), app_port)
        now, have = datetime.now(UTC), 0
        try:
            async with (
                httpx.AsyncClient(base_url=f"http://127.0.0.1:{app_port}", timeout=120) as hub,
                httpx.AsyncClient(base_url=f"http://127.0.0.1:{ml_port}", timeout=120) as mlf,
            ):
                print(f"{'shape':34} {'modelhub':>10} {'MLflow':>10}  ratio")
                for size in [int(n) for n in args.names.split(",")]:
                    fill_mlflow(data / "mlflow.db", have, size, int(now.timestamp() * 1000))
                    fill_modelhub(mongo.uri, have, size, now)
                    have = size
                    settle = time.monotonic() + 5  # the app's catalogue reads the new models
                    while time.monotonic() < settle:
                        await hub.post("/graphql", json={"query": PAGE % "{}"})
                        await asyncio.sleep(0.2)
                    for title, (flt, filter_string) in SHAPES.items():
                        body = {"query": PAGE % flt}
                        params = {"filter": filter_string, "max_results": 50}
                        check = (await mlf.get(SEARCH, params=params)).json()
                        assert len(check.get("registered_models", [])) == 50, check
                        ours: list[float] = []
                        theirs: list[float] = []
                        for _ in range(3):
                            await hub.post("/graphql", json=body)
                            await mlf.get(SEARCH, params=params)
                        for _ in range(args.rounds):
                            ours.append(await timed(lambda b=body: hub.post("/graphql", json=b)))
                            theirs.append(await timed(lambda p=params: mlf.get(SEARCH, params=p)))
                        a, b = statistics.median(ours) * 1000, statistics.median(theirs) * 1000
                        print(f"{size:>7,} {title:26} {a:8.1f} ms {b:7.1f} ms  {a / b:5.2f}x")
        finally:
            stop(app)
            stop(ml)


if __name__ == "__main__":
    asyncio.run(main())
