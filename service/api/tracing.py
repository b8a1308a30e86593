"""OpenTelemetry tracing of the HTTP service: the SDK's provider and exporters as the settings ask, and the app
instrumented so that each request is a span, a child of the caller's W3C `traceparent` when it sends one, with the
phases of its work below it (service/runtime/tracing.py).

Nothing here runs unless tracing is on (Settings.tracing_on): with it off no provider is made, no instrumentation is
installed, and no global OpenTelemetry state is set. The provider is the app's own and is never made global, so that
several apps in one process (the bench, the tests) each trace, or not, on their own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import FastAPI

from service.settings import Settings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Tracer

SERVICE_NAME = "medix-reward"
# Probes, scrapes and the API's description: no trace each.
UNTRACED_PATHS = "/healthz,/readyz,/metrics,/docs,/redoc,/openapi.json"


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


def instrument(app: FastAPI, provider: TracerProvider) -> Tracer:
    """Each request to `app` a server span (the caller's trace context its parent); gives the tracer of the spans
    below it."""
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
    from opentelemetry.metrics import NoOpMeterProvider

    # No span per ASGI message (`send`, `receive`): two or three more per request that say nothing. No OpenTelemetry
    # metrics either: the service's metrics are Prometheus's (runtime/metrics.py).
    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider, meter_provider=NoOpMeterProvider(),
                                       excluded_urls=UNTRACED_PATHS, exclude_spans=["receive", "send"])
    return provider.get_tracer(SERVICE_NAME)
