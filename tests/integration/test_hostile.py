"""Hostile inputs and races through the real service (vLLM judge server, MiniLM, Redis).

Every answer is in the one error shape, nothing is a 5xx, one bad item never costs its batch, and
/healthz keeps answering fast while the service chews on degenerate input.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time

import httpx
import pytest

from tests.integration.stack import metric

pytestmark = pytest.mark.integration

GOOD = {"response": "<X_RAY><thinking>opacity</thinking><answer>lung infection</answer>",
        "ground_truth": "<X_RAY>Pneumonia"}


def one_shape(r: httpx.Response) -> dict:
    assert r.status_code < 500, r.text[:300]
    body = r.json()
    if r.status_code >= 400:
        assert set(body) == {"error"} and {"type", "message", "param"} <= set(body["error"]), body
    return body


class HealthWatch:
    """Polls /healthz from a thread while hostile requests run; records each answer's latency."""

    def __init__(self, url: str) -> None:
        self.url, self.latencies, self._stop = url, [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=10) as c:
            while not self._stop.is_set():
                start = time.perf_counter()
                assert c.get(f"{self.url}/healthz").status_code == 200
                self.latencies.append(time.perf_counter() - start)
                time.sleep(0.02)

    def __enter__(self) -> HealthWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)


def test_an_answer_longer_than_the_judge_context_fails_alone(service):
    # ~4,000 CJK characters are several thousand tokens: more than the judge's 2,048-token context.
    cjk = {"response": "<X_RAY><thinking>t</thinking><answer>" + "肺" * 3999 + "</answer>",
           "ground_truth": "<X_RAY>Pneumonia", "id": "long"}
    r = httpx.post(f"{service.url}/reward", json={"items": [GOOD, cjk]}, timeout=300)
    body = one_shape(r)
    assert r.status_code == 200, r.text[:500]
    good, long = body["results"]
    assert good["overall"] is not None and good.get("error") is None
    assert long["overall"] is None and long["accuracy_llm"] is None
    assert long["error"]["type"] == "input_rejected" and long["error"]["param"] == "items[1]"


def test_a_judge_item_longer_than_the_judge_context_fails_alone(service):
    # /judge allows 8,000 characters per field: a CJK prediction that long is far over the 2,048-token context.
    ok = {"id": "ok", "task": "t", "question": "Which organ?", "reference": "Liver", "prediction": "The liver."}
    long = {**ok, "id": "long", "prediction": "肝" * 7999}
    r = httpx.post(f"{service.url}/judge", json={"items": [ok, long], "rounds": 1}, timeout=300)
    body = one_shape(r)
    assert r.status_code == 200, r.text[:500]
    good, bad = body["results"]
    assert good["score"] in (0.0, 1.0) and good.get("error") is None
    assert bad["score"] is None and bad["error"]["type"] == "input_rejected", bad


def test_hostile_bodies_get_the_one_shape_and_healthz_stays_fast(service):
    ws = " \n\t" * 6666  # 20,000 characters of whitespace: the degenerate rollout
    hostile_items = [
        {"response": ws, "ground_truth": "<X_RAY>Pneumonia"},
        {"response": "<" * 19_999, "ground_truth": "<CT_SCAN>x"},
        {"response": "<answer>" * 2_400, "ground_truth": "<CT_SCAN>x"},
        {"response": "</thinking><answer>" * 1_000, "ground_truth": "<CT_SCAN>x"},
        {"response": "<thinking>" + ws[:6000] + "</thinking>" + ws[:6000] + "<answer>" + ws[:6000] + "</answer>",
         "ground_truth": "<MRI_SCAN>Brain"},  # within the 20,000-character limit
    ]
    bodies: list[tuple[str, bytes]] = [
        ("/reward", json.dumps({"items": hostile_items * 2}).encode()),
        ("/reward", json.dumps({"items": [{**GOOD, "id": "same"}] * 50}).encode()),  # duplicate ids
        ("/reward", b'{"items": [{"response": "ab\\ud800cd", "ground_truth": "<X_RAY>a"}]}'),
        ("/reward", json.dumps({"items": [{**GOOD, "ground_truth": "<X_RAY>" + "x" * 1_000_000}]}).encode()),
        ("/reward", b"[" * 100_000 + b"]" * 100_000),
        ("/reward", b'{"items": ' + b"[" * 5_000 + b"]" * 5_000 + b"}"),
        ("/reward", json.dumps({"items": [GOOD] * 10_000}).encode()),
        ("/reward", b"\xff\xfe not utf-8"),
        ("/judge", json.dumps({"items": [{"id": "a", "task": "t", "reference": "r", "prediction": ws + "</think>"
                                          + ws, "question": ws}]}).encode()),
        ("/get_reward", json.dumps({"query": [ws] * 8, "prompts": [ws] * 8, "labels": ["x"] * 8}).encode()),
        ("/get_reward", json.dumps({"query": ["a"], "labels": ["x", "y"]}).encode()),
    ]
    statuses = []
    with HealthWatch(service.url) as watch, httpx.Client(timeout=300) as c:
        time.sleep(0.2)
        for path, content in bodies:
            r = c.post(f"{service.url}{path}", content=content, headers={"content-type": "application/json"})
            one_shape(r)
            statuses.append(r.status_code)
    assert statuses[0] == 200 and statuses[1] == 200, statuses  # degenerate but valid input is scored
    assert all(s in (200, 400, 413, 422) for s in statuses), statuses
    lat = sorted(watch.latencies)
    p95 = lat[int(0.95 * (len(lat) - 1))]
    # /healthz within 100 ms while the hostile requests run (95th percentile; the worst single answer is
    # bounded too: parsing a multi-megabyte body is FastAPI's work on the event loop).
    assert lat and p95 < 0.1 and lat[-1] < 0.5, f"/healthz p95 {p95:.3f} s, max {lat[-1]:.3f} s"


