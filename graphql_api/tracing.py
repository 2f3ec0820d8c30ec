"""OpenTelemetry traces (the `otel` extra), on when an OTLP endpoint is configured by the standard `OTEL_*`
variables: a server span per HTTP request (the caller's `traceparent` continued and returned), a span per
GraphQL operation and per MongoDB command, all exported over OTLP/HTTP. Off, nothing here is imported."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping
from typing import Any

from . import __version__

log = logging.getLogger("modelhub.tracing")


class Tracing:
    """One app's tracer provider (never the process-global one: each app, in a test say, keeps its own)
    and what the edges need from it."""

    def __init__(self, provider: Any) -> None:
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.provider = provider
        self.tracer = provider.get_tracer("modelhub", __version__)
        self.propagator = TraceContextTextMapPropagator()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Tracing | None:
        """Tracing as the `OTEL_*` variables say (OTLP/HTTP to OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or
        OTEL_EXPORTER_OTLP_ENDPOINT; OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_BSP_* apply), or None
        when no endpoint is set, OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none."""
        env = os.environ if env is None else env
        if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
            return None
        if env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
            return None
        if not (env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")):
            return None
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
        except ImportError:
            log.warning('an OTLP endpoint is set but tracing is not installed: pip install "modelhub[otel]"')
            return None
        resource = Resource.create({"service.version": __version__})
        if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
            resource = resource.merge(Resource({"service.name": "modelhub"}))
        provider = TracerProvider(resource=resource)
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        return cls(provider)

    def mongo_listener(self) -> Any:
        """A span per MongoDB command inside a traced request (the pymongo instrumentation's listener, given
        to our client only; command documents are not recorded). Commands outside any span (the health
        watch's ping every half second, the background loops' polls) are left out: each would be a trace."""
        from opentelemetry import trace
        from opentelemetry.instrumentation.pymongo import CommandTracer
        from pymongo import monitoring

        inner = CommandTracer(self.tracer)

        class InRequests(monitoring.CommandListener):
            def started(self, event: monitoring.CommandStartedEvent) -> None:
                if trace.get_current_span().get_span_context().is_valid:
                    inner.started(event)

            def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
                inner.succeeded(event)  # nothing when its start was left out

            def failed(self, event: monitoring.CommandFailedEvent) -> None:
                inner.failed(event)

        return InRequests()

    @contextlib.contextmanager
    def server_span(self, method: str, path: str, headers: Mapping[bytes, bytes]) -> Iterator[Any]:
        """The request's span, current while it runs, continuing the caller's `traceparent` if any."""
        from opentelemetry.trace import SpanKind

        carrier = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in headers.items()
            if name in (b"traceparent", b"tracestate")
        }
        attributes = {"http.request.method": method, "url.path": path}
        with self.tracer.start_as_current_span(
            f"{method} {path}",
            context=self.propagator.extract(carrier),
            kind=SpanKind.SERVER,
            attributes=attributes,
        ) as span:
            yield span

    def response_started(self, span: Any, status: int) -> list[tuple[bytes, bytes]]:
        """Records the response status on the request's span (5xx: an error) and returns its `traceparent`
        (and `tracestate`) as response headers, so that a caller can find the trace."""
        from opentelemetry.trace import StatusCode, set_span_in_context

        span.set_attribute("http.response.status_code", status)
        if status >= 500:
            span.set_status(StatusCode.ERROR)
        carrier: dict[str, str] = {}
        self.propagator.inject(carrier, context=set_span_in_context(span))
        return [(name.encode(), value.encode()) for name, value in carrier.items()]

    @staticmethod
    def trace_id(span: Any) -> str | None:
        context = span.get_span_context()
        return f"{context.trace_id:032x}" if context.is_valid else None

    def shutdown(self) -> None:
        """Exports what is buffered and stops (blocking: run it in a thread)."""
        self.provider.shutdown()
