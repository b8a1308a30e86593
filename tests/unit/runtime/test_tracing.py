"""The span helpers of the core: spans where the request is traced, nothing where it is not."""

from __future__ import annotations

import pytest
from opentelemetry.trace import StatusCode

from service.runtime import tracing


def test_untraced_the_helpers_make_nothing(exported):
    _, exporter = exported
    assert tracing.TRACED.get() is None and not tracing.traced()
    with tracing.span("rules", x=1) as span:
        assert span is None
    tracing.span_since("judge_queue", 0.5)
    tracing.annotate(x=1)
    tracing.describe_request(x=1)
    assert exporter.get_finished_spans() == ()


def test_what_the_core_says_of_the_request_waits_for_its_span_to_end(exported):
    provider, _ = exported
    request = tracing.Traced(provider.get_tracer("t"))
    token = tracing.TRACED.set(request)
    try:
        with tracing.span("judge"):  # whatever span is current: it goes to the request's own
            tracing.describe_request(**{"medix.pairs": 2})
        tracing.describe_request(**{"medix.rules_ms": 1.5})
    finally:
        tracing.TRACED.reset(token)
    assert request.attributes == {"medix.pairs": 2, "medix.rules_ms": 1.5}


def test_traced_spans_nest_under_the_current_one_with_their_attributes(exported):
    provider, exporter = exported
    token = tracing.TRACED.set(tracing.Traced(provider.get_tracer("t")))
    try:
        with tracing.span("request") as outer:
            with tracing.span("judge", **{"medix.kind": "judge"}):
                tracing.annotate(**{"medix.calls": 3})
                tracing.span_since("judge_queue", 0.25)
    finally:
        tracing.TRACED.reset(token)
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert set(spans) == {"request", "judge", "judge_queue"}
    assert spans["judge"].parent.span_id == outer.get_span_context().span_id
    assert spans["judge_queue"].parent.span_id == spans["judge"].context.span_id
    assert dict(spans["judge"].attributes) == {"medix.kind": "judge", "medix.calls": 3}
    lasted = (spans["judge_queue"].end_time - spans["judge_queue"].start_time) / 1e9
    assert lasted == pytest.approx(0.25, abs=1e-3)


def test_an_error_is_recorded_by_its_type_alone(exported):
    provider, exporter = exported
    token = tracing.TRACED.set(tracing.Traced(provider.get_tracer("t")))
    try:
        with pytest.raises(ValueError), tracing.span("judge_call"):
            raise ValueError("cannot reach http://user:secret@judge:8000/v1")
    finally:
        tracing.TRACED.reset(token)
    (span,) = exporter.get_finished_spans()
    assert span.status.status_code == StatusCode.ERROR and span.status.description == "ValueError"
    assert not span.events  # no exception event with the message
