"""Usage-driven clean-up: retention candidates, `modelhub prune` dry run and apply, the grace period, crash
and resume, tombstones, shared objects, on the local store and S3."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from graphql_api.auth import create_token
from graphql_api.config import Settings
from graphql_api.prune import may_delete
from graphql_api.roles import Role
from tests.servers import GraphQLClient, Stores, make_settings

ALICE = {"X-Engineer-ID": "alice"}
OLD = datetime.now(UTC) - timedelta(days=200)
REGISTER = """mutation($n: String!, $b: String!, $k: String!) {
  registerModel(input: {name: $n, projectName: "p", bucket: $b, key: $k}) { __typename ... on ModelVersion { version } }
}"""
CANDIDATES = """query($d: Int!, $a: Boolean!, $l: Int!) {
  retentionCandidates(notDownloadedForDays: $d, keepAliased: $a, keepLatest: $l) {
    totalCount totalBytes reclaimableBytes graceDays
    candidates { version { name version } sizeBytes reclaimableBytes lastDownloadedAt deleteAfter }
  }
}"""
DOWNLOAD = """mutation($n: String!, $v: Int!) { requestDownload(input: {name: $n, version: $v}) {
  __typename ... on UserError { code } } }"""


async def register(gql: GraphQLClient, stores: Stores, bucket: str, name: str, keys: list[str]) -> None:
    """Versions 1..len(keys) of `name`, version i's artifact at keys[i-1] (8 bytes each)."""
    for key in keys:
        stores.put(bucket, key, b"weights!")
        r = await gql(REGISTER, {"n": name, "b": bucket, "k": key}, **ALICE)
        assert r["registerModel"]["__typename"] == "ModelVersion", r


def age_everything(db: Any) -> None:
    """Moves every version's registration and every download so far 200 days back."""
    db.model_versions.update_many({}, {"$set": {"created_at": OLD}})
    db.download_events.update_many({}, {"$set": {"started_at": OLD}})


async def admin(gql: GraphQLClient) -> dict[str, str]:
    token, _ = await create_token("prune-admin-" + os.urandom(4).hex(), "root", Role.ADMIN, "test")
    return {"Authorization": f"Bearer {token}"}


