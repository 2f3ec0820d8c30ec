"""The schema's extensions, three in all: Strawberry builds every extension anew for each request and walks
each one at every hook, so the parser cache and the token limit share one, the validation cache and the
document limits another, and error masking, metrics and the request guards a third."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, ClassVar

from strawberry.extensions import ParserCache, SchemaExtension, ValidationCache
from strawberry.types import ExecutionContext

from .. import logs
from ..tracing import Tracing
from .errors import MaskUnexpectedErrors
from .guards import RequestGuards

CACHE_SIZE = 256


def parsing(max_tokens: int) -> type[SchemaExtension]:
    class Parsing(ParserCache):
        """Parses through the shared cache; no document may hold more than `max_tokens` tokens (checked
        while parsing, before any work)."""

        def __init__(self) -> None:
            super().__init__(maxsize=CACHE_SIZE)

        def on_parse(self) -> Iterator[None]:
            self.execution_context.parse_options["max_tokens"] = max_tokens
            yield from super().on_parse()

    return Parsing


def validation(rules: tuple[Any, ...]) -> type[SchemaExtension]:
    class Validation(ValidationCache):
        """Validates through the shared cache with the document limits' rules added: the rule classes are
        built once, so the cache key (which includes the rules) is the same for every request."""

        added: ClassVar[tuple[Any, ...]] = rules

        def __init__(self) -> None:
            super().__init__(maxsize=CACHE_SIZE)

        def on_operation(self) -> Iterator[None]:
            ctx = self.execution_context
            ctx.validation_rules = ctx.validation_rules + self.added
            yield

    return Validation


class OperationHooks(MaskUnexpectedErrors, RequestGuards):
    """Around each operation: unexpected errors masked, every error labelled with a code, the operation
    counted and timed; before execution: the request guards (caller, cost, rate limit, deadline)."""

    def on_operation(self) -> Iterator[None]:
        started = time.perf_counter()
        ctx = self.execution_context
        tracing = _tracing_of(ctx)
        if tracing is None:
            yield from super().on_operation()
            record_operation(ctx, started)
            return
        # Name, type and outcome only: never the document or its variables.
        with tracing.tracer.start_as_current_span("graphql.operation") as span:
            yield from super().on_operation()
            record_operation(ctx, started)
            operation_type, outcome = operation_facts(ctx)
            name = ctx.operation_name or "(anonymous)"
            span.update_name(f"{operation_type} {name}")
            attributes = {
                "graphql.operation.type": operation_type,
                "graphql.operation.name": name,
                "modelhub.outcome": outcome,
            }
            span.set_attributes(attributes | ({} if self.cost is None else {"modelhub.cost": self.cost}))

    def on_execute(self) -> Iterator[None]:
        # Parsed by now: the log lines of the rest of the request name the operation.
        logs.operation.set(self.execution_context.operation_name or "(anonymous)")
        yield from super().on_execute()


def _tracing_of(ctx: ExecutionContext) -> Tracing | None:
    app = getattr(getattr(ctx.context, "request", None), "app", None)
    return getattr(getattr(app, "state", None), "tracing", None)


def operation_facts(ctx: ExecutionContext) -> tuple[str, str]:
    """The operation's type and outcome (errors count though HTTP says 200)."""
    try:
        operation_type = ctx.operation_type.value
    except Exception:  # the document did not parse, so it has no operation type
        operation_type = "unknown"
    errors = ctx.result.errors if ctx.result is not None else None
    return operation_type, "error" if errors or ctx.result is None else "success"


def record_operation(ctx: ExecutionContext, started: float) -> None:
    """Counts an operation by type, allowlisted name and outcome."""
    services = getattr(ctx.context, "services", None)
    if services is None:
        return
    metrics = services.metrics
    operation_type, outcome = operation_facts(ctx)
    name = metrics.operation_label(ctx.operation_name)
    metrics.operations.labels(operation_type, name, outcome).inc()
    metrics.operation_duration.labels(operation_type, name).observe(time.perf_counter() - started)
