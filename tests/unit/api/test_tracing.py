"""Tracing of the HTTP service: one span per request with its phases below it, the caller's trace context as its
parent, the trace context sent on to the judge and embeddings servers (a real local server here), nothing at all
with tracing off; and each request's judge and embedding tokens in its response and its tenant's counters."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client.parser import text_string_to_metric_families

from service.api import tracing as api_tracing
from service.app import build_app
from service.runtime import tracing
from service.runtime.metrics import Metrics
from service.settings import Settings
from tests.unit.fakes import FakeEmbedder, FakeJudge

KEY = "sk-lab-a-5ecret"  # the tenant is named key1; this must appear in no span
GOOD = {"response": "<X_RAY><thinking>t</thinking><answer>edema</answer>", "ground_truth": "<X_RAY>Pneumonia"}
EXACT = {"response": "<X_RAY><thinking>t</thinking><answer>Pneumonia</answer>", "ground_truth": "<X_RAY>Pneumonia"}
CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"
TRACEPARENT = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
AUTH = {"authorization": f"Bearer {KEY}"}
BASE = {"engine_cpus": "", "judge_retries": 0, "judge_backoff_s": 0, "embed_retries": 0, "api_keys": [KEY]}


@asynccontextmanager
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            yield c


def samples(m: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(m.render().decode()) for s in f.samples}


def by_name(spans: tuple[ReadableSpan, ...]) -> dict[str, list[ReadableSpan]]:
    out: dict[str, list[ReadableSpan]] = {}
    for s in spans:
        out.setdefault(s.name, []).append(s)
    return out


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def request_span(spans: tuple[ReadableSpan, ...], path: str = "/reward") -> ReadableSpan:
    (found,) = [s for s in spans if s.kind == SpanKind.SERVER and s.name == f"POST {path}"]
    return found


async def test_a_request_is_one_span_with_its_phases_below_it(exported, caplog):
    provider, exporter = exported
    settings = Settings(**BASE, rate_limit_items_per_s=1000)  # a rate limit: admission asks it, and has a span
    app = build_app(settings, judge=FakeJudge(), embedder=FakeEmbedder(), tracer_provider=provider)
    async with client(app) as c:
        with caplog.at_level(logging.INFO, logger="medix.access"):
            r = await c.post("/reward", json={"items": [GOOD, GOOD, EXACT]}, headers=AUTH)
        spans = exporter.get_finished_spans()
        exporter.clear()
        # Served from the cache: no judge work, and the counts of zero are left off the request's span.
        assert (await c.post("/reward", json={"items": [GOOD, GOOD, EXACT]}, headers=AUTH)).status_code == 200
        warm = exporter.get_finished_spans()
    again = dict(request_span(warm).attributes)
    assert again["medix.items"] == 3 and not {"medix.pairs", "medix.texts"} & set(again)  # the look-up's keys
    assert not {"medix.judge_calls", "medix.judge_prompt_tokens", "medix.judged"} & set(again)
    assert sorted(s.name for s in warm) == ["POST /reward", "admission", "cache_lookup"]
    assert r.status_code == 200, r.text
    top = request_span(spans)
    names = by_name(spans)
    children = {s.name for s in spans if parent_of(s) == top.context.span_id}
    assert children == {"admission", "cache_lookup", "judge", "embed"}
    # The service's own CPU phases are the request's attributes, not spans of their own.
    assert top.attributes["medix.rules_ms"] >= 0 and top.attributes["medix.compose_ms"] >= 0
    assert "rules" not in names and "compose" not in names
    (judge,) = names["judge"]
    assert {parent_of(s) for s in names.get("judge_queue", []) + names["judge_call"]} == {judge.context.span_id}
    assert len(names["judge_call"]) == 1  # two items, one distinct pair; the exact answer needs no judge
    assert {s.context.trace_id for s in spans} == {top.context.trace_id}
    attributes = dict(top.attributes)
    assert attributes["medix.tenant"] == "key1" and attributes["medix.items"] == 3
    assert attributes["medix.request_id"] == r.headers["x-request-id"]
    assert attributes["medix.judge_calls"] == 1 and attributes["medix.judge_prompt_tokens"] > 0
    # One look-up of the verdicts and the embeddings together: one round trip, one span.
    (lookup,) = names["cache_lookup"]
    assert dict(lookup.attributes) == {"medix.judge_keys": 1, "medix.judge_hits": 0, "medix.embed_keys": 2,
                                       "medix.embed_hits": 0}
    assert judge.attributes["medix.calls"] == 1 and judge.attributes["medix.coalesced"] == 0
    # The tenant's name, never its key, anywhere in the trace.
    everything = json.dumps([dict(s.attributes or {}) for s in spans] + [s.name for s in spans])
    assert KEY not in everything
    # The trace is found from the response and from the access log line.
    trace_id = format(top.context.trace_id, "032x")
    assert r.headers["x-trace-id"] == trace_id
    (line,) = [rec for rec in caplog.records if rec.name == "medix.access"]
    assert line.trace_id == trace_id and line.usage == r.json()["usage"]


async def test_the_callers_trace_context_is_the_requests_parent(exported):
    provider, exporter = exported
    app = build_app(Settings(**BASE), judge=FakeJudge(), embedder=FakeEmbedder(), tracer_provider=provider)
    async with client(app) as c:
        r = await c.post("/judge", json={"items": [{"id": "a", "task": "t", "question": "q", "reference": "edema",
                                                    "prediction": "edema"}], "rounds": 2},
                         headers={**AUTH, "traceparent": TRACEPARENT})
    assert r.status_code == 200, r.text
    spans = exporter.get_finished_spans()
    top = request_span(spans, "/judge")
    assert format(top.context.trace_id, "032x") == CALLER_TRACE == r.headers["x-trace-id"]
    assert format(top.parent.span_id, "016x") == CALLER_SPAN and top.parent.is_remote
    names = by_name(spans)
    assert len(names["judge_call"]) == 2  # a round each
    assert r.json()["usage"]["judge_calls"] == 2


async def test_admission_without_a_rate_limit_is_no_span_of_its_own(exported):
    provider, exporter = exported  # it then asks nothing outside the service: its time is the request's own CPU
    app = build_app(Settings(**BASE), judge=FakeJudge(), embedder=FakeEmbedder(), tracer_provider=provider)
    async with client(app) as c:
        assert (await c.post("/reward", json={"items": [GOOD]}, headers=AUTH)).status_code == 200
    names = by_name(exporter.get_finished_spans())
    assert "admission" not in names and {"cache_lookup", "judge", "embed"} <= set(names)


async def test_a_judge_call_that_queued_for_its_slot_shows_the_wait(exported):
    provider, exporter = exported
    others = [{"response": f"<X_RAY><thinking>t</thinking><answer>{a}</answer>", "ground_truth": "<X_RAY>Edema"}
              for a in ("fracture", "effusion")]

    class Slow(FakeJudge):  # each call holds its slot a moment
        async def complete(self, *a, **k):
            await asyncio.sleep(0.02)
            return await super().complete(*a, **k)

    app = build_app(Settings(**{**BASE, "judge_concurrency": 1}), judge=Slow(), embedder=FakeEmbedder(),
                    tracer_provider=provider)
    async with client(app) as c:
        assert (await c.post("/reward", json={"items": [GOOD, *others]}, headers=AUTH)).status_code == 200
    names = by_name(exporter.get_finished_spans())
    # One slot, three calls: the first (the prompt's warm-up, alone) and the next took it at once, with no wait to
    # show; the third waited for it.
    assert len(names["judge_call"]) == 3 and len(names["judge_queue"]) == 1
    (queued,) = names["judge_queue"]
    assert queued.end_time > queued.start_time and parent_of(queued) == names["judge"][0].context.span_id


async def test_the_request_span_says_which_http_request_it_was(exported):
    provider, exporter = exported
    app = build_app(Settings(**BASE), judge=FakeJudge(), embedder=FakeEmbedder(), tracer_provider=provider)
    async with client(app) as c:
        assert (await c.get("/healthz")).status_code == 200
        assert (await c.get("/metrics")).status_code == 200
        assert not exporter.get_finished_spans()  # probes and scrapes: no trace each
        ok = await c.post("/reward", json={"items": [GOOD]}, headers=AUTH)
        refused = await c.post("/reward", json={"items": [GOOD]})
        lost = await c.get("/no/such/path", headers=AUTH)
    assert (ok.status_code, refused.status_code, lost.status_code) == (200, 401, 404)
    servers = [s for s in exporter.get_finished_spans() if s.kind == SpanKind.SERVER]
    assert [s.name for s in servers] == ["POST /reward", "POST /reward", "GET"]  # a non-route by its method alone
    first, second, third = (dict(s.attributes) for s in servers)
    assert {k: v for k, v in first.items() if not k.startswith("medix.")} \
        == {"http.request.method": "POST", "http.route": "/reward", "http.response.status_code": 200}
    assert second["http.response.status_code"] == 401 and "medix.tenant" not in second
    assert third["url.path"] == "/no/such/path" and "http.route" not in third
    assert third["http.response.status_code"] == 404
    assert all(s.status.status_code == StatusCode.UNSET for s in servers)  # a 4xx is the caller's, not an error


async def test_a_failed_request_is_an_error_span_and_its_context_is_undone(exported):
    provider, exporter = exported
    app = build_app(Settings(**BASE), judge=FakeJudge(fail=True), embedder=FakeEmbedder(), tracer_provider=provider)
    async with client(app) as c:
        r = await c.post("/reward", json={"items": [GOOD]}, headers=AUTH)
    assert r.status_code >= 500
    top = request_span(exporter.get_finished_spans())
    assert top.attributes["http.response.status_code"] == r.status_code
    assert top.status.status_code == StatusCode.ERROR
    assert not trace.get_current_span().get_span_context().is_valid and tracing.TRACED.get() is None


async def test_an_unsampled_callers_context_is_kept_and_passed_on_unsampled(exported, served):
    provider, exporter = exported
    server = OpenAIServer('{"prompt_tokens": 120, "completion_tokens": 1}')
    with served(server.app, ready_path="/v1/models") as url:
        async with client(build_app(server_settings(url), tracer_provider=provider)) as c:
            r = await c.post("/reward", json={"items": [GOOD]},
                             headers={**AUTH, "traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-00"})
    assert r.status_code == 200, r.text
    assert not exporter.get_finished_spans() and "x-trace-id" not in r.headers  # the caller chose not to trace
    (headers,) = server.seen("POST /v1/chat/completions")
    version, trace_id, _, flags = headers["traceparent"].split("-")
    assert (version, trace_id, flags) == ("00", CALLER_TRACE, "00")  # nor will the judge server


@pytest.mark.parametrize("headers", [
    [("traceparent", "00-not-a-trace-01")],
    [("traceparent", "ff-" + CALLER_TRACE + "-" + CALLER_SPAN + "-01")],
    [("traceparent", "00-" + "0" * 32 + "-" + CALLER_SPAN + "-01")],
    [("traceparent", "x" * 20_000)],
    [("traceparent", TRACEPARENT), ("traceparent", TRACEPARENT)],
    [("tracestate", "k=" + "v" * 5_000), ("baggage", b"\xff\xfe=%%")],
])
async def test_a_malformed_trace_context_starts_a_trace_of_its_own(exported, headers):
    provider, exporter = exported
    app = build_app(Settings(**BASE), judge=FakeJudge(), embedder=FakeEmbedder(), tracer_provider=provider)
    async with client(app) as c:
        r = await c.post("/reward", json={"items": [EXACT]}, headers=httpx.Headers([*AUTH.items(), *headers]))
    assert r.status_code == 200, r.text
    top = request_span(exporter.get_finished_spans())
    assert format(top.context.trace_id, "032x") == r.headers["x-trace-id"] != CALLER_TRACE
    assert top.parent is None


async def test_shared_and_cached_verdicts_show_as_such_and_cost_only_the_request_that_called(exported):
    provider, exporter = exported
    started, go = asyncio.Event(), asyncio.Event()

    class HeldJudge(FakeJudge):
        async def complete(self, *a: Any, **k: Any) -> Any:
            started.set()
            await go.wait()
            return await super().complete(*a, **k)

    judge = HeldJudge()
    metrics = Metrics()
    app = build_app(Settings(**BASE), judge=judge, embedder=FakeEmbedder(), tracer_provider=provider,
                    metrics=metrics)
    async with client(app) as c:
        first = asyncio.create_task(c.post("/reward", json={"items": [GOOD]}, headers=AUTH))
        await started.wait()
        second = asyncio.create_task(c.post("/reward", json={"items": [GOOD]}, headers=AUTH))
        await asyncio.sleep(0.2)  # the second joins the first's call in flight
        go.set()
        a, b = await first, await second
        cached = await c.post("/reward", json={"items": [GOOD]}, headers=AUTH)
    assert len(judge.calls) == 1
    ua, ub, uc = a.json()["usage"], b.json()["usage"], cached.json()["usage"]
    assert ua["judge_calls"] == 1 and ua["judge_prompt_tokens"] > 0
    assert ub["judge_calls"] == 0 and ub["judge_prompt_tokens"] == 0
    assert uc == {"judge_prompt_tokens": 0, "judge_completion_tokens": 0, "embed_tokens": 0, "judge_calls": 0}
    judges = {s.context.trace_id: s for s in by_name(exporter.get_finished_spans())["judge"]}
    traces = [int(x.headers["x-trace-id"], 16) for x in (a, b)]
    assert dict(judges[traces[0]].attributes) == {"medix.calls": 1, "medix.coalesced": 0}
    assert dict(judges[traces[1]].attributes) == {"medix.calls": 0, "medix.coalesced": 1}
    third = int(cached.headers["x-trace-id"], 16)
    assert third not in judges  # nothing left to compute: no judge phase, no call made, none joined
    names = by_name(exporter.get_finished_spans())
    assert [s.context.trace_id for s in names["judge_call"]] == [traces[0]]
    (hit,) = [s for s in names["cache_lookup"] if s.context.trace_id == third]
    assert hit.attributes["medix.judge_hits"] == 1
    s = samples(metrics)
    prompt = s[("medix_judge_tokens_total", (("kind", "prompt"), ("route", "/reward"), ("tenant", "key1")))]
    assert prompt == ua["judge_prompt_tokens"]  # counted once, for the request that called


async def test_every_scoring_route_stamps_its_usage_in_a_header(exported):
    provider, _ = exported
    app = build_app(Settings(**BASE, rm_tenant="slime"), judge=FakeJudge(), embedder=FakeEmbedder(),
                    tracer_provider=provider)
    async with client(app) as c:
        get_reward = await c.post("/get_reward", json={"query": ["Q: x? A: <thinking>t</thinking><answer>edema"
                                                                  "</answer>"], "prompts": ["Q: x? A: "],
                                                       "labels": ["Pneumonia"]}, headers=AUTH)
        rm = await c.post("/rm", json={"response": "<thinking>t</thinking><answer>effusion</answer>",
                                       "label": "Pneumonia"})
        health = await c.get("/healthz")
    for r in (get_reward, rm):
        assert r.status_code == 200, r.text
        fields = dict(part.split("=") for part in r.headers["x-medix-usage"].split(", "))
        assert set(fields) == {"judge_prompt_tokens", "judge_completion_tokens", "embed_tokens", "judge_calls"}
        assert int(fields["judge_calls"]) == 1 and int(fields["judge_prompt_tokens"]) > 0
    assert "usage" not in get_reward.json() and "usage" not in rm.json()  # their frameworks' shapes stay
    assert "x-medix-usage" not in health.headers and "x-trace-id" not in health.headers


async def test_with_tracing_off_nothing_is_traced_and_no_provider_is_set(monkeypatch):
    for name in ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                 "MEDIX_TRACING", "OTEL_SDK_DISABLED"):
        monkeypatch.delenv(name, raising=False)
    seen: list[Any] = []

    class Watching(FakeJudge):
        async def complete(self, *a: Any, **k: Any) -> Any:
            seen.append((tracing.TRACED.get(), trace.get_current_span()))
            return await super().complete(*a, **k)

    settings = Settings(**BASE)
    assert not settings.tracing_on
    before = trace.get_tracer_provider()
    app = build_app(settings, judge=Watching(), embedder=FakeEmbedder())
    async with client(app) as c:
        r = await c.post("/reward", json={"items": [GOOD]}, headers={**AUTH, "traceparent": TRACEPARENT})
    assert r.status_code == 200 and "x-trace-id" not in r.headers
    assert r.json()["usage"]["judge_calls"] == 1  # usage is counted whether traced or not
    assert seen == [(None, trace.INVALID_SPAN)]  # no tracer, no span, not even the caller's context
    assert trace.get_tracer_provider() is before and type(before).__name__ == "ProxyTracerProvider"


# -- the settings ----------------------------------------------------------------------------------------------
OTEL = ("MEDIX_TRACING", "OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_SERVICE_NAME")


@pytest.mark.parametrize(("env", "on"), [
    ({}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel-collector:4317"}, True),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://otel-collector:4318/v1/traces"}, True),
    ({"OTEL_TRACES_EXPORTER": "console"}, True),
    ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}, False),
    ({"MEDIX_TRACING": "true"}, True),
    ({"MEDIX_TRACING": "false", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}, False),
    ({"OTEL_SDK_DISABLED": "true", "MEDIX_TRACING": "true", "OTEL_TRACES_EXPORTER": "otlp"}, False),
])
def test_the_standard_environment_switches_tracing_on(monkeypatch, env, on):
    for name in OTEL:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert Settings().tracing_on is on


def test_an_unknown_exporter_is_refused_at_start(monkeypatch):
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "zipkin")
    with pytest.raises(ValueError, match="zipkin"):
        Settings()


def test_the_provider_exports_where_the_environment_says(monkeypatch):
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GRPC
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HTTP
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter

    for name in OTEL:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp,console")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel-collector:4318")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    http, console = api_tracing.exporters(Settings())
    assert isinstance(http, HTTP) and isinstance(console, ConsoleSpanExporter)
    assert http._endpoint == "http://otel-collector:4318/v1/traces"
    (grpc,) = api_tracing.exporters(Settings(otel_traces_exporter="otlp", otel_exporter_otlp_protocol="grpc"))
    assert isinstance(grpc, GRPC)
    provider = api_tracing.make_provider(Settings())
    assert provider.resource.attributes["service.name"] == "medix-reward"
    monkeypatch.setenv("OTEL_SERVICE_NAME", "medix-reward-eu")
    assert api_tracing.make_provider(Settings()).resource.attributes["service.name"] == "medix-reward-eu"


# -- the judge and the embedder on a real local server -------------------------------------------------------
class OpenAIServer:
    """An OpenAI-compatible judge and embeddings server on a real port that keeps each request's headers."""

    def __init__(self, usage: str) -> None:
        self.usage = usage  # the reply's `usage`, as JSON text
        self.headers: list[tuple[str, dict[str, str]]] = []
        self.app = FastAPI()
        self.app.add_api_route("/{path:path}", self.handle, methods=["GET", "POST"])

    async def handle(self, path: str, request: Request) -> JSONResponse:
        self.headers.append((f"{request.method} /{path}", dict(request.headers)))
        if path == "v1/models":
            return JSONResponse({"data": [{"id": "judge"}]})
        if path == "v1/chat/completions":
            choices = json.dumps([{"message": {"content": "YES"}, "logprobs": {"content": [
                {"token": "YES", "logprob": -0.1, "top_logprobs": [{"token": "YES", "logprob": -0.1},
                                                                   {"token": "NO", "logprob": -2.5}]}]}}])
            return Response(f'{{"choices": {choices}, "usage": {self.usage}}}', media_type="application/json")
        if path == "v1/embeddings":
            texts = (await request.json())["input"]
            data = [{"index": i, "embedding": [1.0, float(i + 1)]} for i in range(len(texts))]
            return JSONResponse({"data": data, "usage": {"prompt_tokens": 5 * len(texts)}})
        return JSONResponse({"error": "not found"}, status_code=404)  # /tokenize: the constrained verdict

    def seen(self, route: str) -> list[dict[str, str]]:
        return [h for r, h in self.headers if r == route]


