"""Log output: uvicorn's text lines, or one JSON object per line (MODELHUB_LOG_FORMAT=json) carrying the
request's id, trace id, principal and GraphQL operation from context variables set at the edges."""

from __future__ import annotations

import contextvars
import json
import logging
import re
from datetime import UTC, datetime
from typing import Any, Literal

LogFormat = Literal["text", "json"]

# What the current request is: set by the HTTP edge (request id, trace id), the authentication of the
# caller (principal) and the GraphQL extension (operation); each request runs in its own task, so its
# values never leak into another's.
request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
trace_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("trace_id", default=None)
principal: contextvars.ContextVar[str | None] = contextvars.ContextVar("principal", default=None)
operation: contextvars.ContextVar[str | None] = contextvars.ContextVar("operation", default=None)

_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")


def trace_id_of(traceparent: str | None) -> str | None:
    """The trace id of a W3C `traceparent` header; None when absent, malformed or all zeros."""
    match = _TRACEPARENT.match((traceparent or "").strip().lower())
    if match is None or set(match[1]) == {"0"}:
        return None
    return match[1]


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line: time (UTC, ISO 8601), level, logger, message, then the
    request's fields when there is a request, and uvicorn's access fields for an access line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field, var in (
            ("request_id", request_id),
            ("trace_id", trace_id),
            ("principal", principal),
            ("operation", operation),
        ):
            value = var.get()
            if value is not None:
                line[field] = value
        if record.name == "uvicorn.access" and isinstance(record.args, tuple) and len(record.args) == 5:
            client, method, path, _, status = record.args
            line |= {"client": client, "method": method, "path": path, "status": status}
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def config(fmt: LogFormat, level: str = "INFO") -> dict[str, Any] | None:
    """A `logging.config.dictConfig` for uvicorn's `log_config` and the CLI: None for text (uvicorn's own
    configuration, as before), else every logger (uvicorn's, the app's, the libraries') through the JSON
    formatter, the access log on stdout and the rest on stderr as uvicorn does."""
    if fmt == "text":
        return None
    handler = {"class": "logging.StreamHandler", "formatter": "json"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": f"{__name__}.JsonFormatter"}},
        "handlers": {
            "default": {**handler, "stream": "ext://sys.stderr"},
            "access": {**handler, "stream": "ext://sys.stdout"},
        },
        "loggers": {
            "uvicorn": {"handlers": ["default"], "level": level, "propagate": False},
            "uvicorn.error": {"level": level},
            "uvicorn.access": {"handlers": ["access"], "level": level, "propagate": False},
        },
        "root": {"handlers": ["default"], "level": level},
    }
