"""Several replicas starting at once on one database (a Deployment rolled out, or scaled from zero): each
becomes ready, and the start-up work (migrations, the whole-model rollup fill, the first ADMIN token) is
done once, correctly."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import pymongo
import pytest

from graphql_api.db import connect
from graphql_api.db.rollups import BY_MODEL
from tests.analytics.test_stats import make_events, store
from tests.servers import ServeProcess, make_settings, wait_ready

REPLICAS = 3


async def _seed(mongo_uri: str, db_name: str) -> None:
    async with connect(mongo_uri, db_name):
        await store(make_events(120, seed=5), bulk=True)


@pytest.mark.process
@pytest.mark.slow
def test_three_replicas_start_together_and_do_the_start_up_work_once(mongo_uri: str, tmp_path: Path) -> None:
    """Three `modelhub serve` processes started together on a database of an earlier release (download
    rollups without their whole-model buckets, no token yet) all become ready; exactly one fills the
    whole-model rollups (equal to what the write path writes) and exactly one creates and prints the
    bootstrap ADMIN token; every migration is recorded as done."""
    settings = make_settings("local", mongo_uri, None, tmp_path / "data", auth="token")
    asyncio.run(_seed(mongo_uri, settings.mongo_db))
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(mongo_uri, tz_aware=True)
    db = client[settings.mongo_db]
    try:
        written: dict[str, list[dict[str, Any]]] = {}
        for coarse in BY_MODEL.values():  # as before the whole-model rollups existed
            collection = db[str(coarse.document.Settings.name)]
            written[collection.name] = list(collection.find().sort("_id", 1))
            assert written[collection.name]
            collection.delete_many({})
        db["migrations"].delete_many({})
        assert db["api_tokens"].count_documents({}) == 0

        replicas = [ServeProcess(settings) for _ in range(REPLICAS)]
        logs = [tmp_path / f"replica-{i}.log" for i in range(REPLICAS)]
        procs: list[subprocess.Popen[bytes]] = []
        try:
            for replica, log in zip(replicas, logs, strict=True):
                cmd = [sys.executable, "-m", "graphql_api.cli", "serve", "--port", str(replica.port)]
                with log.open("wb") as err:
                    procs.append(
                        subprocess.Popen(cmd, env=replica.env, stdout=subprocess.DEVNULL, stderr=err)
                    )
            for replica, proc in zip(replicas, procs, strict=True):
                wait_ready(f"{replica.url}/readyz", proc, seconds=120)
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        texts = [log.read_text() for log in logs]

        tokens = list(db["api_tokens"].find())
        assert [(t["name"], t["role"]) for t in tokens] == [("bootstrap-admin", "ADMIN")]
        printed = [t.count("created the first ADMIN token") for t in texts]
        assert sorted(printed) == [0] * (REPLICAS - 1) + [1], texts
        filled = [t.count("whole-model rollup buckets from the per-version ones") for t in texts]
        assert sorted(filled) == [0] * (REPLICAS - 1) + [1], texts
        recorded = list(db["migrations"].find({}, {"_id": 1, "done": 1}))
        assert "model_rollups" in {r["_id"] for r in recorded} and all(r["done"] for r in recorded), recorded
        for name, docs in written.items():
            found = list(db[name].find().sort("_id", 1))
            # Float sums are added in another order: equal up to rounding.
            assert [d.pop("duration_sum") for d in found] == pytest.approx(
                [d.pop("duration_sum") for d in docs]
            )
            assert found == docs
    finally:
        client.drop_database(settings.mongo_db)
        client.close()
