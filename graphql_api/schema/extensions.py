"""Strawberry schema extensions: Prometheus metrics per GraphQL operation."""

from __future__ import annotations

import time
from collections.abc import Iterator

from strawberry.extensions import SchemaExtension


class OperationMetrics(SchemaExtension):
    """Counts every operation by type, allowlisted name and outcome (errors count though HTTP says 200)."""

    def on_operation(self) -> Iterator[None]:
        started = time.perf_counter()
        yield
        ctx = self.execution_context
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
