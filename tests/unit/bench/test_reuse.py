"""The bench's measures of prefix reuse: calls made to share nothing, and replicas' counters read as shares."""

from __future__ import annotations

from service.bench.load import unshared
from service.bench.replicas import _spent, _summary

CALLS = [[{"role": "system", "content": "Judge."}, {"role": "user", "content": f"Reference: a\nCandidate: {c}"}]
         for c in ("b", "c")]


def test_unshared_calls_differ_from_their_first_token_and_keep_the_rest():
    out = unshared(CALLS)
    systems = [call[0]["content"] for call in out]
    assert len(set(systems)) == 2 and all(s.endswith("Judge.") for s in systems)
    assert [call[1] for call in out] == [call[1] for call in CALLS]  # the user turn is untouched
    assert CALLS[0][0]["content"] == "Judge."  # the input is not modified


def test_a_replicas_counters_become_its_calls_tokens_and_hit_share():
    before = {"vllm:request_success_total": 10, "vllm:prompt_tokens_total": 1000,
              "vllm:prefix_cache_queries_total": 1000, "vllm:prefix_cache_hits_total": 100}
    after = {"vllm:request_success_total": 14, "vllm:prompt_tokens_total": 1400,
             "vllm:prefix_cache_queries_total": 1400, "vllm:prefix_cache_hits_total": 400}
    assert _spent(before, after) == {"calls": 4, "prompt_tokens": 400, "hit_share": 0.75}
    assert _spent(after, after)["hit_share"] is None  # nothing looked up: no share, not 0


def test_the_summary_weighs_each_replicas_share_by_its_tokens():
    runs = [{"seconds": 2.0, "replicas": [{"calls": 3, "prompt_tokens": 300, "hit_share": 1.0},
                                           {"calls": 1, "prompt_tokens": 100, "hit_share": 0.0}]}]
    out = _summary(runs, ["http://a/v1", "http://b/v1"])
    assert out["hit_share"] == 0.75 and out["median_s"] == 2.0
    assert [r["calls"] for r in out["replicas"]] == [3, 1]
