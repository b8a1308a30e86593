"""The request guard and JSON bodies (issue 24: items 1, 5 and 10): what a hostile body costs before it is
refused, paths under a root path, deny by default, bytes counted whatever the headers say, keys that are no keys."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import tracemalloc
from contextlib import asynccontextmanager, contextmanager

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount

from service.api.body import ElementCount

GOOD = {"response": "<X_RAY><thinking>t</thinking><answer>edema</answer>", "ground_truth": "<X_RAY>Pneumonia"}
JSON = {"content-type": "application/json"}


def error_of(resp, status, param=None):
    assert resp.status_code == status, resp.text[:300]
    err = resp.json()["error"]
    if param is not None:
        assert err["param"] == param, err
    return err


@asynccontextmanager
async def client_of(fake_app, *, root_path: str = "", mount: str | None = None, **settings):
    """The fake app with its lifespan running, behind an ASGI client; under a root path or mounted at a prefix."""
    app = fake_app(**settings)
    outer = Starlette(routes=[Mount(mount, app=app)]) if mount else app
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=outer, root_path=root_path)
        async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=60) as c:
            yield c


class Ticks:
    """How long the event loop was held between turns while a request ran: what /healthz waits at most."""

    def __init__(self) -> None:
        self.worst, self._stop = 0.0, False

    async def run(self) -> None:
        last = time.perf_counter()
        while not self._stop:
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            self.worst, last = max(self.worst, now - last - 0.005), now

    def stop(self) -> None:
        self._stop = True


# --- item 1: one small request can kill a replica ---------------------------------------------------------

async def test_a_million_empty_items_is_refused_in_milliseconds_and_megabytes(fake_app):
    """Before: 422 after 27 s, +2.4 GB peak, the event loop held throughout. Target: a 4xx within 1 s, +<= 100 MB,
    /healthz answered within 100 ms meanwhile."""
    body = b'{"items":[' + b"{}," * 999_999 + b"{}]}"
    async with client_of(fake_app) as c:
        ticks = Ticks()
        watch = asyncio.create_task(ticks.run())
        await asyncio.sleep(0.02)
        tracemalloc.start()
        start = time.perf_counter()
        try:
            r = await asyncio.wait_for(c.post("/reward", content=body, headers=JSON), 60)
            took = time.perf_counter() - start
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
            ticks.stop()
            await watch
        health = await c.get("/healthz")
    assert 400 <= r.status_code < 500, r.text[:300]
    assert took < 1.0, f"{took:.2f} s"
    assert peak < 100 * 2**20, f"peak {peak / 2**20:.0f} MB"
    assert ticks.worst < 0.1, f"event loop held {ticks.worst * 1000:.0f} ms"
    assert health.status_code == 200
    assert error_of(r, 413, "body")["type"] == "payload_too_large"


async def test_an_unknown_list_is_not_parsed_into_an_admitted_request(fake_app):
    """Before: a body that adds an unknown list of `{}` was parsed whole and admitted as a one-item request."""
    body = b'{"items":[' + json.dumps(GOOD).encode() + b'],"junk":[' + b"{}," * 299_999 + b"{}]}"
    async with client_of(fake_app) as c:
        r = await c.post("/reward", content=body, headers=JSON)
        ok = await c.post("/reward", json={"items": [{**GOOD, "extra": {"trainer": [1, 2, 3]}}], "step": 7})
    error_of(r, 413, "body")
    assert ok.status_code == 200, ok.text  # extras within the limits are still ignored, not refused


@pytest.mark.parametrize(("route", "body", "param"), [
    ("/reward", {"items": [{}] * 5000}, "items"),
    ("/judge", {"items": [{}] * 5000}, "items"),
    ("/get_reward", {"query": ["q"] * 5000, "labels": ["a"] * 5000}, "query"),
    ("/get_reward", {"query": ["q"], "labels": ["a"] * 5000}, "labels"),
    ("/get_reward", {"query": ["q"], "prompts": [""] * 5000, "labels": ["a"]}, "prompts"),
])
async def test_every_list_is_bounded_while_parsing(fake_app, route, body, param):
    """A list longer than MEDIX_MAX_ITEMS_PER_REQUEST (4096) is refused naming it, before any element is
    validated (before: 10,000 validation errors, and the first item's field named)."""
    async with client_of(fake_app) as c:
        err = error_of(await c.post(route, json=body), 422, param)
    assert err["message"].startswith(f"{param}: 5000 items is over the limit of 4096 per request "
                                     "(MEDIX_MAX_ITEMS_PER_REQUEST); split the batch")


async def test_bodies_are_still_read_as_before(fake_app):
    async with client_of(fake_app, max_items_per_request=3) as c:
        surrogate = await c.post("/reward", content=b'{"items": [{"response": "a\\ud800", "ground_truth": "x"}]}',
                                 headers=JSON)
        error_of(surrogate, 422, "items[0].response")
        assert error_of(await c.post("/reward", content=b'{"items": [', headers=JSON), 422, "[11]")["type"] == \
            "invalid_json"
        error_of(await c.post("/reward", content=b"\xfa\xfb not utf-8", headers=JSON), 400, "body")
        error_of(await c.post("/reward", content=b'{"items": []}', headers={"content-type": "text/plain"}), 422)
        error_of(await c.post("/reward", json={"items": [GOOD] * 4}), 422, "items")
        utf16 = json.dumps({"items": [GOOD]}).encode("utf-16")
        assert (await c.post("/reward", content=utf16, headers=JSON)).status_code == 200


def test_the_element_count_leaves_strings_out():
    """Commas, brackets and escaped quotes inside strings are no elements: text never refuses a valid body."""
    async def over(body: bytes, limit: int) -> int | None:
        count = ElementCount()
        count.add(body)
        return await count.over(body, limit)

    texts = json.dumps({"items": [{"response": 'a, b, [c], {d}, "e", \\ ,', "ground_truth": "x,"}] * 10})
    n = count_elements(json.loads(texts))
    assert n == 32 and texts.count(",") + texts.count("[") + texts.count("{") > 100
    assert asyncio.run(over(texts.encode(), n)) is None
    assert asyncio.run(over(texts.encode(), n - 1)) == n
    flood = b"[" + b'"",' * 1000 + b'""]'
    assert asyncio.run(over(flood, 100)) > 100


def count_elements(value) -> int:
    """The reference count: array values and object entries (an empty container counts one), plus the root."""
    def inner(v) -> int:
        if isinstance(v, list | dict):
            values = v.values() if isinstance(v, dict) else v
            return max(len(v), 1) + sum(inner(x) for x in values)
        return 0
    return 1 + inner(value)


async def test_bodies_being_parsed_are_bounded_across_requests(fake_app):
    """MEDIX_MAX_PARSING_BYTES: a slow upload holds its bytes; another body past the budget is a 429 with
    Retry-After, whatever key sends it; once the first is parsed, the budget is back."""
    half = json.dumps({"items": [{**GOOD, "question": "q" * 1500}]}).encode()

    async def slow():
        yield half[:1000]
        await asyncio.sleep(0.5)
        yield half[1000:]

    async with client_of(fake_app, max_parsing_bytes=2048, api_keys=["k-a", "k-b"]) as c:
        first = asyncio.create_task(c.post("/reward", content=slow(), headers={**JSON, "authorization": "Bearer k-a"}))
        await asyncio.sleep(0.2)
        second = await c.post("/reward", content=half, headers={**JSON, "authorization": "Bearer k-b"})
        assert (await first).status_code == 200
        third = await c.post("/reward", content=half, headers={**JSON, "authorization": "Bearer k-b"})
    assert error_of(second, 429, "body")["type"] == "overloaded" and second.headers["retry-after"] == "2"
    assert "MEDIX_MAX_PARSING_BYTES" in second.json()["error"]["message"]
    assert third.status_code == 200, third.text


async def test_a_body_that_does_not_arrive_in_time_is_408_and_frees_its_slot(fake_app):
    async def trickle():
        yield b'{"items": ['
        await asyncio.sleep(1.0)
        yield json.dumps(GOOD).encode() + b"]}"

    async with client_of(fake_app, body_read_timeout_s=0.2, max_inflight_requests=1) as c:
        start = time.perf_counter()
        r = await c.post("/reward", content=trickle(), headers=JSON)
        took = time.perf_counter() - start
        after = await c.post("/reward", json={"items": [GOOD]})
    err = error_of(r, 408, "body")
    assert err["type"] == "request_timeout" and r.headers["connection"] == "close"
    assert took < 0.9, f"{took:.2f} s"
    assert after.status_code == 200, after.text


async def test_a_client_gone_while_its_body_arrives_is_counted_499_and_nothing_is_scored(fake_app):
    app = fake_app(log_json=False)
    messages = iter([{"type": "http.request", "body": b'{"items": [', "more_body": True},
                     {"type": "http.disconnect"}])
    sent = []

    async def receive():
        return next(messages)

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/reward", "raw_path": b"/reward", "root_path": "", "query_string": b"", "server": ("t", 80),
             "client": ("c", 1), "headers": [(b"content-type", b"application/json")]}
    async with app.router.lifespan_context(app):
        await app(scope, receive, send)
        text = app.state.metrics.render().decode()
    assert sent == []
    assert 'medix_requests_total{route="/reward",status="499"} 1.0' in text


