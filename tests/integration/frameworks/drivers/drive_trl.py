"""TRL drives clients/adapters/trl.py through GRPOTrainer's own reward dispatch (run by .venvs/trl-1.10 or
.venvs/trl-1.14; see envs.sh).

A real GRPOTrainer is built on the local SmolLM2 policy with the adapter in `reward_funcs`, and its
`_calculate_rewards(inputs, prompts, completions, completion_ids_list)` (where TRL calls every reward function
and turns None into NaN) scores the cases as conversational completions. TRL >= 1.14 gets `MedixReward` (awaited
on TRL's event-loop thread); older TRL gets `MedixRewardSync`, and `MedixReward` must refuse to be built there.
Outages: `on_outage="raise"` must raise out of TRL; `on_outage="skip"` must give NaN, never 0.
"""

from __future__ import annotations

import tempfile
from importlib import metadata
from typing import Any

from _driver import cases, failure, number, parse, run, write


def main() -> None:
    args = parse()
    import datasets
    from transformers import AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from clients.adapters.trl import ASYNC_TRL, MedixReward, MedixRewardSync

    version = tuple(int(x) for x in metadata.version("trl").split(".")[:2])
    form = MedixReward if version >= ASYNC_TRL else MedixRewardSync
    report: dict[str, Any] = {"trl": metadata.version("trl"), "form": form.__name__}
    if form is MedixRewardSync:
        try:
            MedixReward(args.url)
            report["async_form_on_old_trl"] = "built"
        except RuntimeError as exc:
            report["async_form_on_old_trl"] = failure(exc)

    items = cases(args)
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    rows = [{"prompt": [{"role": "user", "content": c["question"]}], "ground_truth": c["ground_truth"]} for c in items]
    dataset = datasets.Dataset.from_list(rows)
    completions = [[{"role": "assistant", "content": c["response"]}] for c in items]
    completion_ids = [tokenizer(text=c["response"], add_special_tokens=False)["input_ids"] for c in items]

    def dispatch(reward: Any) -> list[float | None]:
        with tempfile.TemporaryDirectory() as out:
            config = GRPOConfig(output_dir=out, per_device_train_batch_size=len(items), num_generations=2,
                                max_completion_length=8, report_to="none", use_vllm=False, bf16=False,
                                save_strategy="no", logging_steps=1)
            trainer = GRPOTrainer(model=args.tokenizer, reward_funcs=[reward], args=config, train_dataset=dataset)
            rewards = trainer._calculate_rewards(rows, [r["prompt"] for r in rows], completions, completion_ids)
            report.setdefault("logged", {k: [number(v) for v in values]
                                         for k, values in trainer._pending_metrics.items()})
            return [number(v) for v in rewards[:, 0]]

    reward = form(args.url)
    report["rewards"] = dispatch(reward)
    report["history"] = reward.history
    try:
        report["outage_raise"] = f"no exception: {dispatch(form(args.down_url, retries=0))}"
    except Exception as exc:
        report["outage_raise"] = failure(exc)
    report["outage_skip"] = dispatch(form(args.down_url, retries=0, on_outage="skip"))
    write(args, report)


if __name__ == "__main__":
    run(main)