def server_settings(url: str) -> Settings:
    return Settings(**BASE, judge_url=f"{url}/v1", judge_model="judge", embed_url=f"{url}/v1", embed_model="embed")


async def test_the_trace_context_goes_on_to_the_judge_and_the_embedder(exported, served):
    provider, exporter = exported
    server = OpenAIServer('{"prompt_tokens": 120, "completion_tokens": 1, "total_tokens": 121}')
    with served(server.app, ready_path="/v1/models") as url:
        app = build_app(server_settings(url), tracer_provider=provider)
        async with client(app) as c:
            assert (await c.get("/readyz")).status_code == 200
            r = await c.post("/reward", json={"items": [GOOD]}, headers={**AUTH, "traceparent": TRACEPARENT})
    assert r.status_code == 200, r.text
    spans = exporter.get_finished_spans()
    names = by_name(spans)
    for route, under in (("POST /v1/chat/completions", "judge_call"), ("POST /v1/embeddings", "embed")):
        (headers,) = server.seen(route)
        version, trace_id, parent, flags = headers["traceparent"].split("-")
        assert (version, trace_id, flags) == ("00", CALLER_TRACE, "01")
        (made_by,) = names[under]  # the server's span of the call goes below the phase that made it
        assert int(parent, 16) == made_by.context.span_id
    assert not [s for s in spans if s.kind == SpanKind.CLIENT]  # no span per HTTP call of the service's own
    # The readiness probe's calls start no trace and carry no context.
    assert server.seen("GET /v1/models") and all("traceparent" not in h for h in server.seen("GET /v1/models"))
    assert all(s.context.trace_id == int(CALLER_TRACE, 16) for s in spans)
    assert r.json()["usage"] == {"judge_prompt_tokens": 120, "judge_completion_tokens": 1, "embed_tokens": 10,
                                 "judge_calls": 1}


