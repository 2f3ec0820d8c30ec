"""The README's walkthrough runs as written: its `<!-- runnable -->` blocks, in order, in one bash shell, in a
fresh directory, against a live server on the embedded-default shape (header identities, local store)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import LiveServer

README = Path(__file__).resolve().parent.parent / "README.md"
RUNNABLE = re.compile(r"<!-- runnable -->\n```bash\n(.*?)```", re.DOTALL)


def runnable_blocks() -> list[str]:
    return RUNNABLE.findall(README.read_text())


def test_the_readme_marks_a_walkthrough() -> None:
    """The walkthrough exists: blocks that push, list, download and compare."""
    script = "\n".join(runnable_blocks())
    for step in ("modelhub push", "modelhub list", "modelhub download", "cmp model.bin resnet.bin"):
        assert step in script


@pytest.mark.process
@pytest.mark.parametrize("store_kind", ["local"])
def test_readme_walkthrough_runs_as_written(live: LiveServer, tmp_path: Path) -> None:
    """Every runnable block succeeds in order (`set -e`), and the downloaded file is the pushed one; the
    only change is the server's address (the README's is `make serve`'s 127.0.0.1:8000)."""
    (tmp_path / ".venv").symlink_to(Path(sys.prefix))  # the README runs `.venv/bin/modelhub` from the repo
    script = "set -euo pipefail\n" + "\n".join(runnable_blocks())
    script = script.replace("http://127.0.0.1:8000", live.url)
    done = subprocess.run(
        ["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8", "COLUMNS": "120"},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "identical" in done.stdout and "pushed resnet version 1" in " ".join(done.stderr.split())
    assert (tmp_path / "resnet.bin").read_bytes() == (tmp_path / "model.bin").read_bytes()
