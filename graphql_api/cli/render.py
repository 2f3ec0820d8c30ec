"""How the command line speaks: its stderr console (JSON log records if asked), progress, sizes, times."""

from __future__ import annotations

import contextlib
import logging
import logging.config
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from rich.console import Console

from .. import logs

# What the commands say to a person; `log_format` swaps it for log records. Read it as `render.console` at
# the moment of speaking, never bound to a name at import.
console = Console(stderr=True)


class LogConsole(Console):
    """The CLI's console as log records (plain text, markup dropped), for MODELHUB_LOG_FORMAT=json."""

    def print(self, *objects: Any, **kwargs: Any) -> None:
        from rich.text import Text

        text = " ".join(Text.from_markup(o).plain if isinstance(o, str) else str(o) for o in objects)
        logging.getLogger("modelhub.cli").info("%s", text)


def log_format(fmt: logs.LogFormat) -> None:
    """With JSON logs, logging is configured before anything is said (uvicorn configures it again the same
    way) and the CLI's own lines (database, auth mode, GraphiQL) become log records: every line is JSON."""
    global console
    if (log_config := logs.config(fmt)) is not None:
        logging.config.dictConfig(log_config)
        console = LogConsole(stderr=True)


@contextlib.contextmanager
def progress_bar(description: str, quiet: bool) -> Iterator[Callable[[int, int], None] | None]:
    """A rich progress bar (bytes, rate, ETA) on a terminal; nothing with --quiet or when piped."""
    if quiet or not console.is_terminal:
        yield None
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def when(moment: datetime) -> str:
    """A time as the tables show it: UTC, to the second."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1000
    return f"{size} B"
