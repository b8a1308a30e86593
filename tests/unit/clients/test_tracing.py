"""A caller's trace continues in the service: the Python client (and so every adapter) sends the caller's W3C trace
context while it has an OpenTelemetry span active, here against the real service on a real port with tracing on."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from clients.adapters import verl
from clients.client import AsyncMedixClient, MedixClient
from service.app import build_app
from service.settings import Settings
from tests.unit.fakes import FakeEmbedder, FakeJudge

ROOT = Path(__file__).resolve().parents[3]
ITEM = {"response": "<X_RAY><thinking>t</thinking><answer>Pneumonia</answer>", "ground_truth": "<X_RAY>Pneumonia"}


def recorder() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


@pytest.fixture(scope="module")
def service(served) -> Iterator[tuple[str, InMemorySpanExporter]]:
    """The service on fake backends with tracing on, on a real port; its spans in the exporter."""
    provider, exporter = recorder()
    app = build_app(Settings(engine_cpus=""), judge=FakeJudge(), embedder=FakeEmbedder(), tracer_provider=provider)
    with served(app) as url:
        yield url, exporter


@pytest.fixture
def caller() -> TracerProvider:
    """The trainer's own tracing (never made global: the span is handed on through the context alone)."""
    return recorder()[0]


def served_span(exporter: InMemorySpanExporter, trace_id: int | None = None) -> ReadableSpan:
    """The service's newest request span (of `trace_id` when given)."""
    spans = [s for s in exporter.get_finished_spans() if s.kind == SpanKind.SERVER
             and (trace_id is None or s.context.trace_id == trace_id)]
    assert spans, "the service traced no request"
    return spans[-1]


def test_the_sync_client_sends_the_callers_context(service, caller):
    url, exporter = service
    with caller.get_tracer("trainer").start_as_current_span("grpo step") as step, MedixClient(url) as client:
        assert client.reward([ITEM])[0].overall == 1.0
    ctx = step.get_span_context()
    request = served_span(exporter, ctx.trace_id)
    assert request.parent is not None and request.parent.span_id == ctx.span_id and request.parent.is_remote


def test_the_async_client_and_an_adapter_send_the_callers_context(service, caller):
    url, exporter = service

    async def step() -> tuple[int, int]:
        with caller.get_tracer("trainer").start_as_current_span("grpo step") as span:
            async with AsyncMedixClient(url) as client:
                await client.reward([ITEM])
            await verl.compute_score("slake", ITEM["response"], ITEM["ground_truth"], None, url=url)
            return span.get_span_context().trace_id, span.get_span_context().span_id

    trace_id, span_id = asyncio.run(step())
    requests = [s for s in exporter.get_finished_spans() if s.kind == SpanKind.SERVER
                and s.context.trace_id == trace_id]
    assert len(requests) == 2 and {s.parent.span_id for s in requests} == {span_id}


def test_without_an_active_span_the_request_starts_its_own_trace(service):
    url, exporter = service
    with MedixClient(url) as client:
        client.reward([ITEM])
    assert served_span(exporter).parent is None


def test_the_client_works_without_opentelemetry(service):
    """`pip install ./clients` does not bring OpenTelemetry: the client imports and sends without it."""
    url, _ = service
    code = f"""
import importlib.abc, sys
class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] == "opentelemetry":
            raise ImportError(name)
sys.meta_path.insert(0, Absent())
from clients import http
from clients.client import MedixClient
assert http._trace is None
with MedixClient({url!r}) as client:
    print(client.reward([{ITEM!r}])[0].overall)
"""
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0 and run.stdout.strip() == "1.0", run.stdout + run.stderr
