"""The embedded SecantusDB child process: starts on a free port, keeps data across restarts and crashes."""

from __future__ import annotations

from pathlib import Path

from pymongo import MongoClient

from graphql_api.embedded import EmbeddedMongo


def test_data_survive_restart_and_kill(tmp_path: Path) -> None:
    """A document written before a clean stop, and one before a SIGKILL, are both there after restarting."""
    db = EmbeddedMongo(tmp_path)
    with db, MongoClient(db.uri) as client:
        client.modelhub.models.insert_one({"name": "kept", "version": 1})
    db.start()
    try:
        with MongoClient(db.uri) as client:
            assert client.modelhub.models.find_one({"name": "kept"}, {"_id": 0}) == {
                "name": "kept",
                "version": 1,
            }
            client.modelhub.models.insert_one({"name": "crash", "version": 1})
    finally:
        db.kill()
    with db, MongoClient(db.uri) as client:
        assert sorted(d["name"] for d in client.modelhub.models.find()) == ["crash", "kept"]
    assert (tmp_path / "db").is_dir()


def test_embedded_files_are_private(tmp_path: Path) -> None:
    """The data dir and the database files are readable by their user only (0700 dirs, 0600 files)."""
    data = tmp_path / "data"
    with EmbeddedMongo(data) as db:
        for path in (data, data / "db"):
            assert path.stat().st_mode & 0o777 == 0o700, path
        for path in (data / "db.uri", data / "db.log"):
            assert path.stat().st_mode & 0o777 == 0o600, path
        assert db.uri