# --- item 5: the guard has a gap under a root path ------------------------------------------------------------

@pytest.mark.parametrize("where", [{"root_path": "/api"}, {"mount": "/api"}])
async def test_the_guard_sees_paths_as_routing_does_under_a_root_path(fake_app, where):
    """Before: with `uvicorn --root-path /api` (or a mount at /api), POST /reward without a key was a 200, past
    the body and in-flight limits too."""
    async with client_of(fake_app, **where, api_keys=["k-a"], max_body_bytes=2048) as c:
        missing = await c.post("/api/reward", json={"items": [GOOD]})
        too_big = await c.post("/api/reward", json={"items": [GOOD] * 30}, headers={"authorization": "Bearer k-a"})
        ok = await c.post("/api/reward", json={"items": [GOOD]}, headers={"authorization": "Bearer k-a"})
        health = await c.get("/api/healthz")
    assert error_of(missing, 401, "authorization")["type"] == "unauthorized"
    error_of(too_big, 413, "body")
    assert ok.status_code == 200 and health.status_code == 200


async def test_with_keys_every_path_needs_one_but_health_metrics_and_the_docs(fake_app):
    async with client_of(fake_app, api_keys=["k-a"]) as c:
        unknown = await c.get("/nope")
        known_with_key = await c.get("/nope", headers={"authorization": "Bearer k-a"})
        open_ = {p: (await c.get(p)).status_code for p in ("/healthz", "/readyz", "/metrics", "/docs",
                                                           "/openapi.json", "/redoc")}
    error_of(unknown, 401, "authorization")
    error_of(known_with_key, 404)
    assert open_ == dict.fromkeys(open_, 200), open_
    async with client_of(fake_app) as c:  # no keys: nothing changes
        error_of(await c.get("/nope"), 404)


# --- item 10: body bytes counted whatever the headers say (keys that are no keys: test_auth.py) --------------

@contextmanager
def served_h11(app):
    from tests.integration.stack import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", http="h11"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(30)


def raw_post(port: int, head: bytes, body: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(head + body)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return data


def test_a_chunked_body_with_a_small_content_length_is_counted_as_it_arrives(fake_app):
    """Under `--http h11`, `Transfer-Encoding: chunked` wins over `Content-Length: 10`: the guard trusted the
    header and let a body over the limit through (200 before)."""
    body = json.dumps({"items": [{**GOOD, "pad": "x" * 100_000}]}).encode()
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 8192]), body[i:i + 8192])
                       for i in range(0, len(body), 8192)) + b"0\r\n\r\n"
    head = (b"POST /reward HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 10\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    with served_h11(fake_app(max_body_bytes=64 * 1024, log_json=False)) as port:
        answer = raw_post(port, head, chunked)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"payload_too_large" in answer
