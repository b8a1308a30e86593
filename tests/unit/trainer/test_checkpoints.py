"""medix-train keeps a crashed run (issue 24, item 10): checkpoints every --save-steps steps, --resume from the
newest complete one, steps.jsonl kept up to it and appended to. No training here: the options built, the
checkpoint folders read, and train() wired to a stand-in for TRL's trainer."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest
from typer.testing import CliRunner

from trainer import cli, grpo
from trainer.grpo import Checkpoint, RunExists, TrainOptions, prepare_steps_log, resume_point

runner = CliRunner()


def checkpoint(output_dir: Path, step: int, complete: bool = True) -> Path:
    path = output_dir / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(b"weights")
    if complete:  # transformers writes the trainer state last
        (path / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": []}))
    return path


def write_steps(path: Path, steps: range, torn: str = "") -> None:
    path.write_text("".join(json.dumps({"step": s, "elapsed_s": 10.0 * s, "reward": 0.5}) + "\n" for s in steps)
                    + torn)


def steps_in(path: Path) -> list[int]:
    return [json.loads(line)["step"] for line in path.read_text().splitlines()]


# -- the options ------------------------------------------------------------------------------------------------
def test_grpo_config_saves_checkpoints_that_a_resume_can_use(tmp_path: Path) -> None:
    """Before: save_strategy="no", nothing kept. The arguments go through TRL's own GRPOConfig here."""
    from transformers.trainer_utils import SaveStrategy
    from trl import GRPOConfig

    config = GRPOConfig(**grpo.config_args(TrainOptions(model="m", data=tmp_path, output_dir=tmp_path), cuda=False))
    assert config.save_strategy == SaveStrategy.STEPS and config.save_steps == 10 and config.save_total_limit == 2
    assert config.save_only_model is False  # optimiser, scheduler and RNG state too: what a resume needs
    opts = TrainOptions(model="m", data=tmp_path, output_dir=tmp_path, save_steps=3, save_total_limit=1)
    config = GRPOConfig(**grpo.config_args(opts, cuda=False))
    assert (config.save_steps, config.save_total_limit) == (3, 1)
    off = GRPOConfig(**grpo.config_args(TrainOptions(model="m", data=tmp_path, output_dir=tmp_path, save_steps=0),
                                        cuda=False))
    assert off.save_strategy == SaveStrategy.NO


def test_checkpoint_names_are_transformers_own() -> None:
    from transformers.trainer import TRAINER_STATE_NAME
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    assert grpo.CHECKPOINT_DIR.match(f"{PREFIX_CHECKPOINT_DIR}-12").group(1) == "12"
    assert grpo.TRAINER_STATE == TRAINER_STATE_NAME


def test_cli_flags_reach_the_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[TrainOptions] = []
    monkeypatch.setattr(grpo, "train", lambda opts: seen.append(opts) or {"log_history": [{"step": 1}]})
    out = tmp_path / "run"
    r = runner.invoke(cli.app, ["--model", "m", "--output-dir", str(out)])
    assert r.exit_code == 0, r.output
    assert (seen[-1].save_steps, seen[-1].save_total_limit, seen[-1].resume) == (10, 2, False)
    r = runner.invoke(cli.app, ["--model", "m", "--output-dir", str(out), "--save-steps", "5",
                                "--save-total-limit", "3", "--resume"])
    assert r.exit_code == 0, r.output
    assert (seen[-1].save_steps, seen[-1].save_total_limit, seen[-1].resume) == (5, 3, True)
    assert "no complete checkpoint" in r.output


