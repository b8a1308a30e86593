"""/get_reward's translation: where the response starts in OpenRLHF's query, and numbers-only extra_logs."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clients.contract import MIN_TAIL, ResponseNotFound, response_start
from service.api.errors import InputRejected, InvalidRequest
from service.reward.openrlhf import from_reward_response, response_of, to_reward_request
from service.reward.wire import OpenRLHFRequest, ProfileInfo, RewardDetails, RewardResponse, RewardResult
from service.runtime.wire import ErrorDetail

ANSWER = "<X_RAY><thinking>a</thinking><answer>x</answer>"
QWEN = "<|im_start|>system\nYou are a radiologist.<|im_end|>\n<|im_start|>user\n{}Which disease?<|im_end|>\n" \
       "<|im_start|>assistant\n"


def test_prompt_is_stripped_from_the_query_and_end_markers_dropped():
    assert response_of("PROMPT<X_RAY><thinking>a</thinking>", "PROMPT") == "<X_RAY><thinking>a</thinking>"
    assert response_of("PROMPT answer<|im_end|>\n<|endoftext|>", "PROMPT") == " answer"
    assert response_of("text", None) == "text"  # no prompt and no template: the query is the response
    assert response_of("PROMPT", "PROMPT") == ""  # an empty response is scored as empty, not as the prompt


def test_vision_language_prompt_with_expanded_image_placeholders():
    # Qwen2-VL's processor expands one <|image_pad|> into one per image patch; `prompts` keeps the single one.
    prompt = QWEN.format("<|vision_start|><|image_pad|><|vision_end|>")
    query = QWEN.format("<|vision_start|>" + "<|image_pad|>" * 300 + "<|vision_end|>") + ANSWER + "<|im_end|>"
    assert not query.startswith(prompt)
    assert response_of(query, prompt) == ANSWER
    # LLaVA-style: <image> repeated, two images with text between them.
    prompt = "USER: <image> left and <image> right. Which side? ASSISTANT:"
    query = "USER: " + "<image>" * 50 + " left and " + "<image>" * 50 + " right. Which side? ASSISTANT:" + " left</s>"
    assert response_of(query, prompt) == " left"


def test_left_truncated_prompt():
    prompt = QWEN.format("A long clinical history. " * 40)
    query = prompt[-120:] + ANSWER + "<|im_end|>"  # OpenRLHF keeps the prompt's last tokens
    assert response_of(query, prompt) == ANSWER
    # Truncated down to the assistant marker (shorter than MIN_TAIL): the template's marker shows the start.
    query = "<|im_start|>assistant\n" + ANSWER
    assert response_of(query, prompt) == ANSWER


def test_a_response_that_repeats_the_prompt_is_kept_whole():
    prompt = QWEN.format("")
    response = "You asked: Which disease?<|im_end|>\n<|im_start|>assistant\n — pneumonia"
    assert response_of(prompt + response, prompt) == response


def test_templates_without_a_prompt():
    llama = "<|start_header_id|>user<|end_header_id|>\n\nQ?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    assert response_of(llama + ANSWER + "<|eot_id|>", None) == ANSWER
    assert response_of(QWEN.format("") + ANSWER, None) == ANSWER


def test_a_query_that_does_not_show_where_the_response_starts_is_refused():
    with pytest.raises(ResponseNotFound):
        response_of("no prompt match", "other prompt")
    with pytest.raises(InvalidRequest) as e:
        to_reward_request(OpenRLHFRequest(query=["ok" + ANSWER, "something else entirely"],
                                          prompts=["ok", "the prompt that was sent"], labels=["<X_RAY>x"] * 2))
    assert e.value.param == "query[1]" and "query[1]" in e.value.message


NOT_P = st.text(st.characters(blacklist_characters="P"), max_size=60)


@given(prefix=st.text(max_size=40), prompt_tail=st.text(st.characters(blacklist_characters="P"), min_size=MIN_TAIL,
                                                         max_size=60), response=NOT_P)
def test_the_response_after_any_surviving_prompt_tail_is_found(prefix, prompt_tail, response):
    # Whatever replaced the front of the prompt (truncation, expanded placeholders), the text after its intact
    # tail is the response, when that tail occurs once in the query.
    prompt = "P" * 30 + prompt_tail
    query = prefix + prompt_tail + response
    first = query.find(prompt_tail)
    if first != len(prefix) or query.find(prompt_tail, first + 1) != -1:
        return
    start = response_start(query, prompt)
    assert query[start:] == response


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


def _result(i, overall, modality, error=None):
    return RewardResult(id=str(i), overall=overall, format=1.0, accuracy_llm=None if error else 1.0,
                        accuracy_embed=None if error else 0.5, modality=modality, error=error,
                        details=RewardDetails(answer="x", reference="x", decided_by="backends"))


PROFILE = ProfileInfo(name="p", weights={}, judge_model="j", embed_model="e", prompt_version="v")


def test_extra_logs_hold_numbers_only_with_the_same_keys_for_every_sample():
    out = from_reward_response(RewardResponse(results=[_result(0, 0.9, 1.0), _result(1, 0.7, None)], profile=PROFILE))
    assert out.rewards == out.scores == [0.9, 0.7]
    assert set(out.extra_logs) == {"format", "accuracy_llm", "accuracy_embed", "modality"}
    assert out.extra_logs["modality"] == [1.0, 0.0]  # the untagged label's null modality is 0 here
    assert all(isinstance(v, float) for values in out.extra_logs.values() for v in values)


def test_an_item_the_service_could_not_score_fails_the_request_naming_it():
    err = ErrorDetail(type="input_rejected", message="judge: longer than its context", param="items[1]")
    with pytest.raises(InputRejected) as e:
        from_reward_response(RewardResponse(results=[_result(0, 0.9, 1.0), _result(1, None, None, err)],
                                            profile=PROFILE))
    assert e.value.param == "query[1]" and "context" in e.value.message


def test_empty_lists_are_no_request_and_an_empty_reply():
    from service.reward.openrlhf import empty_response

    assert to_reward_request(OpenRLHFRequest(query=[], prompts=[], labels=[])) is None
    with pytest.raises(InvalidRequest) as e:
        to_reward_request(OpenRLHFRequest(query=[], labels=["x"]))
    assert e.value.param == "labels"
    out = empty_response()
    assert out.rewards == out.scores == [] and out.extra_logs == {k: [] for k in
                                                                   ("format", "accuracy_llm", "accuracy_embed",
                                                                    "modality")}
    assert set(empty_response("skip").extra_logs) == {"format", "accuracy_llm", "accuracy_embed", "modality",
                                                      "medix_refused"}


def test_on_refused_skip_gives_the_chosen_reward_and_marks_it():
    err = ErrorDetail(type="input_rejected", message="judge: longer than its context", param="items[1]")
    resp = RewardResponse(results=[_result(0, 0.9, 1.0), _result(1, None, None, err)], profile=PROFILE)
    out = from_reward_response(resp, "skip", 0.5)
    assert out.rewards == out.scores == [0.9, 0.5]
    assert out.extra_logs["medix_refused"] == [0.0, 1.0]
    assert out.extra_logs["accuracy_llm"] == [1.0, 0.0] and out.extra_logs["format"] == [1.0, 1.0]
    assert len({len(v) for v in out.extra_logs.values()}) == 1
