"""The `modelhub` command: serve on the embedded default (data kept across restarts), export-schema, seed-demo."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from pymongo import MongoClient

from tests.servers import LiveServer, free_port, wait_ready

pytestmark = pytest.mark.process  # every test runs `modelhub` in a child process

MODELHUB = [sys.executable, "-m", "graphql_api.cli"]


def serve(workdir: Path, port: int, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    if env is None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MODELHUB_")}
    proc = subprocess.Popen(
        [*MODELHUB, "serve", "--port", str(port)], cwd=workdir, env=env, stderr=subprocess.PIPE
    )
    wait_ready(f"http://127.0.0.1:{port}/readyz", proc)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> str:
    proc.send_signal(signal.SIGINT)  # Ctrl-C
    _, err = proc.communicate(timeout=30)
    return err.decode()


def test_serve_embedded_default_keeps_data(tmp_path: Path) -> None:
    """`modelhub serve` with no config serves GraphiQL, registers from .modelhub/objects, and keeps it after Ctrl-C."""
    artifact = tmp_path / ".modelhub" / "objects" / "demo" / "resnet" / "model.bin"
    artifact.parent.mkdir(parents=True)
    artifact.write_bytes(b"weights" * 1000)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = serve(tmp_path, port)
    try:
        page = httpx.get(f"{base}/graphql", headers={"Accept": "text/html"})
        assert page.status_code == 200 and "graphiql" in page.text.lower()
        q = 'mutation { registerModel(input: {name: "resnet", projectName: "vision", bucket: "demo", key: "resnet/model.bin"}) { __typename ... on ModelVersion { sizeBytes } } }'
        made = httpx.post(f"{base}/graphql", json={"query": q}).json()["data"]["registerModel"]
        assert made == {"__typename": "ModelVersion", "sizeBytes": 7000}
    finally:
        err = stop(proc)
    assert f"GraphiQL: http://127.0.0.1:{port}/graphql" in err.replace("\n", "")
    assert "embedded database stopped" in err
    assert (tmp_path / ".modelhub" / "db").is_dir()
    proc = serve(tmp_path, port)
    try:
        listed = httpx.post(
            f"{base}/graphql",
            json={"query": "{ models { totalCount nodes { name latestVersion { sizeBytes } } } }"},
        ).json()
        assert listed["data"]["models"] == {
            "totalCount": 1,
            "nodes": [{"name": "resnet", "latestVersion": {"sizeBytes": 7000}}],
        }
        resp = httpx.get(f"{base}/models/resnet/download")
        assert resp.status_code == 200 and resp.content == b"weights" * 1000
    finally:
        stop(proc)


def test_seed_demo_fills_the_embedded_db(tmp_path: Path) -> None:
    """`modelhub seed-demo` loads its own models and events (downloadable, shown by stats), refuses a
    non-empty database, and with --force adds demo data without touching a user's model."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELHUB_")}

    def seed(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*MODELHUB, "seed-demo", "--models", "8", "--events", "500", *extra],
            cwd=tmp_path, env=env, capture_output=True, text=True,
        )  # fmt: skip

    done = seed()
    assert done.returncode == 0, done.stderr
    said = " ".join(done.stderr.split())
    assert "seeded 8 new models" in said and "500 download events" in said and "modelhub-demo" in said
    rebuilt = subprocess.run(
        [*MODELHUB, "rebuild-rollups"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert rebuilt.returncode == 0 and "rebuilt" in rebuilt.stderr, rebuilt.stderr
    user_file = tmp_path / ".modelhub" / "objects" / "demo" / "resnet" / "model.bin"
    user_file.parent.mkdir(parents=True)
    user_file.write_bytes(b"mine" * 100)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = serve(tmp_path, port)
    try:
        q = "{ downloadStats(groupBy: [PROJECT]) { rows { projectName downloads aborted } } models { totalCount nodes { name } } }"
        data = httpx.post(f"{base}/graphql", json={"query": q}).json()["data"]
        rows = data["downloadStats"]["rows"]
        assert sum(r["downloads"] for r in rows) == 500 and len(rows) >= 3
        assert any(r["aborted"] for r in rows) and data["models"]["totalCount"] == 8
        assert all(n["name"].startswith("demo/") for n in data["models"]["nodes"])
        sizes = [
            p.stat().st_size for p in (tmp_path / ".modelhub" / "objects" / "modelhub-demo").rglob("*.bin")
        ]
        assert len(sizes) == 8 and max(sizes) > 1000 * min(sizes)  # sparse artifacts from KB to GB
        demo_name = data["models"]["nodes"][0]["name"]
        peek = httpx.get(f"{base}/models/{demo_name}/download", headers={"Range": "bytes=0-9"})
        assert peek.status_code == 206 and peek.content == bytes(10)
        reg = 'mutation { registerModel(input: {name: "resnet", projectName: "vision", bucket: "demo", key: "resnet/model.bin"}) { __typename } }'
        assert httpx.post(f"{base}/graphql", json={"query": reg}).json()["data"]["registerModel"] == {
            "__typename": "ModelVersion"
        }
    finally:
        stop(proc)
    refused = seed()
    assert refused.returncode == 1 and "not empty" in refused.stderr and "Traceback" not in refused.stderr
    forced = seed("--force", "--seed", "2")
    assert forced.returncode == 0, forced.stderr
    proc = serve(tmp_path, port)
    try:
        q = '{ model(name: "resnet") { downloadCount } downloads(filter: {modelNames: ["resnet"]}) { totalCount } }'
        data = httpx.post(f"{base}/graphql", json={"query": q}).json()["data"]
        assert data == {"model": {"downloadCount": 0}, "downloads": {"totalCount": 0}}
        total = httpx.post(f"{base}/graphql", json={"query": "{ downloads { totalCount } }"}).json()
        assert total["data"]["downloads"]["totalCount"] == 500 + 1 + 500  # two seeds and the peek
    finally:
        stop(proc)


def test_export_schema_writes_the_sdl(tmp_path: Path) -> None:
    """`modelhub export-schema -o FILE` writes the SDL that the code defines."""
    out = tmp_path / "schema.graphql"
    done = subprocess.run([*MODELHUB, "export-schema", "-o", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert out.read_text() == (Path(__file__).resolve().parent.parent / "schema.graphql").read_text()


def test_kill_9_mid_download_leaves_aborted(tmp_path: Path, mongo_uri: str) -> None:
    """A server killed with SIGKILL mid-stream: after a restart its download is ABORTED with the bytes sent."""

    artifact = tmp_path / ".modelhub" / "objects" / "bkt" / "big.bin"
    artifact.parent.mkdir(parents=True)
    with artifact.open("wb") as fh:
        fh.truncate(512 * 1024 * 1024)  # sparse: far more than the socket buffers hold
    db_name = "kill9_" + str(os.getpid())
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MODELHUB_")},
        "MODELHUB_MONGO_URI": mongo_uri,
        "MODELHUB_MONGO_DB": db_name,
        "MODELHUB_STALE_DOWNLOAD_SECONDS": "2",
        "MODELHUB_HEARTBEAT_SECONDS": "0.2",
        "MODELHUB_AUTH": "header",
    }
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = serve(tmp_path, port, env)
    try:
        q = 'mutation { registerModel(input: {name: "big", projectName: "p", bucket: "bkt", key: "big.bin"}) { __typename } }'
        assert (
            httpx.post(f"{base}/graphql", json={"query": q}).json()["data"]["registerModel"]["__typename"]
            == "ModelVersion"
        )
        received = 0
        with httpx.stream("GET", f"{base}/models/big/download") as resp:
            for chunk in resp.iter_raw(1024 * 1024):
                received += len(chunk)
                if received >= 8 * 1024 * 1024:
                    wait_for_heartbeat(mongo_uri, db_name)
                    proc.kill()
                    break
        proc.communicate(timeout=10)
        with MongoClient(mongo_uri) as client:
            (event,) = list(client[db_name].download_events.find())
            assert event["status"] == "IN_PROGRESS"  # the dead process could not finish it
        proc = serve(tmp_path, port, env)
        deadline = time.monotonic() + 20
        with MongoClient(mongo_uri) as client:
            while (event := client[db_name].download_events.find_one())["status"] == "IN_PROGRESS":
                assert time.monotonic() < deadline, event
                time.sleep(0.2)
        assert event["status"] == "ABORTED" and 0 < event["bytes_sent"] < 512 * 1024 * 1024
    finally:
        if proc.poll() is None:
            stop(proc)


def wait_for_heartbeat(mongo_uri: str, db_name: str) -> None:
    """Waits until a heartbeat has recorded some progress on the (only) in-progress download."""
    deadline = time.monotonic() + 10
    with MongoClient(mongo_uri) as client:
        while not (client[db_name].download_events.find_one({"bytes_sent": {"$gt": 0}})):
            assert time.monotonic() < deadline, "no heartbeat recorded progress"
            time.sleep(0.05)


def test_token_commands_and_first_admin_token(tmp_path: Path, mongo_uri: str) -> None:
    """`modelhub token create|list|revoke` manage tokens (`--grant PROJECT:ROLE` gives project roles); a
    token-mode server's first start prints one ADMIN token, which then works, while an anonymous request is
    refused."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELHUB_")}
    # The commands use the suite's database (each start of an embedded one costs seconds; the embedded
    # default is what the servers below and the other tests of this module run on).
    on_uri = {**env, "MODELHUB_MONGO_URI": mongo_uri, "MODELHUB_MONGO_DB": f"tokens_{uuid.uuid4().hex[:8]}"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*MODELHUB, "token", *args], cwd=tmp_path, env=on_uri, capture_output=True, text=True
        )

    made = run("create", "--name", "ci", "--principal", "ci-bot", "--role", "engineer")
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert token.startswith("mh_") and "created ENGINEER token 'ci'" in made.stderr
    assert run("create", "--name", "ci", "--principal", "x").returncode == 1  # the name is taken
    assert run("create", "--name", "ci", "--principal", "x", "--exist-ok").returncode == 0
    listed = run("list")
    assert "ci-bot" in listed.stdout and token not in listed.stdout
    scoped = run(
        "create", "--name", "v", "--principal", "v", "--grant", "vision:ENGINEER", "--grant", "nlp:reader"
    )
    assert scoped.returncode == 0 and "created nlp:READER vision:ENGINEER token 'v'" in scoped.stderr, (
        scoped.stderr
    )
    assert run("create", "--name", "w", "--principal", "w", "--grant", "vision").returncode == 2
    assert run("revoke", "ci").returncode == 0 and run("revoke", "ci").returncode == 1

    port = free_port()
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    proc = serve(fresh, port, {**env, "MODELHUB_AUTH": "token"})
    try:
        base = f"http://127.0.0.1:{port}/graphql"
        anonymous = httpx.post(base, json={"query": "{ models { totalCount } }"}).json()
        assert anonymous["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    finally:
        err = stop(proc)
    admin = err.split("created the first ADMIN token (shown once, keep it): ")[1].split()[0]
    proc = serve(fresh, port, {**env, "MODELHUB_AUTH": "token"})
    try:
        listed_tokens = httpx.post(
            base, json={"query": "{ tokens { name role } }"}, headers={"Authorization": f"Bearer {admin}"}
        ).json()
        assert listed_tokens["data"]["tokens"] == [{"name": "bootstrap-admin", "role": "ADMIN"}]
    finally:
        err = stop(proc)
    assert "created the first ADMIN token" not in err  # printed once, on the first start only


def _cli(*args: str, url: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELHUB_")}
    env |= {"MODELHUB_URL": url, "MODELHUB_ENGINEER": "cli", "COLUMNS": "200"}
    return subprocess.run([*MODELHUB, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def _on_a_terminal(*args: str, url: str, cwd: Path) -> str:
    """Runs the CLI with a pseudo-terminal as stdout and stderr; returns all it wrote."""
    import pty

    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELHUB_")}
    env |= {"MODELHUB_URL": url, "MODELHUB_ENGINEER": "cli", "TERM": "xterm", "COLUMNS": "120"}
    main, child = pty.openpty()
    proc = subprocess.Popen([*MODELHUB, *args], cwd=cwd, env=env, stdout=child, stderr=child, stdin=child)
    os.close(child)
    out = b""
    while True:
        try:
            block = os.read(main, 65536)
        except OSError:  # the child closed its end
            break
        if not block:
            break
        out += block
    os.close(main)
    assert proc.wait(timeout=60) == 0, out.decode(errors="replace")
    return out.decode(errors="replace")


@pytest.mark.parametrize("store_kind", ["local", "s3"])
def test_push_list_info_download_stats(live: LiveServer, tmp_path: Path) -> None:
    """The client commands on both stores: push, list, info, download (byte-exact), stats; progress
    bars on a terminal only, never with --quiet or when piped."""
    data = os.urandom(5 * 1024 * 1024 + 7)
    (tmp_path / "model.bin").write_bytes(data)
    pushed = _cli(
        "push", "model.bin", "--name", "cli/m", "--project", "p", "--tag", "a", url=live.url, cwd=tmp_path
    )
    assert pushed.returncode == 0, pushed.stderr
    assert pushed.stdout.strip() == "cli/m@1" and "pushed cli/m version 1" in " ".join(pushed.stderr.split())
    assert "━" not in pushed.stderr  # piped: no progress bar
    listed = _cli("list", "--project", "p", url=live.url, cwd=tmp_path)
    assert listed.returncode == 0 and "cli/m" in listed.stdout and "5.2 MB" in listed.stdout
    shown = _cli("info", "cli/m@1", url=live.url, cwd=tmp_path)
    assert shown.returncode == 0 and "s3://modelhub-artifacts/uploads/cli/m/" in shown.stdout
    got = _on_a_terminal("download", "cli/m", "-o", "out.bin", url=live.url, cwd=tmp_path)
    assert (tmp_path / "out.bin").read_bytes() == data
    assert "download cli/m" in got and "━" in got and "MB" in got  # the bar, its bytes and rate
    quiet = _on_a_terminal("download", "cli/m@1", "-o", "q.bin", "--quiet", url=live.url, cwd=tmp_path)
    assert "━" not in quiet and (tmp_path / "q.bin").read_bytes() == data
    stats = _cli("stats", "--by", "model", url=live.url, cwd=tmp_path)
    assert stats.returncode == 0 and "cli/m" in stats.stdout


@pytest.mark.parametrize("store_kind", ["local"])
def test_client_commands_fail_in_one_line(live: LiveServer, tmp_path: Path) -> None:
    """Not found, a server that is down, and bad usage: exit 1, 1 and 2, one line each, no traceback."""
    missing = _cli("download", "nope", url=live.url, cwd=tmp_path)
    assert missing.returncode == 1 and "MODEL_NOT_FOUND" in missing.stderr
    down = _cli("list", url=f"http://127.0.0.1:{free_port()}", cwd=tmp_path)
    assert down.returncode == 1 and "cannot reach" in down.stderr
    usage = _cli("push", "missing.bin", url=live.url, cwd=tmp_path)
    assert usage.returncode == 2
    for result in (missing, down):
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, (
            result.stderr
        )


def test_client_commands_do_not_load_the_server_stack() -> None:
    """Importing the CLI (all a client command like `modelhub list` needs) loads neither Strawberry, Beanie,
    aioboto3 nor uvicorn: they are imported by the server-side commands that use them."""
    probe = "import sys, graphql_api.cli; print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in "
    probe += "{'strawberry', 'beanie', 'aioboto3', 'uvicorn', 'graphql'})))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""
