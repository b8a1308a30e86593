"""The app over fake backends, one way for every unit test that needs it (the real stack is in tests/integration)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from service.app import build_app
from service.settings import Settings
from tests.unit.fakes import FakeEmbedder, FakeJudge

# No pinning and no retry waits: what a unit test wants unless it says otherwise.
TEST_SETTINGS = {"engine_cpus": "", "judge_retries": 0, "judge_backoff_s": 0}


def make_fake_app(judge: Any = None, embedder: Any = None, **settings: Any) -> FastAPI:
    return build_app(Settings(**{**TEST_SETTINGS, **settings}), judge=judge or FakeJudge(),
                     embedder=embedder or FakeEmbedder())


@pytest.fixture(scope="session")
def fake_app() -> Callable[..., FastAPI]:
    """`fake_app(judge=None, embedder=None, **settings)`: the real app on fakes."""
    return make_fake_app


@pytest.fixture(scope="session")
def app_client() -> Callable[..., Any]:
    """`async with app_client(judge=None, embedder=None, **settings) as c`: the fake app's lifespan running, and
    an httpx client over ASGI."""

    @asynccontextmanager
    async def open_client(judge: Any = None, embedder: Any = None, **settings: Any) -> AsyncIterator[httpx.AsyncClient]:
        app = make_fake_app(judge, embedder, **settings)
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
                yield c

    return open_client


@pytest.fixture(scope="session")
def served() -> Callable[..., Any]:
    """`with served(app, ready_path="/readyz") as url`: the app on a real loopback port in a thread."""
    from service.bench.main import ServiceThread
    from tests.integration.stack import free_port

    @contextmanager
    def serve(app: FastAPI, ready_path: str = "/readyz") -> Iterator[str]:
        with ServiceThread(app, free_port(), ready_path=ready_path, timeout_s=30) as svc:
            yield svc.url

    return serve


@pytest.fixture
def exported() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    """A tracer provider whose spans end up, as they end, in the in-memory exporter it comes with."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()
