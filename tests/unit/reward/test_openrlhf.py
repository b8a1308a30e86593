import pytest

from service.errors import InvalidRequest
from service.protocol import OpenRLHFRequest
from service.reward.openrlhf import response_of, to_reward_request


def test_prompt_is_stripped_from_the_query_and_end_markers_dropped():
    assert response_of("PROMPT<X_RAY><thinking>a</thinking>", "PROMPT") == "<X_RAY><thinking>a</thinking>"
    assert response_of("PROMPT answer<|im_end|>\n<|endoftext|>", "PROMPT") == " answer"
    assert response_of("no prompt match", "other") == "no prompt match"
    assert response_of("text", None) == "text"


def test_request_translation_and_length_checks():
    req = to_reward_request(OpenRLHFRequest(query=["Q: a<answer>x</answer>"], prompts=["Q: "], labels=["<X_RAY>x"]))
    assert req.items[0].response == "a<answer>x</answer>"
    with pytest.raises(InvalidRequest) as e:
        to_reward_request(OpenRLHFRequest(query=["a", "b"], labels=["x"]))
    assert e.value.param == "labels"
    with pytest.raises(InvalidRequest) as e:
        to_reward_request(OpenRLHFRequest(query=["a"], prompts=["p", "q"], labels=["x"]))
    assert e.value.param == "prompts"
    with pytest.raises(InvalidRequest) as e:
        to_reward_request(OpenRLHFRequest(query=["a"], labels=["<BAD>x"]))
    assert e.value.param == "labels"
