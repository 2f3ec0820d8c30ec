"""Logs: request ids at the HTTP edge, and MODELHUB_LOG_FORMAT=json giving one JSON object per line with
the request's id, trace id, principal and operation."""

from __future__ import annotations

import contextvars
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from graphql_api import logs
from tests.servers import ServeProcess, make_settings, wait_ready

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE}-00f067aa0ba902b7-01"


def test_json_lines_carry_the_request_fields() -> None:
    """A record becomes one line of JSON with time, level, logger and message, the context's request fields
    when set (none when not), and an exception's traceback inside the object (still one line)."""
    formatter = logs.JsonFormatter()
    record = logging.LogRecord("modelhub.x", logging.WARNING, __file__, 1, "hello %s", ("w",), None)
    # In a fresh context: operations executed in-process by earlier tests leave their fields in this one.
    bare = json.loads(contextvars.Context().run(formatter.format, record))
    assert bare.keys() == {"time", "level", "logger", "message"} and bare["message"] == "hello w"
    tokens = [logs.request_id.set("r1"), logs.principal.set("alice"), logs.operation.set("Op")]
    try:
        try:
            raise ValueError("boom\nsecond line")
        except ValueError:
            record.exc_info = sys.exc_info()
        line = formatter.format(record)
    finally:
        logs.operation.reset(tokens[2])
        logs.principal.reset(tokens[1])
        logs.request_id.reset(tokens[0])
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["request_id"] == "r1" and parsed["principal"] == "alice" and parsed["operation"] == "Op"
    assert "trace_id" not in parsed and "ValueError: boom" in parsed["exception"]


def test_traceparent_gives_a_trace_id_only_when_well_formed() -> None:
    """The W3C traceparent's trace id is taken; malformed or all-zero ones are ignored."""
    assert logs.trace_id_of(TRACEPARENT) == TRACE
    for bad in (None, "", "00-xyz-00f067aa0ba902b7-01", f"00-{'0' * 32}-00f067aa0ba902b7-01", TRACE):
        assert logs.trace_id_of(bad) is None


@pytest.mark.parametrize("store_kind", ["local"])
async def test_every_response_has_a_request_id(http: httpx.AsyncClient) -> None:
    """A response carries the caller's X-Request-ID when it is a short plain token, else a fresh one (never
    the caller's odd value, which would otherwise reach the logs)."""
    kept = await http.get("/healthz", headers={"X-Request-ID": "job-42.step:3"})
    assert kept.headers["x-request-id"] == "job-42.step:3"
    for odd in (b"a b", b"x" * 129, "ünï".encode()):
        made = await http.get("/healthz", headers={"X-Request-ID": odd})
        assert made.headers["x-request-id"].encode() != odd and len(made.headers["x-request-id"]) == 32
    first, second = await http.get("/healthz"), await http.get("/healthz")
    assert first.headers["x-request-id"] != second.headers["x-request-id"]


@pytest.mark.process
@pytest.mark.slow
def test_serve_with_json_logs(mongo_uri: str, tmp_path: Path) -> None:
    """`modelhub serve` with MODELHUB_LOG_FORMAT=json writes nothing but JSON lines on stdout and stderr
    (the CLI's own lines included); a GraphQL request's access line names its request id, trace id,
    principal and operation."""
    settings = make_settings("local", mongo_uri, None, tmp_path / "data", auth="header")
    replica = ServeProcess(settings, MODELHUB_LOG_FORMAT="json")
    cmd = [sys.executable, "-m", "graphql_api.cli", "serve", "--port", str(replica.port)]
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(cmd, env=replica.env, stdout=stdout, stderr=stderr)
    try:
        wait_ready(f"{replica.url}/readyz", proc)
        headers = {"X-Engineer-ID": "alice", "X-Request-ID": "req-1", "traceparent": TRACEPARENT}
        query = "query ListModels { models { totalCount } }"
        resp = httpx.post(f"{replica.url}/graphql", json={"query": query}, headers=headers, timeout=30)
        assert resp.status_code == 200 and resp.headers["x-request-id"] == "req-1"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    lines: list[dict[str, Any]] = []
    for path in (out, err):
        for text in path.read_text().splitlines():
            if text.strip():
                lines.append(json.loads(text))  # every line is one JSON object
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    loggers = {line["logger"] for line in lines}
    assert {"modelhub.cli", "uvicorn.error", "uvicorn.access"} <= loggers, loggers
    (access,) = [line for line in lines if line.get("path") == "/graphql"]
    assert access["request_id"] == "req-1" and access["trace_id"] == TRACE
    assert access["principal"] == "alice" and access["operation"] == "ListModels"
    assert access["method"] == "POST" and access["status"] == 200 and access["level"] == "INFO"
