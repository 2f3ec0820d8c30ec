"""Installs: the locks in requirements/ agree with pyproject.toml, and a plain `pip install modelhub` is the
client alone (push, list, download work; server commands say what to install)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.servers import LiveServer

ROOT = Path(__file__).resolve().parent.parent
LOCKS = {name: ROOT / "requirements" / f"{name}.txt" for name in ("server", "embedded", "dev")}
# Which extras each lock holds (besides the client's own dependencies, which every lock holds).
LOCKED_EXTRAS = {
    "server": ["server", "otel"],
    "embedded": ["server", "embedded"],
    "dev": ["server", "embedded", "otel", "dev"],
}
SERVER_ONLY = {
    "strawberry-graphql", "graphql-core", "starlette", "uvicorn", "httptools", "uvloop", "websockets",
    "beanie", "pymongo", "motor", "aioboto3", "aiobotocore", "boto3", "botocore", "prometheus-client",
    "starlette-exporter", "pydantic-settings", "secantusdb",
}  # fmt: skip


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins(lock: Path) -> dict[str, str]:
    """name -> version of every requirement in a lock, failing on one without a hash."""
    pins: dict[str, str] = {}
    for block in re.split(r"\n(?=\S)", lock.read_text()):
        if block.startswith("#") or not block.strip():
            continue
        match = re.match(r"([A-Za-z0-9_.-]+)==(\S+)", block)
        assert match, f"{lock.name}: not an exact pin: {block.splitlines()[0]}"
        assert "--hash=sha256:" in block, f"{lock.name}: {match[1]} has no hash"
        pins[_norm(match[1])] = match[2]
    return pins


def test_locks_pin_what_pyproject_pins() -> None:
    """Every exact pin of pyproject.toml's extras is in each lock that holds the extra, at that version;
    every requirement has a hash; the locks agree with each other; no lock names an index, a link or a path."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    locked = {name: _pins(path) for name, path in LOCKS.items()}
    for name, holds in LOCKED_EXTRAS.items():
        for extra in holds:
            for requirement in extras[extra]:
                match = re.match(r"([A-Za-z0-9_.-]+)(\[[^]]*\])?==([^;\s]+)", requirement)
                if match is None:
                    assert requirement.startswith("modelhub["), requirement
                    continue
                assert locked[name].get(_norm(match[1])) == match[3], (
                    f"requirements/{name}.txt does not pin {requirement}: run `make lock`"
                )
    for name, pins in locked.items():
        for other, other_pins in locked.items():
            differ = {p for p in pins.keys() & other_pins.keys() if pins[p] != other_pins[p]}
            assert not differ, f"{name} and {other} lock different versions of {sorted(differ)}"
        text = LOCKS[name].read_text()
        assert "://" not in text and not re.search(r"(?m)^-", text)  # no URL, no pip option line
    assert locked["server"].keys() | locked["embedded"].keys() <= locked["dev"].keys()
    assert not SERVER_ONLY & {_norm(r.split("~")[0].split(">")[0]) for r in project["dependencies"]}


def _wheel(into: Path) -> Path:
    """modelhub's wheel, built from a copy of the sources (a build in place would leave build/ and
    egg-info in the checkout)."""
    src = into / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "graphql_api", src / "graphql_api", ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(into / "dist"), str(src)]
    subprocess.run(pip, check=True, capture_output=True, timeout=600)
    (wheel,) = (into / "dist").glob("modelhub-*.whl")
    return wheel


# What the venv may hold besides the client's dependency tree: its own installers.
VENV_TOOLS = {"pip", "setuptools", "wheel"}
# The distributions reachable from modelhub's (extra-less) requirements, walked in the client's venv with
# only the standard library: importlib.metadata's Requires-Dist, markers evaluated by hand for `extra`.
CLOSURE = r"""
import json, re, sys
from importlib import metadata

def norm(n): return re.sub(r"[-_.]+", "-", n).lower()
installed = {norm(d.metadata["Name"]) for d in metadata.distributions()}
seen, todo = set(), ["modelhub"]
while todo:
    name = todo.pop()
    if name in seen:
        continue
    seen.add(name)
    for req in metadata.requires(name) or []:
        if "extra ==" in req:
            continue
        dep = norm(re.match(r"[A-Za-z0-9_.-]+", req)[0])
        if dep in installed:
            todo.append(dep)
print(json.dumps({"installed": sorted(installed), "needed": sorted(seen)}))
"""


@pytest.mark.process
@pytest.mark.slow
@pytest.mark.parametrize("store_kind", ["local"])
def test_client_install_without_extras(live: LiveServer, tmp_path: Path) -> None:
    """The wheel installed without extras into a fresh venv holds only the client's dependency tree (no
    Strawberry, Beanie, PyMongo, uvicorn, aioboto3); its `modelhub` pushes, lists and downloads against a
    live server, and `modelhub serve` says in one line to install modelhub[server]; the package is marked
    typed (py.typed)."""
    wheel = _wheel(tmp_path)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    # Nothing of the checkout or the test's venv may leak in (PYTHONPATH would show pip the checkout's
    # egg-info as an installed modelhub); every command runs from tmp_path for the same reason.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODELHUB_", "PYTHON", "VIRTUAL_ENV"))}
    # httpx, typer and rich come from the package index (the user's pip cache makes reruns quick).
    install = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", str(wheel)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr
    probe = subprocess.run(
        [str(venv / "bin" / "python"), "-c", CLOSURE], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert probe.returncode == 0, probe.stderr
    found = json.loads(probe.stdout)
    installed, needed = set(found["installed"]), set(found["needed"])
    assert "modelhub" in needed and {"httpx", "typer", "rich"} <= needed
    assert installed - VENV_TOOLS == needed, f"not the client's: {sorted(installed - VENV_TOOLS - needed)}"
    assert not installed & SERVER_ONLY, sorted(installed & SERVER_ONLY)
    # The SDK says it is typed (PEP 561) and its result types import without the server.
    typed = "import graphql_api, graphql_api.client_types, pathlib; print(pathlib.Path(graphql_api.__file__).parent)"
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", typed], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert where.returncode == 0, where.stderr
    assert (Path(where.stdout.strip()) / "py.typed").is_file()

    env |= {"MODELHUB_URL": live.url, "MODELHUB_ENGINEER": "pip-user", "COLUMNS": "200"}
    modelhub = str(venv / "bin" / "modelhub")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [modelhub, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )

    served = run("serve")
    assert served.returncode == 1 and served.stdout == ""
    assert len(served.stderr.strip().splitlines()) == 1, served.stderr
    assert 'pip install "modelhub[server]"' in served.stderr and "Traceback" not in served.stderr

    data = os.urandom(3 * 1024 * 1024 + 11)
    (tmp_path / "model.bin").write_bytes(data)
    pushed = run("push", "model.bin", "--name", "pip/m", "--project", "p")
    assert pushed.returncode == 0 and pushed.stdout.strip() == "pip/m@1", pushed.stderr
    listed = run("list", "--project", "p")
    assert listed.returncode == 0 and "pip/m" in listed.stdout, listed.stderr
    got = run("download", "pip/m@1", "-o", "out.bin")
    assert got.returncode == 0, got.stderr
    assert (tmp_path / "out.bin").read_bytes() == data
