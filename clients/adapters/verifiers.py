"""verifiers 0.4 (Prime Intellect's environments, trained with prime-rl): the MediX reward as a v1 `@vf.reward`.

One line of configuration, on any v1 taskset whose task data carries the reference (`ground_truth`, `answer` or
`expected_answer`, and an optional `modality` tag), with MEDIX_URL / MEDIX_API_KEY in the environment:

    --env.taskset.task.rewards.medix.fn clients.adapters.verifiers:medix_reward

Or one file of your own: a task class that subclasses `MedixTask` (data `MedixData`), whose
`@vf.reward(weight=1.0) async def medix(self, trace)` calls the service; its options are task config fields
(`--env.taskset.task.medix-url`, …, see `MedixTaskConfig`). `SlakeTaskset` is that task over the bundled SLAKE
questions (clients/data/slake_en_test.jsonl, text only); clients/examples/medix_slake is the installable taskset
package (`--env.taskset.id medix-slake`).

Each scored trace sends one /reward request (the last reply, the task's question and reference) and records the
components with `trace.record_metric` as `medix_format`, `medix_accuracy_llm`, `medix_accuracy_embed`,
`medix_modality` (a null modality as 0), the names the NeMo Gym resources server (clients/adapters/nemo_gym.py)
gives them too. The reward is `overall`.

An outage raises `MedixUnavailable`: verifiers records it as a task error on the trace (`TaskError`, stop
condition `task_error`, `trace.ok` false, the reward left unscored), never as a score. An item the service
refused raises `ItemFailed` the same way, or, with `on_refused="skip"` (`medix_on_refused`), scores
`refused_reward` with the metric `medix_refused` 1.0.

This module imports verifiers: it is for verifiers' environment only; nothing in clients/ imports it but the example
taskset package (clients/examples/medix_slake), which is for verifiers too.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import verifiers.v1 as vf
from pydantic import Field

from clients.adapters.common import ON_REFUSED, client_options, scores, shared_async_client
from clients.contract import COMPONENTS, REFUSED_KEY
from clients.contract import ground_truth as to_ground_truth
from clients.datasets import SLAKE, modality_tag, read_jsonl

METRIC_PREFIX = "medix_"
# The reply shape the method scores (the format component), asked of the policy by SlakeTaskset.
SYSTEM_PROMPT = (
    "You answer questions about a medical image. Reply in exactly this shape, on one line:\n"
    "<MODALITY_TAG><thinking>one short sentence of reasoning</thinking><answer>a few words</answer>\n"
    "The tag is <X_RAY> for an X-ray, <CT_SCAN> for a CT scan, <MRI_SCAN> for an MRI scan. "
    "Write nothing after </answer>."
)
# Where a taskset's data may hold the reference, in this order.
REFERENCE_FIELDS = ("ground_truth", "answer", "expected_answer")


def _field(data: Any, name: str) -> Any:
    value = getattr(data, name, None)
    if value is None and isinstance(getattr(data, "model_extra", None), dict):
        value = data.model_extra.get(name)  # WireTaskData keeps a saved task's own fields here
    return value


def reference_of(data: Any) -> str | dict[str, Any]:
    """The /reward `ground_truth` of a task's data: its first reference field, tagged with its `modality`."""
    for name in REFERENCE_FIELDS:
        value = _field(data, name)
        if value is not None:
            return to_ground_truth(value, _field(data, "modality"))
    raise ValueError(f"the task data ({type(data).__name__}) has none of {', '.join(REFERENCE_FIELDS)}: "
                     "the MediX reward needs the reference answer")


def question_of(data: Any) -> str | None:
    question = _field(data, "question")
    if question is not None:
        return str(question)
    text = getattr(data, "prompt_text", None)
    return text or None


def metrics_of(result: dict[str, float]) -> dict[str, float]:
    """The numbers a trace records as metrics: the components (and `medix_refused` when present)."""
    out = {f"{METRIC_PREFIX}{name}": result[name] for name in COMPONENTS}
    if REFUSED_KEY in result:
        out[REFUSED_KEY] = result[REFUSED_KEY]
    return out