def test_a_slow_chunked_upload_holds_an_in_flight_slot(service):
    async def main() -> None:
        async def slow_body():
            yield b'{"items": ['
            await asyncio.sleep(1.0)
            yield json.dumps(GOOD).encode() + b"]}"

        async with httpx.AsyncClient(timeout=60) as c:
            before = metric(service.url, "medix_inflight_requests")
            upload = asyncio.create_task(c.post(f"{service.url}/reward", content=slow_body(),
                                                headers={"content-type": "application/json"}))
            await asyncio.sleep(0.5)
            during = metric(service.url, "medix_inflight_requests")
            r = await upload
            assert r.status_code == 200, r.text
            assert during == before + 1

    asyncio.run(main())


def test_a_request_joining_an_abandoned_judge_call_is_answered(service):
    # Review finding: the first client gives up (0.2 s timeout) on a new pair, the second asks for the same
    # pair while the abandoned call winds down; the second must get its verdict, not a plain-text 500.
    # A long new answer: its judge call's prefill alone outlasts the 0.2 s (a short one can finish in time).
    words = " ".join(f"opacity{i} in segment {i % 10}" for i in range(120))
    pair = {"response": f"<X_RAY><thinking>t</thinking><answer>{words} {time.time_ns()}</answer>",
            "ground_truth": "<X_RAY>Pneumonia"}

    async def main() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=120) as c:
            async def impatient() -> None:
                with pytest.raises(httpx.TimeoutException):
                    await c.post(f"{service.url}/reward", json={"items": [pair]}, timeout=0.2)

            async def later(delay: float) -> httpx.Response:
                await asyncio.sleep(delay)
                return await c.post(f"{service.url}/reward", json={"items": [pair]})

            _, *answers = await asyncio.gather(impatient(), later(0.15), later(0.22), later(0.3))
            return answers

    for r in asyncio.run(main()):
        assert r.status_code == 200, r.text[:300]
        assert r.json()["results"][0]["details"]["judge_verdict"] in ("YES", "NO")


def _memory_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field))


def test_a_million_empty_items_is_refused_at_once_and_healthz_keeps_answering(service):
    """Issue 24, item 1: `{"items": [{}, {}, …]}` with a million items (3.0 MB) was a 422 after 13.7 s and
    +2.4 GB, the event loop held throughout. Now: a 4xx within 1 s, a new peak of at most +100 MB, /healthz
    within 100 ms meanwhile."""
    pid = service.proc.popen.pid
    body = b'{"items":[' + b"{}," * 999_999 + b"{}]}"
    rss, peak = _memory_kb(pid, "VmRSS"), _memory_kb(pid, "VmHWM")
    with HealthWatch(service.url) as watch, httpx.Client(timeout=60) as c:
        time.sleep(0.2)
        start = time.perf_counter()
        r = c.post(f"{service.url}/reward", content=body, headers={"content-type": "application/json"})
        took = time.perf_counter() - start
        time.sleep(0.2)
    err = one_shape(r)["error"]
    assert 400 <= r.status_code < 500 and took < 1.0, (r.status_code, f"{took:.2f} s")
    assert r.status_code == 413 and err["type"] == "payload_too_large" and err["param"] == "body", err
    assert _memory_kb(pid, "VmHWM") <= max(peak, rss + 100 * 1024), "a new memory peak over +100 MB"
    lat = sorted(watch.latencies)
    p95 = lat[int(0.95 * (len(lat) - 1))]
    assert lat and p95 < 0.1 and lat[-1] < 0.5, f"/healthz p95 {p95:.3f} s, max {lat[-1]:.3f} s"


def test_an_unknown_list_is_refused_unparsed_not_admitted(service):
    """Issue 24, item 1: a body padded with an unknown list of `{}` was parsed whole and scored as one item."""
    pad = (3_900_000 - 200) // 3
    body = b'{"items":[' + json.dumps(GOOD).encode() + b'],"junk":[' + b"{}," * (pad - 1) + b"{}]}"
    start = time.perf_counter()
    r = httpx.post(f"{service.url}/reward", content=body, headers={"content-type": "application/json"}, timeout=60)
    assert r.status_code == 413 and one_shape(r)["error"]["param"] == "body", r.text[:300]
    assert time.perf_counter() - start < 1.0


def test_a_chunked_body_with_a_small_content_length_never_passes(service):
    """Issue 24, item 10: `Transfer-Encoding: chunked` with `Content-Length: 10` and a body over the limit is
    refused (uvicorn's 400 under httptools, the guard's 413 under h11), never scored."""
    import socket
    from urllib.parse import urlsplit

    body = json.dumps({"items": [{**GOOD, "pad": "x" * (5 * 1024 * 1024)}]}).encode()
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 65536]), body[i:i + 65536])
                       for i in range(0, len(body), 65536)) + b"0\r\n\r\n"
    head = (b"POST /reward HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 10\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    address = urlsplit(service.url)
    answer = b""
    with socket.create_connection((address.hostname, address.port), timeout=60) as s:
        try:
            s.sendall(head + chunked)
        except OSError:  # refused and closed before the whole body was sent
            pass
        while b"\r\n\r\n" not in answer:
            chunk = s.recv(65536)
            if not chunk:
                break
            answer += chunk
    assert answer.split(b" ", 2)[1] in (b"400", b"413"), answer[:300]
