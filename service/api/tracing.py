"""OpenTelemetry tracing of the HTTP service: the SDK's provider and exporters as the settings ask, and each request a
span, a child of the caller's W3C `traceparent` when it sends one, with the phases of its work below it
(service/runtime/tracing.py).

Nothing here runs unless tracing is on (Settings.tracing_on): with it off no provider is made, no span is started,
and no global OpenTelemetry state is set. The provider is the app's own and is never made global, so that
several apps in one process (the bench, the tests) each trace, or not, on their own.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import Token
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

# The API only (already imported by the layers below); the SDK is imported when a provider is made.
from opentelemetry import context, propagate, trace
from opentelemetry.trace import Status, StatusCode, format_trace_id

from service.runtime import tracing
from service.settings import Settings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span
    from starlette.types import Scope

SERVICE_NAME = "medix-reward"


def make_provider(settings: Settings) -> TracerProvider:
    """The SDK's provider with a batching processor per exporter the settings name."""
    from opentelemetry.sdk.resources import SERVICE_NAME as NAME
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # The SDK reads its own standard variables here: OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES for the
    # resource, OTEL_TRACES_SAMPLER[_ARG] for the sampler (default: parent-based, always on), OTEL_BSP_* for the
    # batching.
    resource = Resource.create()
    if str(resource.attributes.get(NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({NAME: SERVICE_NAME}))
    provider = TracerProvider(resource=resource)
    for exporter in exporters(settings):
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def exporters(settings: Settings) -> list[SpanExporter]:
    out: list[SpanExporter] = []
    for name in settings.trace_exporters:
        if name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            out.append(ConsoleSpanExporter())
        else:
            out.append(otlp_exporter(settings))
    return out


def otlp_exporter(settings: Settings) -> SpanExporter:
    """OTLP to the endpoint the settings name (the exporter's default on localhost when none is); the exporter reads
    its headers, timeout, compression and certificates from their standard variables."""
    traces, base = settings.otel_exporter_otlp_traces_endpoint, settings.otel_exporter_otlp_endpoint
    if settings.otel_exporter_otlp_protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(endpoint=traces or base)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as OTLPHTTPSpanExporter

    # Over HTTP the base endpoint is a root under which traces go to /v1/traces; the traces' own one is used as is.
    return OTLPHTTPSpanExporter(endpoint=traces or (f"{base.rstrip('/')}/v1/traces" if base else None))


class RequestSpans:
    """Each request's own span (kind SERVER, named by its method and route), a child of the caller's trace context as
    the configured propagators read it (OTEL_PROPAGATORS; W3C `traceparent` and baggage by default), made current
    while the request is served so that its phases and outgoing calls hang below it.

    Made here with the SDK's tracer rather than by OpenTelemetry's FastAPI (ASGI) instrumentation: that costs about
    0.3 ms of CPU a request (it decodes every header for every propagator field, sets a dozen attributes through two
    semantic-convention versions, wraps each ASGI message), as much as tracing may cost a warm 512-item batch in all
    (docs/operations.md, "What it costs"). This span carries the stable HTTP attributes that say which request it
    was; the medix.* ones are set by the request guard."""

    def __init__(self, provider: TracerProvider) -> None:
        self.tracer = provider.get_tracer(SERVICE_NAME)
        self._fields = frozenset(f.encode("latin-1") for f in propagate.get_global_textmap().fields)

    def start(self, scope: Scope, route: str | None) -> RequestTrace:
        """The request's trace: its span, started and made the current one, and the traced request the layers below
        see (runtime/tracing.py). `route`: the route the path is, None for a path that is none (its span is named by
        the method alone, not by a caller's path)."""
        carrier: dict[str, str] = {}
        for key, value in scope.get("headers", ()):
            if key in self._fields:  # a header sent twice is one comma-separated list (RFC 9110)
                name, text = key.decode("latin-1"), value.decode("latin-1")
                carrier[name] = f"{carrier[name]},{text}" if name in carrier else text
        method = scope.get("method", "")
        span = self.tracer.start_span(method if route is None else f"{method} {route}",
                                      context=propagate.extract(carrier) if carrier else None,
                                      kind=trace.SpanKind.SERVER)
        attributes: dict[str, Any] = {"http.request.method": method}
        if route is None:
            attributes["url.path"] = scope.get("path", "")
        else:
            attributes["http.route"] = route
        request = tracing.Traced(self.tracer, attributes)
        return RequestTrace(span, request, context.attach(trace.set_span_in_context(span)),
                            tracing.TRACED.set(request))


@dataclass(slots=True)
class RequestTrace:
    """One request's trace while it is served."""

    span: Span
    request: tracing.Traced  # what the layers below say of the request goes to its span when it ends
    _current: object  # the tokens that undo what `start` set
    _traced: Token[tracing.Traced | None]

    @property
    def trace_id(self) -> str | None:
        """Where to find the request in a trace viewer; None when it is not sampled (it would be found nowhere)."""
        span_context = self.span.get_span_context()
        return format_trace_id(span_context.trace_id) if span_context.trace_flags.sampled else None

    def end(self, status: int, attributes: Callable[[], dict[str, Any]]) -> None:
        """The span ended with the response's status (an error from 500 on, as the HTTP conventions say of a server's
        span), the request's HTTP attributes, what the layers below said of it and `attributes()`. All are set at the
        end, in one call: each call costs the span a lock and a check of every value."""
        tracing.TRACED.reset(self._traced)
        context.detach(self._current)  # type: ignore[arg-type]
        if self.span.is_recording():
            self.span.set_attributes({**self.request.attributes, **attributes(),
                                      "http.response.status_code": status})
            if status >= 500:
                self.span.set_status(Status(StatusCode.ERROR))
        self.span.end()
