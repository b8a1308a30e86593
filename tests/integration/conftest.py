"""One real stack for the whole test run: a vLLM judge server, Redis, and the service on both judge backends."""

from __future__ import annotations

import socket
import uuid
from dataclasses import dataclass

import pytest
import redis

from clients.datasets import read_jsonl
from tests.integration.stack import DATA, Proc, start_judge_server, start_redis, start_service


def _redis_answers(port: int = 6379) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Service:
    url: str
    proc: Proc
    namespace: str | None = None


@pytest.fixture(scope="session")
def logs(tmp_path_factory):
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="session")
def redis_url(logs):
    """Redis on 127.0.0.1:6379; started here when nothing answers there."""
    proc = None
    if not _redis_answers():
        proc, _ = start_redis(logs, port=6379)
    yield "redis://127.0.0.1:6379/0"
    if proc:
        proc.stop()


@pytest.fixture(scope="session")
def judge_server(logs):
    proc, url = start_judge_server(logs)
    yield url
    proc.stop()


@pytest.fixture(scope="session")
def service(judge_server, redis_url, logs):
    """The service on the `openai` judge backend (the vLLM server), the real embedder and real Redis."""
    ns = f"medix-test-{uuid.uuid4().hex[:8]}"
    proc, url = start_service(logs, {
        "MEDIX_JUDGE_BACKEND": "openai", "MEDIX_JUDGE_URL": judge_server, "MEDIX_REDIS_URL": redis_url,
        "MEDIX_CACHE_NAMESPACE": ns, "MEDIX_PIN_SERVICE": "true", "MEDIX_MAX_ITEMS_PER_REQUEST": "600",
        "MEDIX_MAX_BODY_BYTES": str(4 * 1024 * 1024),
    })
    yield Service(url, proc, ns)
    proc.stop()
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(f"{ns}:*"):
        client.delete(key)


@pytest.fixture(scope="session")
def service_inprocess(logs):
    """The embedded default: in-process vLLM engine, bundled MiniLM, in-process cache; no configuration."""
    proc, url = start_service(logs, {})
    yield Service(url, proc)
    proc.stop()


@pytest.fixture(scope="session")
def slake():
    return list(read_jsonl(DATA / "slake_en_test.jsonl"))


def pytest_terminal_summary(terminalreporter):
    from tests.integration.test_load import REPORT

    if REPORT:
        terminalreporter.write_line(f"load test (warm cache, loopback): {REPORT}")