async def test_untraced_no_trace_context_goes_to_the_servers(served):
    server = OpenAIServer('{"prompt_tokens": 120, "completion_tokens": 1}')
    with served(server.app, ready_path="/v1/models") as url:
        settings = server_settings(url)
        assert not settings.tracing_on
        async with client(build_app(settings)) as c:
            r = await c.post("/reward", json={"items": [GOOD]}, headers={**AUTH, "traceparent": TRACEPARENT})
    assert r.status_code == 200
    assert all("traceparent" not in h for _, h in server.headers)


@pytest.mark.parametrize("usage", [
    '{"prompt_tokens": -3, "completion_tokens": 1.5}', '{"prompt_tokens": "120", "completion_tokens": null}',
    '"lots"', "[1, 2]", '{"prompt_tokens": 1e400, "completion_tokens": NaN}',
    '{"prompt_tokens": true, "completion_tokens": 10000000000000000000000000000000000000000}', "null",
    '{"prompt_tokens": {"deep": [[[[1]]]]}}',
])
async def test_a_malformed_usage_is_left_out_and_the_verdict_stands(served, usage):
    server = OpenAIServer(usage)
    metrics = Metrics()
    with served(server.app, ready_path="/v1/models") as url:
        async with client(build_app(server_settings(url), metrics=metrics)) as c:
            r = await c.post("/reward", json={"items": [GOOD]}, headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json()["results"][0]["details"]["judge_verdict"] == "YES"
    assert r.json()["usage"] == {"judge_prompt_tokens": 0, "judge_completion_tokens": 0, "embed_tokens": 10,
                                 "judge_calls": 1}
    assert not any(name == "medix_judge_tokens_total" for name, _ in samples(metrics))
