"""Runs the embedded SecantusDB as one child process beside the app, with its data under the data dir."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType

from pymongo import MongoClient
from pymongo.errors import PyMongoError

from .net import free_port

log = logging.getLogger("modelhub.embedded")

# What the supervisor writes into `<data_dir>/db.state`; `/healthz` fails on every worker once it is FAILED.
STATE_UP = "up"
STATE_RESTARTING = "restarting"
STATE_FAILED = "failed"


class EmbeddedUnavailable(RuntimeError):
    pass


def state_failed(path: Path | None) -> bool:
    """Whether the supervisor of the embedded database at `path` gave up restarting it."""
    if path is None:
        return False
    try:
        return path.read_text().strip() == STATE_FAILED
    except OSError:
        return False


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux to SIGTERM it when the parent dies, even by SIGKILL."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:  # not Linux: the parent's own shutdown path still stops the server
        pass


class EmbeddedMongo:
    """A SecantusDB server on a free loopback port, storing into `<data_dir>/db`.

    A child process rather than a thread: WiredTiger locks its directory (so every uvicorn worker must share
    one server), and the database's work stays off the app's GIL.
    """

    def __init__(self, data_dir: Path, startup_timeout: float = 30.0) -> None:
        self.storage = data_dir / "db"
        self.log_path = data_dir / "db.log"
        self.uri_path = data_dir / "db.uri"
        self.state_path = data_dir / "db.state"
        self.startup_timeout = startup_timeout
        self.port = 0
        self.restarts = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None

    @property
    def uri(self) -> str:
        # No retryable writes: SecantusDB 0.7 records each one and, past 10,000 within 30 minutes, scans and
        # sorts all the records on every write (transactions._prune_retryable_locked), so writes slow down
        # as they accumulate (registration fell from ~40/s to ~15/s over 15,000 names). On loopback to a
        # child process a lost acknowledgement is not worth that; a real MongoDB keeps the driver default.
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true&retryWrites=false"

    def start(self) -> str:
        if importlib.util.find_spec("secantus") is None:
            raise EmbeddedUnavailable(
                "the embedded database needs the optional extra: pip install 'modelhub[embedded]' "
                "(or set MODELHUB_MONGO_URI to use your own MongoDB)"
            )
        # Only this user may read the database or learn its port.
        self.storage.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.storage.mkdir(mode=0o700, exist_ok=True)
        for directory in (self.storage.parent, self.storage):
            os.chmod(directory, 0o700)
        self.port = free_port()
        self._stopping.clear()
        self._spawn()
        uri = self._wait_ready()
        self._write_state(STATE_UP)
        return uri

    def _spawn(self) -> None:
        out = os.fdopen(os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "ab")
        cmd = [sys.executable, "-m", "secantus", "--host", "127.0.0.1", "--port", str(self.port)]
        self._proc = subprocess.Popen(
            # --sync-on-commit: an acknowledged write survives kill -9 (without it the last ~second is lost).
            [*cmd, "--storage-path", str(self.storage), "--log-level", "WARNING", "--sync-on-commit"],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        out.close()

    def _write_state(self, state: str) -> None:
        """Replaces the state file atomically: a reader (`/healthz`, every worker) never sees it empty."""
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(state)
        os.replace(tmp, self.state_path)

    def _wait_ready(self) -> str:
        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self._proc.poll() is not None:
                raise EmbeddedUnavailable(
                    f"the embedded database exited with code {self._proc.returncode}; see {self.log_path}"
                )
            try:
                with MongoClient[dict[str, object]](self.uri, serverSelectionTimeoutMS=300) as client:
                    client.admin.command("ping")
                # Other commands (seed-demo) find the running server here: WiredTiger allows one per dir.
                fd = os.open(self.uri_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "w") as fh:
                    fh.write(self.uri)
                return self.uri
            except PyMongoError:
                if time.monotonic() > deadline:
                    self._reap()
                    raise EmbeddedUnavailable(
                        f"the embedded database did not answer; see {self.log_path}"
                    ) from None
                time.sleep(0.1)

    @staticmethod
    def running_uri(data_dir: Path) -> str | None:
        """The URI of an embedded server that a `modelhub serve` keeps running on this data dir, if any."""
        path = data_dir / "db.uri"
        if not path.exists():
            return None
        uri = path.read_text().strip()
        try:
            with MongoClient[dict[str, object]](uri, serverSelectionTimeoutMS=500) as client:
                client.admin.command("ping")
        except PyMongoError:
            return None
        return uri

    def supervise(self, max_attempts: int = 5, first_backoff: float = 0.5, poll: float = 0.5) -> None:
        """Watches the child from a thread: when it dies it is reaped (no zombie) and restarted on the
        same port (so every worker's client reconnects by itself), waiting `first_backoff` seconds, doubled
        after each failed attempt; after `max_attempts` failures in a row the state file says FAILED, and
        `/healthz` fails so that the process supervisor restarts the whole service."""

        def watch() -> None:
            while not self._stopping.wait(poll):
                proc = self._proc
                if proc is None or proc.poll() is None:  # poll() reaps a dead child
                    continue
                log.error("the embedded database exited with code %s; restarting it", proc.returncode)
                self._write_state(STATE_RESTARTING)
                if not self._restart(max_attempts, first_backoff):
                    self._write_state(STATE_FAILED)
                    log.critical("the embedded database could not be restarted; /healthz now fails")
                    return

        self._supervisor = threading.Thread(target=watch, name="embedded-db-supervisor", daemon=True)
        self._supervisor.start()

    def _restart(self, max_attempts: int, backoff: float) -> bool:
        for attempt in range(1, max_attempts + 1):
            if self._stopping.wait(backoff):
                return True  # shutting down: nothing to restart
            try:
                self._spawn()
                self._wait_ready()
            except (EmbeddedUnavailable, OSError) as exc:
                log.error("restart %d of the embedded database failed: %s", attempt, exc)
                self._reap()
                backoff *= 2
                continue
            self._write_state(STATE_UP)
            self.restarts += 1  # after the state: whoever sees the count sees the state too
            log.warning("the embedded database is back on port %d", self.port)
            return True
        return False

    def _reap(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def stop(self) -> None:
        self._stopping.set()
        if self._supervisor is not None:
            self._supervisor.join(timeout=30)
            self._supervisor = None
        self.uri_path.unlink(missing_ok=True)
        self.state_path.unlink(missing_ok=True)
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        terminate(proc, self.port)

    @property
    def pid(self) -> int | None:
        """The server process's id while it runs (benchmarks read its CPU time)."""
        return self._proc.pid if self._proc is not None else None

    def kill(self) -> None:
        """Ends the server abruptly (SIGKILL), as a crash would."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None

    def __enter__(self) -> EmbeddedMongo:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def terminate(proc: subprocess.Popen[bytes], port: int, timeout: float = 15) -> None:
    """Stops a SecantusDB server process listening on `port` (SIGTERM; SIGKILL after `timeout` seconds).

    SecantusDB 0.7 stops by closing its listening socket and joining its accept thread for up to 2 s, but
    on Linux a close does not wake a thread blocked in accept(): every stop took 2 s. A connection made
    after the signal wakes that accept() (its socket lives until the call returns), and the thread then
    sees the stop; it is retried until the process exits (a refused connection is harmless)."""
    proc.terminate()
    deadline = time.monotonic() + timeout
    while True:
        try:
            proc.wait(timeout=0.05)
            return
        except subprocess.TimeoutExpired:
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                return
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
