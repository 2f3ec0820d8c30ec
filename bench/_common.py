"""Helpers shared by the benchmark scripts: free ports, child servers, RSS readings."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from graphql_api.net import free_port

__all__ = [
    "app_env",
    "arg_parser",
    "free_port",
    "percentile",
    "rss_kib",
    "start_app",
    "start_process",
    "stop",
    "wait_http",
]


def arg_parser(doc: str | None) -> argparse.ArgumentParser:
    """A bench's command line, its module docstring as the help text (line breaks kept)."""
    return argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def percentile(values: list[float], q: float) -> float:
    """The `q` quantile (0..1) of `values` by rank (nan when there are none)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not found for {pid}")


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


def app_env(mongo_uri: str, data_dir: Path | str, db: str = "bench") -> dict[str, str]:
    """The environment of a benchmarked `modelhub serve`: header identities, no rate limit, and cost budgets
    no benchmark spends (every request costs at least 1, and the anonymous budget is 1,000 an hour)."""
    return {"MODELHUB_MONGO_URI": mongo_uri, "MODELHUB_DATA_DIR": str(data_dir), "MODELHUB_AUTH": "header",
            "MODELHUB_MONGO_DB": db, "MODELHUB_RATE_LIMIT_PER_MINUTE": "0",
            "MODELHUB_COST_BUDGET": str(10**12), "MODELHUB_ANONYMOUS_COST_BUDGET": str(10**12)}  # fmt: skip


def start_process(
    cmd: list[str], env: dict[str, str], ready_url: str, timeout: float = 60
) -> subprocess.Popen[bytes]:
    """`cmd` in a child process (output discarded) once `ready_url` answers; stopped again if it never does,
    or if the wait is interrupted (Ctrl-C)."""
    proc = subprocess.Popen(
        cmd, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_http(ready_url, timeout)
    except BaseException:
        stop(proc)
        raise
    return proc


def start_app(
    env: dict[str, str], port: int, workers: int = 1, timeout: float = 60
) -> subprocess.Popen[bytes]:
    """`modelhub serve` in a child process, so its memory and CPU are its own; `timeout`: how long its start
    may take (the first start on a large loaded DB builds the indexes the app declares)."""
    cmd = [sys.executable, "-m", "graphql_api.cli", "serve", "--port", str(port), "--workers", str(workers)]
    return start_process(cmd, env, f"http://127.0.0.1:{port}/healthz", timeout)


def start_moto(port: int) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    return start_process(cmd, {}, f"http://127.0.0.1:{port}/moto-api/")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
