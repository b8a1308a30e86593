import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.reward.prompt import DEFAULT_PROMPT, load_prompt, p_yes, read_verdict


def test_p_yes_sums_token_prefixes_of_each_choice():
    lp = {"Y": math.log(0.6), "YES": math.log(0.1), "N": math.log(0.1), "NO": math.log(0.1), "The": math.log(0.1)}
    assert p_yes(lp, "YES") == pytest.approx(0.7 / 0.9)


def test_p_yes_ignores_masked_tokens_and_falls_back_to_verdict():
    assert p_yes({"<pad>": -9999.0, "Y": float("-inf")}, "NO") == 0.0
    assert p_yes(None, "YES") == 1.0


@pytest.mark.parametrize(
    ("reply", "verdict"),
    [
        (" yes\n", "YES"), ("NO", "NO"), ("no", "NO"),
        # A judge that ignores structured outputs: YES anywhere (upper-cased) reads YES, as the published method.
        ("Yes, the candidate is correct.", "YES"), ("The answer is YES", "YES"), ("No... well, yes", "YES"),
        ("yesterday", "YES"),  # the published substring rule, kept as is
        # Any other non-empty reply reads NO, as the published method reads it.
        ("No, it names another organ.", "NO"), ("Answer: NO.", "NO"), ("maybe", "NO"), ("NOT SURE", "NO"),
        ("I don't know", "NO"), ("NONE", "NO"),
        # No reply at all: an error for the caller to retry, never a silent NO.
        ("", None), ("   ", None), ("\n\t", None),
    ],
)
def test_read_verdict(reply, verdict):
    assert read_verdict(reply) == verdict


def test_prompt_file_replaces_template_and_version(tmp_path):
    f = tmp_path / "p.json"
    f.write_text(json.dumps({"version": "mine-2", "system": "Grade.", "user": "Q {question} R {reference} A {answer}"}))
    p = load_prompt(f)
    assert p.version == "mine-2" and p.uses_question and not DEFAULT_PROMPT.uses_question
    msgs = p.messages("a{x}", "r", None, max_chars=100)
    assert msgs[1]["content"] == "Q (not given) R r A a{x}"


def test_prompt_file_without_placeholders_is_rejected(tmp_path):
    f = tmp_path / "p.json"
    f.write_text(json.dumps({"version": "x", "system": "s", "user": "no placeholders"}))
    with pytest.raises(ValueError):
        load_prompt(f)


# -- issue 24 item 3: a non-finite logprob is no evidence; p(YES) is always a probability ------------------------
NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(
    ("logprobs", "verdict", "expected"),
    [({"Y": NAN}, "YES", 1.0), ({"Y": NAN, "NO": NAN}, "NO", 0.0), ({"Y": INF, "N": math.log(0.5)}, "YES", 0.0),
     ({"Y": math.log(0.5), "NO": INF}, "NO", 1.0), ({"Y": math.log(0.2), "N": NAN, "NO": math.log(0.2)}, "NO", 0.5),
     ({"Y": -INF, "NO": -INF}, "YES", 1.0),
     # A server's logprob above 0 is not a probability, but exp must not overflow on it: only the ratio counts.
     ({"Y": 1000.0, "NO": 999.0}, "YES", 1 / (1 + math.exp(-1))), ({"Y": 800.0}, "NO", 1.0),
     ({"Y": None, "NO": "x", 5: -0.1}, "YES", 1.0)],
)
def test_p_yes_leaves_out_non_finite_logprobs(logprobs, verdict, expected):
    assert p_yes(logprobs, verdict) == pytest.approx(expected)


@settings(max_examples=300, deadline=None, database=None)
@given(st.dictionaries(st.sampled_from(["Y", "YES", "N", "NO", " yes", "The", ""]),
                       st.floats(allow_nan=True, allow_infinity=True) | st.none(), max_size=6),
       st.sampled_from(["YES", "NO"]))
def test_p_yes_is_always_a_probability(logprobs, verdict):
    p = p_yes(logprobs, verdict)
    assert math.isfinite(p) and 0.0 <= p <= 1.0