def run_prune(settings: Settings, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        prune_command(settings, *args),
        env=prune_env(settings, **env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def prune_command(settings: Settings, *args: str) -> list[str]:
    return [sys.executable, "-m", "graphql_api.cli", "prune", "--data-dir", str(settings.data_dir), *args]


def prune_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELHUB_")}
    env.update(
        MODELHUB_MONGO_URI=str(settings.mongo_uri),
        MODELHUB_MONGO_DB=settings.mongo_db,
        MODELHUB_STORAGE=settings.storage_backend,
        MODELHUB_SIGNING_SECRET=settings.resolved_signing_secret().decode(),
        PYTHONPATH=str(Path(__file__).resolve().parent.parent),
    )
    if settings.storage_backend == "s3":
        env.update(
            MODELHUB_S3_ENDPOINT_URL=str(settings.s3_endpoint_url),
            MODELHUB_S3_REGION="us-east-1",
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            MODELHUB_ALLOWED_STORAGE='["*"]',
        )
    env.update(extra)
    return env


def steps(output: str) -> list[tuple[str, str, int]]:
    """(outcome, model, version) of each step line `prune --apply` printed."""
    found = []
    for line in output.splitlines():
        parts = line.split("\t")
        if len(parts) == 4 and parts[0].isupper():
            found.append((parts[0], parts[1], int(parts[2])))
    return found


def version_doc(db: Any, name: str, version: int) -> dict[str, Any]:
    doc: dict[str, Any] = db.model_versions.find_one({"name": name, "version": version})
    return doc


@pytest.mark.process
async def test_candidates_follow_the_rules_and_the_dry_run_prints_them(
    gql: GraphQLClient, stores: Stores, bucket: str, db: Any, settings: Settings
) -> None:
    """Only versions with no download in the window, registered before it, not a model's latest and not
    aliased are candidates (keepAliased and keepLatest say so); ENGINEERs may not ask; the dry run prints
    the same list and total and changes nothing."""
    await register(gql, stores, bucket, "m", ["m1.bin", "m2.bin", "m3.bin", "m4.bin", "m5.bin"])
    await gql('mutation { setAlias(input: {name: "m", alias: "prod", version: 2}) { __typename } }', **ALICE)
    assert (await gql(DOWNLOAD, {"n": "m", "v": 1}, **ALICE))["requestDownload"][
        "__typename"
    ] == "DownloadTicket"
    age_everything(db)  # version 1's download is now 200 days old
    assert (await gql(DOWNLOAD, {"n": "m", "v": 3}, **ALICE))["requestDownload"][
        "__typename"
    ] == "DownloadTicket"
    await register(gql, stores, bucket, "fresh", ["f1.bin", "f2.bin"])  # registered within the window
    who = await admin(gql)

    async def listed(aliased: bool = True, latest: int = 1) -> dict[str, Any]:
        found: dict[str, Any] = (await gql(CANDIDATES, {"d": 90, "a": aliased, "l": latest}, **who))[
            "retentionCandidates"
        ]
        return found

    found = await listed()
    assert [(c["version"]["name"], c["version"]["version"]) for c in found["candidates"]] == [
        ("m", 1),
        ("m", 4),
    ]
    assert found["totalCount"] == 2 and found["totalBytes"] == 16 and found["reclaimableBytes"] == 16
    assert found["candidates"][0]["lastDownloadedAt"] is not None
    assert (
        found["candidates"][1]["lastDownloadedAt"] is None and found["candidates"][1]["deleteAfter"] is None
    )
    assert found["graceDays"] == 7
    unaliased = await listed(aliased=False)
    assert [c["version"]["version"] for c in unaliased["candidates"]] == [1, 2, 4]
    two_latest = await listed(latest=2)
    assert [c["version"]["version"] for c in two_latest["candidates"]] == [1]
    forbidden = await gql.raw(CANDIDATES, {"d": 90, "a": True, "l": 1}, **ALICE)
    assert forbidden["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    bad = await gql.raw(CANDIDATES, {"d": 0, "a": True, "l": 1}, **who)
    assert bad["errors"][0]["extensions"]["code"] == "INVALID_INPUT"

    dry = run_prune(settings, "--not-downloaded-for-days", "90", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    rows = [line.split("\t")[:4] for line in dry.stdout.splitlines()[1:-1]]
    assert rows == [["m", "1", "8", "8"], ["m", "4", "8", "8"]]
    assert dry.stdout.splitlines()[-1].startswith("2 candidates") and "16 reclaimable" in dry.stdout
    assert not version_doc(db, "m", 1)["archived"] and stores.exists(bucket, "m1.bin")


@pytest.mark.process
async def test_apply_archives_then_deletes_after_the_grace_period(
    gql: GraphQLClient, http: Any, stores: Stores, bucket: str, db: Any, settings: Settings
) -> None:
    """`--apply` archives the candidates; their objects stay through the grace period; then they are
    deleted, except one downloaded meanwhile (given back) and one unarchived meanwhile (left alone). A
    pruned version is a tombstone: listed with its figures, `objectDeleted`, downloads OBJECT_DELETED/410."""
    await register(gql, stores, bucket, "m", [f"m{i}.bin" for i in range(1, 6)])
    assert (await gql(DOWNLOAD, {"n": "m", "v": 1}, **ALICE))["requestDownload"][
        "__typename"
    ] == "DownloadTicket"
    age_everything(db)
    first = run_prune(settings, "--not-downloaded-for-days", "30", "--apply")
    assert first.returncode == 0, first.stderr
    assert steps(first.stdout) == [("ARCHIVED", "m", v) for v in (1, 2, 3, 4)]
    assert all(version_doc(db, "m", v)["archived"] for v in (1, 2, 3, 4))
    assert all(stores.exists(bucket, f"m{v}.bin") for v in (1, 2, 3, 4))
    again = run_prune(settings, "--not-downloaded-for-days", "30", "--apply")
    assert again.returncode == 0, again.stderr
    assert steps(again.stdout) == []  # the grace period is not over: nothing deleted
    # During the grace period: version 2 is downloaded (by number: allowed while its deletion is pending),
    # version 3 is unarchived by its owner.
    assert (await gql(DOWNLOAD, {"n": "m", "v": 2}, **ALICE))["requestDownload"][
        "__typename"
    ] == "DownloadTicket"
    unarchive = 'mutation { unarchiveModelVersion(input: {name: "m", version: 3}) { __typename } }'
    assert (await gql(unarchive, **ALICE))["unarchiveModelVersion"]["__typename"] == "ModelVersion"
    assert version_doc(db, "m", 3)["prune_marked_at"] is None
    # The grace period ends (8 days pass; version 2's download was 3 days ago):
    for doc in db.model_versions.find({"prune_marked_at": {"$ne": None}}):
        earlier = doc["prune_marked_at"] - timedelta(days=8)
        db.model_versions.update_one({"_id": doc["_id"]}, {"$set": {"prune_marked_at": earlier}})
    db.download_events.update_many(
        {"model_version": 2, "started_at": {"$gt": OLD}},
        {"$set": {"started_at": datetime.now(UTC) - timedelta(days=3)}},
    )
    last = run_prune(settings, "--not-downloaded-for-days", "30", "--apply")
    assert last.returncode == 0, last.stderr
    done = steps(last.stdout)
    # Version 3, unarchived by hand and still unused, is archived again: a new grace period, not a deletion.
    assert sorted(done) == [
        ("ARCHIVED", "m", 3),
        ("CANCELLED", "m", 2),
        ("DELETED", "m", 1),
        ("DELETED", "m", 4),
    ]
    assert not stores.exists(bucket, "m1.bin") and not stores.exists(bucket, "m4.bin")
    assert (
        stores.exists(bucket, "m2.bin")
        and stores.exists(bucket, "m3.bin")
        and stores.exists(bucket, "m5.bin")
    )
    assert not version_doc(db, "m", 2)["archived"] and version_doc(db, "m", 2)["prune_marked_at"] is None

    tomb = await gql(
        """{ modelVersion(name: "m", version: 1) { objectDeleted archived downloadCount }
             model(name: "m") { versions(includeArchived: true) { totalCount } } }"""
    )
    assert tomb["modelVersion"]["objectDeleted"] is True and tomb["model"]["versions"]["totalCount"] == 5
    refused = (await gql(DOWNLOAD, {"n": "m", "v": 1}, **ALICE))["requestDownload"]
    assert refused == {"__typename": "ObjectDeleted", "code": "OBJECT_DELETED"}
    revive = 'mutation { unarchiveModelVersion(input: {name: "m", version: 1}) { __typename } }'
    assert (await gql(revive, **ALICE))["unarchiveModelVersion"]["__typename"] == "ObjectDeleted"
    response = await http.get("/models/m/download", params={"version": "1"}, headers=ALICE)
    assert response.status_code == 410 and response.json()["error"]["code"] == "OBJECT_DELETED"
    rerun = run_prune(settings, "--not-downloaded-for-days", "30", "--apply")
    assert [s for s in steps(rerun.stdout) if s[0] in ("DELETED", "TOMBSTONED")] == []  # idempotent


@pytest.mark.process
async def test_shared_objects_are_deleted_only_with_their_last_version(
    gql: GraphQLClient, stores: Stores, bucket: str, db: Any, settings: Settings
) -> None:
    """Two versions on one object: it goes once, with the second; an object a kept version (another
    model's latest) also points at is never deleted; reclaimable bytes count each object once."""
    await register(gql, stores, bucket, "m", ["shared-with-n.bin", "a.bin", "a.bin", "m4.bin"])
    await register(gql, stores, bucket, "n", ["shared-with-n.bin"])
    age_everything(db)
    who = await admin(gql)
    found = (await gql(CANDIDATES, {"d": 30, "a": True, "l": 1}, **who))["retentionCandidates"]
    assert [(c["version"]["version"], c["reclaimableBytes"]) for c in found["candidates"]] == [
        (1, 0),
        (2, 8),
        (3, 0),
    ]
    assert found["reclaimableBytes"] == 8 and found["totalBytes"] == 24
    result = run_prune(settings, "--not-downloaded-for-days", "30", "--apply", MODELHUB_PRUNE_GRACE_DAYS="0")
    assert result.returncode == 0, result.stderr
    done = [s for s in steps(result.stdout) if s[0] != "ARCHIVED"]
    assert done == [("TOMBSTONED", "m", 1), ("TOMBSTONED", "m", 2), ("DELETED", "m", 3)]
    assert stores.exists(bucket, "shared-with-n.bin") and stores.exists(bucket, "m4.bin")
    assert not stores.exists(bucket, "a.bin")
    assert all(version_doc(db, "m", v)["object_deleted"] for v in (1, 2, 3))


def kill_mid_prune(settings: Settings, args: tuple[str, ...]) -> str:
    """Runs `prune --apply` (pausing after each object's deletion, before the version becomes a tombstone)
    and SIGKILLs it after it reported its third deletion: its output."""
    env = prune_env(settings, MODELHUB_PRUNE_GRACE_DAYS="0", MODELHUB_PRUNE_PAUSE_SECONDS="1.5")
    proc = subprocess.Popen(
        prune_command(settings, *args), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    seen: list[str] = []
    deadline = time.monotonic() + 90
    assert proc.stdout is not None
    while sum(line.startswith("DELETED") for line in seen) < 3:
        line = proc.stdout.readline()
        assert line or proc.poll() is None, (seen, proc.stderr.read() if proc.stderr else "")
        seen.append(line)
        assert time.monotonic() < deadline
    time.sleep(0.75)  # into the pause after the next object's deletion
    proc.send_signal(signal.SIGKILL)
    rest, _ = proc.communicate(timeout=30)
    return "".join(seen) + rest


@pytest.mark.process
async def test_a_killed_prune_resumes_and_deletes_each_object_once(
    gql: GraphQLClient, stores: Stores, bucket: str, db: Any, settings: Settings
) -> None:
    """`prune --apply` SIGKILLed in the middle of its deletions, then run again: every candidate ends a
    tombstone with its object gone, each reported deleted exactly once, nothing left half done."""
    count = 12
    await register(gql, stores, bucket, "m", [f"k{i}.bin" for i in range(1, count + 1)])
    age_everything(db)
    args = ("--not-downloaded-for-days", "30", "--apply")
    output = await asyncio.to_thread(kill_mid_prune, settings, args)
    first = steps(output)
    deleted_first = [v for outcome, _, v in first if outcome == "DELETED"]
    assert 3 <= len(deleted_first) < count - 1, "the kill must land in the middle of the deletions"
    assert any(stores.exists(bucket, f"k{v}.bin") for v in range(1, count))
    # Killed in the pause after an object's deletion: that version is left decided but not yet a tombstone.
    half_done = [d["version"] for d in db.model_versions.find({"object_deleting": True})]
    assert len(half_done) == 1 and not stores.exists(bucket, f"k{half_done[0]}.bin")

    second = run_prune(settings, *args, MODELHUB_PRUNE_GRACE_DAYS="0")
    assert second.returncode == 0, second.stderr
    deleted_second = [v for outcome, _, v in steps(second.stdout) if outcome == "DELETED"]
    assert sorted(deleted_first + deleted_second) == list(range(1, count))  # each exactly once
    for v in range(1, count):
        doc = version_doc(db, "m", v)
        assert doc["object_deleted"] and not doc["object_deleting"] and doc["object_deleted_at"] is not None
        assert not stores.exists(bucket, f"k{v}.bin")
    assert stores.exists(bucket, f"k{count}.bin") and not version_doc(db, "m", count).get("object_deleted")
    third = run_prune(settings, *args, MODELHUB_PRUNE_GRACE_DAYS="0")
    assert steps(third.stdout) == []


def test_only_the_servers_own_or_allowed_storage_is_ever_deleted(tmp_path: Path, mongo_uri: str) -> None:
    """Deletable objects: under the server's upload prefix, or in MODELHUB_ALLOWED_STORAGE; nothing else."""
    settings = make_settings(
        "s3", mongo_uri, "http://127.0.0.1:1", tmp_path, allowed_storage=["team-models/prod"]
    )
    assert may_delete(settings, "modelhub-artifacts", "uploads/x/model.bin")
    assert not may_delete(settings, "modelhub-artifacts", "elsewhere/model.bin")
    assert may_delete(settings, "team-models", "prod/model.bin")
    assert not may_delete(settings, "team-models", "production/model.bin")
    assert not may_delete(settings, "someone-elses-bucket", "prod/model.bin")
