import json
import math

import pytest

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
