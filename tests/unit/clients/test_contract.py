"""The client's result models and the service's wire models describe the same JSON: tied here, not by hope."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from clients.client import JudgeScore, RewardScore
from clients.contract import COMPONENTS, SCORE_KEYS
from service.evaluation.wire import JudgeResult
from service.reward.wire import RewardDetails, RewardResult
from service.runtime.wire import ErrorDetail

PAIRS = [(RewardScore, RewardResult), (JudgeScore, JudgeResult)]


def _fields(model: type[BaseModel]) -> dict[str, dict[str, Any]]:
    schema = model.model_json_schema(mode="serialization")
    return {name: prop for name, prop in schema["properties"].items()}


def _nullable(prop: dict[str, Any]) -> bool:
    return any(branch.get("type") == "null" for branch in prop.get("anyOf", [])) or prop.get("type") == "null"


@pytest.mark.parametrize(("client", "service"), PAIRS)
def test_every_client_field_is_a_service_field_with_the_same_nullability(client, service) -> None:
    theirs, ours = _fields(client), _fields(service)
    assert set(theirs) <= set(ours), set(theirs) - set(ours)
    required = set(service.model_json_schema(mode="serialization").get("required", []))
    for name, prop in theirs.items():
        assert _nullable(prop) == _nullable(ours[name]), name
        if name in client.model_json_schema().get("required", []):
            assert name in required, f"the client requires {name}, which the service may leave out"


@pytest.mark.parametrize(("client", "service"), PAIRS)
def test_the_client_keeps_what_it_does_not_model(client, service) -> None:
    assert client.model_config.get("extra") == "allow"  # a field the service adds later is not lost


def test_the_score_keys_are_the_service_results_scores() -> None:
    numeric = [name for name, f in RewardResult.model_fields.items() if f.annotation in (float, float | None)]
    assert tuple(numeric) == SCORE_KEYS and COMPONENTS == SCORE_KEYS[1:]


def test_a_service_result_reads_as_the_client_result() -> None:
    failed = RewardResult(id="a", overall=None, format=1.0, accuracy_llm=None, accuracy_embed=None, modality=None,
                          details=RewardDetails(answer="x", reference="y", decided_by="backends"),
                          error=ErrorDetail(type="input_rejected", message="too long", param="items[0]"))
    read = RewardScore.model_validate_json(failed.model_dump_json())
    assert read.overall is None and read.error == {"type": "input_rejected", "message": "too long",
                                                   "param": "items[0]"}
    judged = JudgeResult(id="b", task="t", rubric="report", score=0.8, raw_score=4.0, votes=[4, 4])
    assert JudgeScore.model_validate_json(judged.model_dump_json()).raw_score == 4.0
