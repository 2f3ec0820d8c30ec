"""The schema's extensions, three in all: Strawberry builds every extension anew for each request and walks
each one at every hook, so the parser cache and the token limit share one, the validation cache and the
document limits another, and error masking, metrics and the request guards a third."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, ClassVar

from strawberry.extensions import ParserCache, SchemaExtension, ValidationCache
from strawberry.types import ExecutionContext

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
    counted and timed; before parsing: the caller's cost budget; before execution: the request guards
    (caller, price, rate limit, deadline)."""

    def on_operation(self) -> Iterator[None]:
        started = time.perf_counter()
        with self.budgeted():
            yield from super().on_operation()
        record_operation(self.execution_context, started)


def record_operation(ctx: ExecutionContext, started: float) -> None:
    """Counts an operation by type, allowlisted name and outcome (errors count though HTTP says 200)."""
    services = getattr(ctx.context, "services", None)
    if services is None:
        return
    metrics = services.metrics
    try:
        operation_type = ctx.operation_type.value
    except Exception:  # the document did not parse, so it has no operation type
        operation_type = "unknown"
    name = metrics.operation_label(ctx.operation_name)
    errors = ctx.result.errors if ctx.result is not None else None
    outcome = "error" if errors or ctx.result is None else "success"
    metrics.operations.labels(operation_type, name, outcome).inc()
    metrics.operation_duration.labels(operation_type, name).observe(time.perf_counter() - started)