async def score_trace(data: Any, trace: vf.Trace, *, profile: str | None = None,
                      on_refused: Literal["raise", "skip"] = "raise", refused_reward: float = 0.0,
                      **client: Any) -> float:
    """Score a finished trace with one /reward request: record the components as metrics, return `overall`.
    `client`: `url`, `api_key`, `timeout`, `retries` (unset: MEDIX_* variables, then the trainer defaults).
    Raises `MedixUnavailable` (an outage) or `ItemFailed` (a refused item, unless `on_refused="skip"`)."""
    if on_refused not in ON_REFUSED:
        raise ValueError(f"on_refused must be 'raise' or 'skip', not {on_refused!r}")
    item = {"id": str(trace.id), "response": trace.last_reply, "ground_truth": reference_of(data),
            "question": question_of(data)}
    results = await shared_async_client(**client_options(client)).reward([item], profile)
    result = scores("verifiers", results, [f"task {getattr(data, 'idx', None)!r}"], on_refused=on_refused,
                    refused_reward=refused_reward)[0]
    trace.record_metrics(metrics_of(result))
    return result["overall"]


async def medix_reward(task: vf.TaskData, trace: vf.Trace) -> float:
    """The plugged form (`--env.taskset.task.rewards.medix.fn clients.adapters.verifiers:medix_reward`), for any
    taskset whose task data holds the reference; service address, key and timeouts from MEDIX_* variables."""
    return await score_trace(task, trace)


class MedixTaskConfig(vf.TaskConfig):
    """The MediX reward's options, under `--env.taskset.task.*`. Unset address and key: MEDIX_URL, MEDIX_API_KEY;
    unset timeout and retries: MEDIX_TIMEOUT / MEDIX_RETRIES, else the adapters' trainer defaults."""

    medix_url: str | None = None
    medix_api_key: str | None = None
    medix_profile: str | None = None
    medix_timeout: float | None = Field(None, gt=0)
    medix_retries: int | None = Field(None, ge=0)
    medix_on_refused: Literal["raise", "skip"] = "raise"
    medix_refused_reward: float = 0.0


class MedixData(vf.TaskData):
    """A task the MediX reward can score: the reference `answer` (a plain answer or `<TAG>answer`), an optional
    modality tag (`X_RAY`, `CT_SCAN`, `MRI_SCAN`) and the question sent to the judge."""

    answer: str | dict[str, Any]
    modality: str | None = None
    question: str | None = None


class MedixTask(vf.Task[MedixData, vf.State, MedixTaskConfig]):
    """Subclass (or use) this task: its `medix` reward calls the service once per scored trace."""

    @vf.reward(weight=1.0)
    async def medix(self, trace: vf.Trace) -> float:
        c = self.config
        return await score_trace(self.data, trace, url=c.medix_url, api_key=c.medix_api_key,
                                 profile=c.medix_profile, timeout=c.medix_timeout, retries=c.medix_retries,
                                 on_refused=c.medix_on_refused, refused_reward=c.medix_refused_reward)


class SlakeConfig(vf.TasksetConfig):
    dataset: Path | None = None
    """JSONL rows with `question` and `answer` (SLAKE's modality names or the method's tags in `modality`), or a
    `ground_truth` such as `<X_RAY>Pneumonia`; default the bundled SLAKE English test questions."""
    task: MedixTaskConfig = MedixTaskConfig()


IMAGE_WORDS = {"X_RAY": "X-ray", "CT_SCAN": "CT scan", "MRI_SCAN": "MRI scan"}


def slake_task(row: dict[str, Any], config: MedixTaskConfig, name: str) -> MedixTask:
    """One row as a task: the user turn names the image kind and place (the images are not bundled), then asks."""
    tag = modality_tag(row)
    if row.get("ground_truth") is not None:  # already a /reward reference (`<TAG>answer`, or an object)
        answer, modality = row["ground_truth"], None
    elif row.get("answer") is not None:
        answer, modality = row["answer"], tag
    else:
        raise ValueError(f"{name} has neither `ground_truth` nor `answer`")
    place = str(row.get("location") or "").strip().lower()
    image = f"Image: {IMAGE_WORDS.get(tag, tag)}{', ' + place if place else ''}.\n" if tag else ""
    data = MedixData(id=str(row.get("id", name)), name=name, prompt=f"{image}Question: {row['question']}",
                     system_prompt=SYSTEM_PROMPT, answer=answer if isinstance(answer, dict) else str(answer),
                     modality=modality, question=str(row["question"]))
    return MedixTask(data, config)


class SlakeTaskset(vf.Taskset[MedixTask, SlakeConfig]):
    """The bundled SLAKE questions (or `dataset`), scored by the MediX reward."""

    def load(self) -> Iterator[MedixTask]:
        path = (self.config.dataset or SLAKE).expanduser()
        for i, row in enumerate(read_jsonl(path)):
            yield slake_task(row, self.config.task, f"{path.stem}:{i}")
