"""clients.http: hundreds of requests in flight over small pools, each reply seen by the hooks."""

from __future__ import annotations

import asyncio

import httpx

from clients.http import PooledAsyncClient


async def test_requests_spread_over_small_pools_and_every_reply_reaches_the_hooks():
    in_flight = peak = 0
    gate = asyncio.Event()

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        if peak >= 40:
            gate.set()
        await asyncio.wait_for(gate.wait(), 5)
        in_flight -= 1
        return httpx.Response(200 if request.url.path == "/ok" else 503, json={"path": request.url.path})

    seen: list[int] = []

    async def on_response(response: httpx.Response) -> None:
        seen.append(response.status_code)

    client = PooledAsyncClient(max_connections=40, base_url="http://svc", transport=httpx.MockTransport(handler),
                               event_hooks={"response": [on_response]})
    late: list[str] = []

    async def late_hook(response: httpx.Response) -> None:
        late.append(response.url.path)

    client.event_hooks["response"].append(late_hook)  # added after construction: all pools see it
    try:
        assert client.pools == 10
        replies = await asyncio.gather(*(client.post("/ok", json={"i": i}) for i in range(39)), client.get("/down"))
    finally:
        await client.aclose()
    assert peak == 40  # all at once: no request waited for another pool's connection
    assert [r.status_code for r in replies] == [200] * 39 + [503]
    assert sorted(seen) == [200] * 39 + [503] and late.count("/down") == 1 and len(late) == 40


async def test_each_request_goes_to_the_pool_with_the_fewest_in_flight():
    client = PooledAsyncClient(max_connections=12, base_url="http://svc")
    assert client.pools == 3
    release = asyncio.Event()
    counts = [0, 0, 0]

    class Pool:
        def __init__(self, i: int) -> None:
            self.i = i

        async def request(self, method: str, url: str, **kw) -> str:
            counts[self.i] += 1
            await release.wait()
            return f"{self.i}"

        async def aclose(self) -> None: ...

    await client.aclose()
    client._pools = [Pool(i) for i in range(3)]
    tasks = [asyncio.create_task(client.post("/x")) for _ in range(12)]
    await asyncio.sleep(0)
    assert counts == [4, 4, 4]
    release.set()
    await asyncio.gather(*tasks)
    assert client._busy == [0, 0, 0]


def test_every_pool_shares_one_tls_context(monkeypatch):
    # Before: each of the 256 pools of a 1,024-connection client loaded the CA bundle itself (about 7 s a client).
    import ssl

    from clients import http

    made = []
    real = ssl.create_default_context

    def counted(*a, **k):
        made.append(1)
        return real(*a, **k)

    monkeypatch.setattr(ssl, "create_default_context", counted)  # httpx's own contexts come through here too
    client = http.PooledAsyncClient(max_connections=1024)
    assert client.pools == 256 and len(made) == 1
