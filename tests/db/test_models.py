"""The models collection owner: checksum leases (the background verifier's claim on a PENDING version), and
whose an object is (with the uploads owner)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from graphql_api.config import Settings
from graphql_api.db import connect
from graphql_api.db import models as models_db
from graphql_api.db import uploads as uploads_db
from graphql_api.db.common import indexes_used, object_filter
from graphql_api.documents import ChecksumStatus, ModelVersion, Upload, UploadStatus, utcnow


def version(n: int, status: ChecksumStatus = ChecksumStatus.PENDING) -> ModelVersion:
    return ModelVersion(
        name=f"m{n}", version=1, bucket="b", key="k", size_bytes=1, etag="e", content_type="x",
        project_name="p", owner="o", checksum_status=status,
    )  # fmt: skip


@pytest.mark.parametrize("store_kind", ["local"])
async def test_a_pending_version_is_leased_once_until_its_lease_lapses(settings: Settings, db: Any) -> None:
    """Only PENDING versions are offered, oldest first; a held lease keeps them off the list until it
    lapses, then it can be retaken; a lease is a compare-and-set, so of two claims one wins."""
    async with connect(settings.mongo_uri or "", settings.mongo_db):
        await models_db.insert_many_versions([version(1, ChecksumStatus.VERIFIED), version(2), version(3)])
        now = utcnow()
        offered = await models_db.pending_checksums(now)
        ids = {d["name"]: d["_id"] for d in db.model_versions.find()}
        assert offered == [(ids["m2"], None), (ids["m3"], None)]
        first = await models_db.lease_checksum(ids["m2"], None, now + timedelta(minutes=5))
        assert first is not None and first.name == "m2"
        assert await models_db.pending_checksums(now) == [(ids["m3"], None)]  # m2 is held
        assert await models_db.lease_checksum(ids["m2"], None, now) is None  # the lease seen is stale
        later = now + timedelta(minutes=6)
        [(lapsed, seen)] = [p for p in await models_db.pending_checksums(later) if p[0] == ids["m2"]]
        again = await models_db.lease_checksum(lapsed, seen, later + timedelta(minutes=5))
        assert again is not None and again.name == "m2"  # lapsed: retaken, with the new lease
        stored = db.model_versions.find_one({"name": "m2"})["checksum_lease_until"]
        assert abs(stored - (later + timedelta(minutes=5))) < timedelta(milliseconds=2)
        both = await asyncio.gather(
            *(models_db.lease_checksum(ids["m3"], None, later + timedelta(minutes=5)) for _ in range(2))
        )
        assert sorted(v is not None for v in both) == [False, True]
        await models_db.finish_checksum(ids["m3"], {"checksum_status": ChecksumStatus.VERIFIED})
        # m3 is done for good; m2 comes back once its second lease lapses
        assert await models_db.pending_checksums(later) == []
        assert [p[0] for p in await models_db.pending_checksums(later + timedelta(minutes=6))] == [ids["m2"]]


@pytest.mark.parametrize("store_kind", ["local"])
async def test_an_object_used_outside_the_writable_projects_is_found_off_an_index(settings: Settings) -> None:
    """`object_used_outside` finds a version or an upload (of any status) of a project not among the
    writable ones at exactly that object, and none of a writable project; each is read off its
    collection's bucket_key index."""
    async with connect(settings.mongo_uri or "", settings.mongo_db):
        await models_db.insert_many_versions([version(1)])  # project p, at b/k
        upload = Upload(
            name="u", project_name="q", owner="o", bucket="b", key="u", size_bytes=1, sha256="0" * 64,
            content_type="x", expires_at=utcnow(), status=UploadStatus.EXPIRED,
        )  # fmt: skip
        await uploads_db.insert(upload)
        assert await models_db.object_used_outside("b", "k", {"q"})
        assert not await models_db.object_used_outside("b", "k", {"p", "q"})
        assert not await models_db.object_used_outside("b", "u", {"q"})
        assert await uploads_db.object_used_outside("b", "u", {"p"})
        assert not await uploads_db.object_used_outside("b", "u", {"q"})
        assert not await uploads_db.object_used_outside("c", "u", set())
        for document in (ModelVersion, Upload):
            plan = await document.get_pymongo_collection().find(object_filter("b", "k")).explain()
            assert indexes_used(plan) == {"bucket_key"}, document