def test_cli_refuses_a_run_folder_with_checkpoints_unless_resumed(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[TrainOptions] = []
    monkeypatch.setattr(grpo, "train", lambda opts: seen.append(opts) or {"log_history": []})
    checkpoint(tmp_path, 4)
    r = runner.invoke(cli.app, ["--model", "m", "--output-dir", str(tmp_path)])
    assert r.exit_code == 2 and "--resume" in r.output and not seen
    r = runner.invoke(cli.app, ["--model", "m", "--output-dir", str(tmp_path), "--resume"])
    assert r.exit_code == 0 and "resuming from" in r.output and "(step 4)" in r.output


# -- where a run starts --------------------------------------------------------------------------------------------
def test_resume_point(tmp_path: Path) -> None:
    assert resume_point(tmp_path / "new", resume=False) is None
    assert resume_point(tmp_path / "new", resume=True) is None  # nothing yet: from the beginning
    checkpoint(tmp_path, 10)
    checkpoint(tmp_path, 20)
    (tmp_path / "checkpoint-x").mkdir()  # not a checkpoint
    with pytest.raises(RunExists, match="checkpoint-10, checkpoint-20"):
        resume_point(tmp_path, resume=False)
    assert resume_point(tmp_path, resume=True) == Checkpoint(tmp_path / "checkpoint-20", 20)


def test_resume_passes_over_a_checkpoint_whose_save_a_crash_cut_short(tmp_path: Path) -> None:
    """transformers' resume_from_checkpoint=True takes the highest-numbered folder, finished or not."""
    checkpoint(tmp_path, 10)
    checkpoint(tmp_path, 20)
    checkpoint(tmp_path, 30, complete=False)  # killed before the trainer state was written
    torn = checkpoint(tmp_path, 25, complete=False)
    (torn / "trainer_state.json").write_text('{"global_step": 2')  # killed while writing it
    assert resume_point(tmp_path, resume=True) == Checkpoint(tmp_path / "checkpoint-20", 20)


# -- steps.jsonl ---------------------------------------------------------------------------------------------------
def test_a_fresh_run_empties_steps_jsonl(tmp_path: Path) -> None:
    steps = tmp_path / "steps.jsonl"
    write_steps(steps, range(1, 4))
    assert prepare_steps_log(steps, None) == 0.0 and steps.read_text() == ""


def test_a_resumed_run_keeps_the_steps_up_to_its_checkpoint(tmp_path: Path) -> None:
    """Steps 1-7 were logged, the checkpoint is step 5, a crash cut step 8's line: 1-5 are kept (6 and 7 will be
    trained and logged again), and elapsed_s continues from step 5's."""
    steps = tmp_path / "steps.jsonl"
    write_steps(steps, range(1, 8), torn='{"step": 8, "elap')
    assert prepare_steps_log(steps, 5) == 50.0
    assert steps_in(steps) == [1, 2, 3, 4, 5]


def test_the_step_logger_appends_after_a_resume(tmp_path: Path) -> None:
    """Before: on_train_begin emptied steps.jsonl whatever the run."""
    steps = tmp_path / "steps.jsonl"
    write_steps(steps, range(1, 8))
    log = grpo._step_logger(steps, resume_step=5)
    log.on_train_begin(None, None, None)
    log.on_log(None, SimpleNamespace(global_step=6), None, logs={"reward": 0.7})
    assert steps_in(steps) == [1, 2, 3, 4, 5, 6]
    assert json.loads(steps.read_text().splitlines()[-1])["elapsed_s"] >= 50.0

    fresh = grpo._step_logger(steps)
    fresh.on_train_begin(None, None, None)
    fresh.on_log(None, SimpleNamespace(global_step=1), None, logs={"reward": 0.1})
    assert steps_in(steps) == [1]


# -- train(), with TRL's trainer stood in for -----------------------------------------------------------------------
class FakeTrainer:
    """Records what train() hands TRL; "trains" by running the callbacks as transformers would, from the step
    it resumes at."""

    made: ClassVar[list[FakeTrainer]] = []

    def __init__(self, model: Any, reward_funcs: Any, args: Any, train_dataset: Any, callbacks: list[Any]) -> None:
        self.args, self.callbacks = args, callbacks
        self.state = SimpleNamespace(global_step=0, log_history=[])
        FakeTrainer.made.append(self)

    def train(self, resume_from_checkpoint: str | None = None) -> None:
        self.resumed_from = resume_from_checkpoint
        first = json.loads((Path(resume_from_checkpoint) / "trainer_state.json").read_text())["global_step"] + 1 \
            if resume_from_checkpoint else 1
        for cb in self.callbacks:
            cb.on_train_begin(self.args, self.state, None)
        for step in range(first, self.args.max_steps + 1):
            self.state.global_step = step
            for cb in self.callbacks:
                cb.on_log(self.args, self.state, None, logs={"reward": 0.5})

    def save_model(self, path: str) -> None:
        pass


@pytest.fixture
def fake_trl(monkeypatch: pytest.MonkeyPatch) -> type[FakeTrainer]:
    import trl

    FakeTrainer.made = []
    monkeypatch.setattr(trl, "GRPOTrainer", FakeTrainer)
    return FakeTrainer


def test_train_resumes_from_the_newest_complete_checkpoint(tmp_path: Path, fake_trl: type[FakeTrainer]) -> None:
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"id": i, "question": f"Q{i}?", "answer": "Lung", "modality": "CT",
                                        "img_id": i}) + "\n" for i in range(12)))
    out = tmp_path / "run"
    opts = TrainOptions(model="m", data=data, output_dir=out, max_steps=8, save_steps=4, holdout_every=0)

    grpo.train(opts)  # a fresh run
    assert fake_trl.made[-1].resumed_from is None and steps_in(out / "steps.jsonl") == list(range(1, 9))
    assert fake_trl.made[-1].args.save_steps == 4 and fake_trl.made[-1].args.save_total_limit == 2

    # the run "crashed" after step 6 with checkpoint-4 written and checkpoint-8 cut short
    write_steps(out / "steps.jsonl", range(1, 7), torn='{"step": 7')
    checkpoint(out, 4)
    checkpoint(out, 8, complete=False)
    crashed = (out / "steps.jsonl").read_text()
    with pytest.raises(RunExists):
        grpo.train(opts)
    assert (out / "steps.jsonl").read_text() == crashed  # untouched by the refused run

    opts.resume = True
    result = grpo.train(opts)
    assert fake_trl.made[-1].resumed_from == str(out / "checkpoint-4")
    assert steps_in(out / "steps.jsonl") == list(range(1, 9))  # 1-4 kept, 5-8 trained again, each once
    assert result["run"]["resumed_from_step"] == 4
