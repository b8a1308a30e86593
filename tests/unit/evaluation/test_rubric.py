import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.evaluation import rubric
from service.evaluation.rubric import _braced


@pytest.mark.parametrize(
    ("prediction", "kept"),
    [("<think>hmm</think> Answer B", "Answer B"), ("<thinking>a</thinking>x<thinking>b</thinking> final", "final"),
     ("no reasoning", "no reasoning"), ("<think>unfinished", "<think>unfinished"), ("  padded \n", "padded"),
     ("a</think>b</think>\n c ", "c"),
     # </think> wins over </thinking> wherever they stand: only when there is no </think> is </thinking> used.
     ("x</think>kept</thinking>too", "kept</thinking>too"), ("x</thinking>y</think>z", "z"),
     # Case-sensitive, as the published evaluation: other cases are not reasoning ends.
     ("<THINK>x</THINK>y", "<THINK>x</THINK>y"), ("a</Thinking>b", "a</Thinking>b"),
     ("a</THINKING>b</thinking> c", "c"), ("</think>", "")],
)
def test_strip_reasoning_keeps_text_after_the_last_close(prediction, kept):
    assert rubric.strip_reasoning(prediction) == kept


@pytest.mark.parametrize(
    ("reply", "kind", "score"),
    [('{"score": 1}', "binary", 1), (' {"score":0} ', "binary", 0), ('Sure. {"score": 1} done', "binary", 1),
     ('{"score": 2}', "binary", None), ('{"score": 4}', "report", 4), ('{"score": 6}', "report", None),
     ('{"score": true}', "binary", None), ('{"score": "1"}', "binary", None), ("YES", "binary", None),
     ("", "report", None)],
)
def test_parse_score(reply, kind, score):
    assert rubric.parse_score(reply, kind) == score


def test_binary_majority_and_report_mean():
    assert rubric.aggregate([1, 1, 0], "binary") == (1.0, 1.0)
    assert rubric.aggregate([1, 0, 0], "binary") == (0.0, 0.0)
    assert rubric.aggregate([1, 0], "binary") == (0.0, 0.0)  # a tie is not a majority
    assert rubric.aggregate([4, 5, 3], "report") == (pytest.approx(0.8), pytest.approx(4.0))


@settings(max_examples=500, deadline=None, database=None)
@given(st.text(alphabet="{}a \n:\"score1", max_size=30))
def test_braced_finds_what_the_lazy_regex_finds(reply):
    assert _braced(reply) == re.findall(r"\{.*?\}", reply, re.DOTALL)


# Issue 24 item 7: a reply nested past the JSON parser's limit (RecursionError) is an unparseable reply, not a 500.
@pytest.mark.parametrize("reply", ["[" * 5000, "[" * 5000 + "]" * 5000, '{"score": ' + "[" * 5000 + "}",
                                   "{" + '"a":[' * 5000 + "}", '{"a": ' + "[" * 5000 + '} {"score": 1}'])
def test_parse_score_survives_deep_nesting(reply):
    assert rubric.parse_score(reply, "binary") == (1 if reply.endswith('{"score": 1}') else None)
