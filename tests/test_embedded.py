"""The embedded SecantusDB child process: starts on a free port, keeps data across restarts and crashes,
and is restarted by its supervisor when it dies."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import pytest
from pymongo import MongoClient

from graphql_api.embedded import EmbeddedMongo, state_failed

pytestmark = pytest.mark.process  # the embedded database is a child process


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


def _is_zombie_or_gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return True
    return state != "Z"


def test_supervisor_restarts_a_killed_database_on_the_same_port(tmp_path: Path) -> None:
    """A SIGKILLed embedded DB is reaped (no zombie) and restarted on its port, with its data, state `up`."""
    db = EmbeddedMongo(tmp_path)
    with db:
        db.supervise(first_backoff=0.1, poll=0.1)
        with MongoClient(db.uri) as client:
            client.modelhub.models.insert_one({"name": "kept"})
        assert db._proc is not None
        old_pid = db._proc.pid
        os.kill(old_pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while db.restarts < 1:
            assert time.monotonic() < deadline, "not restarted"
            time.sleep(0.1)
        assert _is_zombie_or_gone(old_pid)
        assert not Path(f"/proc/{old_pid}").exists()
        assert db.state_path.read_text() == "up"
        with MongoClient(db.uri, serverSelectionTimeoutMS=5000) as client:
            assert client.modelhub.models.find_one({"name": "kept"}) is not None
    assert not db.state_path.exists()


def test_supervisor_gives_up_and_says_failed(tmp_path: Path) -> None:
    """When the port is taken, restarts fail with backoff and the state file turns `failed`."""
    db = EmbeddedMongo(tmp_path, startup_timeout=5)
    with db:
        db.supervise(max_attempts=2, first_backoff=0.1, poll=0.1)
        assert db._proc is not None
        blocker = socket.socket()
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        db._proc.kill()
        db._proc.wait()
        try:
            blocker.bind(("127.0.0.1", db.port))
            blocker.listen()
            deadline = time.monotonic() + 30
            while not state_failed(db.state_path):
                assert time.monotonic() < deadline, db.state_path.read_text()
                time.sleep(0.1)
        finally:
            blocker.close()
