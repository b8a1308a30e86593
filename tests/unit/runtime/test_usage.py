"""A request's usage: token counts read strictly from what servers report, counted once for its tenant."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.runtime import usage
from service.runtime.metrics import Metrics


def samples(m: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(m.render().decode()) for s in f.samples}


@pytest.mark.parametrize(("value", "read"), [
    (12, 12), (0, 0), (2**31, 2**31),
    (-1, None), (1.5, None), (12.0, None), (float("nan"), None), (float("inf"), None), (True, None),
    ("12", None), (None, None), ([3], None), (2**31 + 1, None),
])
def test_a_token_count_is_a_non_negative_integer_or_left_out(value, read):
    assert usage.token_count(value) == read


def test_counts_go_to_the_request_and_to_its_tenants_counters():
    m = Metrics()
    spent = usage.Usage("lab-a", "/reward", m)
    token = usage.CURRENT.set(spent)
    try:
        usage.judge_reply(100, 1)
        usage.judge_reply(-5, "x")  # a malformed count: the call is counted, its tokens are not
        usage.embed_reply(7)
        usage.embed_reply(None)  # a server that does not report usage (TEI)
    finally:
        usage.CURRENT.reset(token)
    usage.judge_reply(1000, 1000)  # outside a request: nobody's
    assert spent.counts() == {"judge_prompt_tokens": 100, "judge_completion_tokens": 1, "embed_tokens": 7,
                              "judge_calls": 2}
    assert spent.header() == "judge_prompt_tokens=100, judge_completion_tokens=1, embed_tokens=7, judge_calls=2"
    s = samples(m)
    labels = (("kind", "prompt"), ("route", "/reward"), ("tenant", "lab-a"))
    assert s[("medix_judge_tokens_total", labels)] == 100
    assert s[("medix_judge_tokens_total", (("kind", "completion"), *labels[1:]))] == 1
    assert s[("medix_embed_tokens_total", (("route", "/reward"), ("tenant", "lab-a")))] == 7
