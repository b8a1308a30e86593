"""Property-based fuzzing of the OpenAPI schema (schemathesis) and hostile bodies: no 5xx, one error shape.

The app runs over real HTTP on fake backends: the fuzzing is about input handling, not model quality.
"""

from __future__ import annotations

import json

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings


@pytest.fixture(scope="module")
def base_url(fake_app, served):
    app = fake_app(max_items_per_request=50, max_body_bytes=64 * 1024, max_text_chars=2000, log_json=False)
    with served(app) as url:
        yield url


def assert_no_5xx_and_one_shape(response) -> None:
    assert response.status_code < 500, response.text[:500]
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"error"}, body
        assert isinstance(body["error"]["type"], str) and isinstance(body["error"]["message"], str)


def test_fuzz_every_operation_of_the_openapi_schema(base_url):
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/reward", "/judge", "/get_reward", "/healthz", "/readyz"}
    for op in operations:

        @given(case=op.as_strategy())
        @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case):
            assert_no_5xx_and_one_shape(case.call(base_url=base_url))

        check()


@pytest.mark.parametrize(
    ("content", "status"),
    [
        (b"\xff\xfe\xfa not utf-8", 400),
        (b"[" * 5000 + b"]" * 5000, 400),  # deeply nested JSON: refused by the parser
        (json.dumps({"items": [{"response": "x", "ground_truth": "y"}] * 51}).encode(), 422),  # too many items
        (b"x" * (65 * 1024), 413),
        (b"null", 422),
        (json.dumps({"items": [{"response": ["not", "a", "string"], "ground_truth": 3}]}).encode(), 422),
    ],
)
@pytest.mark.parametrize("route", ["/reward", "/judge", "/get_reward"])
def test_hostile_bodies(base_url, route, content, status):
    r = httpx.post(f"{base_url}{route}", content=content, headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == status, r.text[:300]
    assert_no_5xx_and_one_shape(r)


def test_chunked_body_over_the_limit_is_413(base_url):
    def chunks():
        for _ in range(80):
            yield b"x" * 1024

    r = httpx.post(f"{base_url}/reward", content=chunks(), headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == 413 and r.json()["error"]["type"] == "payload_too_large"
