"""`attd run --resume`: a stopped run finishes with the weights of a run never stopped."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import attd_core
from attd_core import (
    CheckpointError,
    ConfigError,
    NoOptions,
    TaskSpec,
    hookimpl,
    resolve_run_config,
)
from attd_core.runtime import evaluator, trainer
from attd_core.runtime.resume import TrainingPosition, TrainingState
from attd_core.runtime.run import run_experiment
from attd_core.runtime.stopped_run import resume_config
from attd_core.testing import ParityPlugin, ParityTask, new_plugin_manager

SETTINGS = [
    "model.backbone.d_model=8",
    "model.backbone.n_layers=1",
    "model.backbone.d_state=4",
    "model.backbone.dropout=0.2",  # dropout draws from the global RNG: resume must restore it
    "model.adapter.rank=1",
    "train.max_steps=11",  # 2 batches an epoch: the run crosses five epoch boundaries
    "train.checkpoint_every=3",
    "train.log_every=1",
    "eval.limit=8",
    "eval.tta=[fixed:1]",
]


class Stop(Exception):
    """Stands in for a kill."""


class MeasuredParity(ParityTask):
    """The parity task with lengths, so training batches come from the length grouper."""

    def sequence_length(self, example: dict) -> int:
        return len(example["tokens"])


class MeasuredPlugin:
    @hookimpl
    def attd_register(self, register) -> None:
        register(
            TaskSpec(
                name="measured-parity",
                summary="parity, with lengths",
                factory=f"{__name__}:MeasuredParity",
                config=NoOptions,
                run_defaults={"train.batch_size": 16},
            )
        )


@pytest.fixture
def manager() -> attd_core.PluginManager:
    return new_plugin_manager(parity=ParityPlugin(), measured=MeasuredPlugin())


def run(manager, out: Path, *extra: str, task: str = "parity") -> dict:
    resolved = resolve_run_config(manager, task=task, overrides=[*SETTINGS, *extra], output_dir=out)
    return run_experiment(resolved, manager)


def stop_after(monkeypatch, steps: int) -> None:
    """Make training raise `Stop` in step `steps + 1`, after its optimiser step, before
    its bookkeeping (the schedule's next factor is asked for then)."""
    factor = trainer.lr_factor

    def limited(step: int, total: int, warmup: int) -> float:
        if step == steps + 1:
            raise Stop
        return factor(step, total, warmup)

    monkeypatch.setattr(trainer, "lr_factor", limited)


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "checkpoint" / "model.safetensors"))


def train_records(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["event"] == "train"]


def validation_records(run_dir: Path) -> list[dict]:
    """The `val` records without their times, which differ from run to run."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    timings = ("seconds", "validation_seconds")
    return [
        {key: value for key, value in record.items() if key not in timings}
        for record in map(json.loads, lines)
        if record["event"] == "val"
    ]


@pytest.fixture
def reference(manager, tmp_path) -> Path:
    run(manager, tmp_path / "reference")
    return tmp_path / "reference"


def test_a_length_grouped_run_resumes_to_the_same_weights(manager, tmp_path, monkeypatch):
    reference = tmp_path / "reference"
    run(manager, reference, task="measured-parity")
    out = tmp_path / "stopped"
    stop_after(monkeypatch, 7)
    with pytest.raises(Stop):
        run(manager, out, task="measured-parity")
    monkeypatch.undo()
    run_experiment(resume_config(out, manager), manager, resume=True)
    assert_same_run(out, reference)


def assert_same_run(resumed: Path, reference: Path) -> None:
    expected, got = weights(reference), weights(resumed)
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key
    assert train_records(resumed) == train_records(reference)
    assert validation_records(resumed) == validation_records(reference)
    summary = json.loads((resumed / "summary.json").read_text())
    wanted = json.loads((reference / "summary.json").read_text())
    for tta in wanted["eval"]:
        assert summary["eval"][tta]["metrics"] == wanted["eval"][tta]["metrics"]


@pytest.mark.parametrize("stopped_at", [7, 2, 6])  # mid-epoch, before any checkpoint, at one
def test_a_stopped_run_resumes_to_the_same_weights(
    manager, tmp_path, monkeypatch, reference, stopped_at
):
    out = tmp_path / "stopped"
    stop_after(monkeypatch, stopped_at)
    with pytest.raises(Stop):
        run(manager, out)
    assert not (out / "summary.json").exists()
    monkeypatch.undo()
    run_experiment(resume_config(out, manager), manager, resume=True)
    assert_same_run(out, reference)


def test_a_run_with_an_ssm_lr_and_validation_every_2_steps_resumes_to_the_same_run(
    manager, tmp_path, monkeypatch
):
    extra = ["train.ssm_lr=0.01", "train.eval_every=2"]
    reference = tmp_path / "reference"
    run(manager, reference, *extra)
    assert [r["step"] for r in validation_records(reference)] == [2, 4, 6, 8, 10, 11]
    out = tmp_path / "stopped"
    stop_after(monkeypatch, 7)  # validated at 2, 4 and 6; the checkpoint holds step 6
    with pytest.raises(Stop):
        run(manager, out, *extra)
    monkeypatch.undo()
    metadata = json.loads((out / "checkpoint" / "metadata.json").read_text())
    groups = metadata["training"]["optimizer_groups"]
    assert [group["initial_lr"] for group in groups] == [0.001, 0.001, 0.01]
    trained_for = metadata["training"]["position"]["seconds"]
    summary = run_experiment(resume_config(out, manager), manager, resume=True)
    assert_same_run(out, reference)
    assert summary.train.seconds >= trained_for > 0  # the stopped session's time counts


def test_a_run_stopped_in_evaluation_resumes_without_training(
    manager, tmp_path, monkeypatch, reference
):
    out = tmp_path / "stopped"
    original = evaluator.evaluate

    def fail_on_second(*args, **kwargs):
        if kwargs["tta"] != "none":
            raise Stop
        return original(*args, **kwargs)

    monkeypatch.setattr("attd_core.runtime.run.evaluate", fail_on_second)
    with pytest.raises(Stop):
        run(manager, out)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["tta"] for r in records if r["event"] == "eval"] == ["none"]  # kept at the crash
    monkeypatch.undo()
    started = (out / "checkpoint" / "model.safetensors").stat().st_mtime_ns
    summary = run_experiment(resume_config(out, manager), manager, resume=True)
    assert summary.train.steps == 11
    assert_same_run(out, reference)
    assert (out / "checkpoint" / "model.safetensors").stat().st_mtime_ns >= started


def test_a_trained_controller_survives_a_stop_in_evaluation(manager, tmp_path, monkeypatch):
    controller = ["train.regime=controller", "train.controller_steps=2", "eval.tta=[adaptive:5]"]
    reference = tmp_path / "reference"
    run(manager, reference, *controller)
    out = tmp_path / "stopped"
    original = evaluator.evaluate

    def fail_on_second(*args, **kwargs):
        if kwargs["tta"] != "none":
            raise Stop
        return original(*args, **kwargs)

    monkeypatch.setattr("attd_core.runtime.run.evaluate", fail_on_second)
    with pytest.raises(Stop):
        run(manager, out, *controller)
    monkeypatch.undo()
    run_experiment(resume_config(out, manager), manager, resume=True)
    trained = load_file(str(out / "checkpoint" / "strategy.safetensors"))
    expected = load_file(str(reference / "checkpoint" / "strategy.safetensors"))
    assert trained.keys() == expected.keys()
    assert all(torch.equal(trained[key], expected[key]) for key in expected)
    summary = json.loads((out / "summary.json").read_text())
    wanted = json.loads((reference / "summary.json").read_text())
    assert summary["eval"]["adaptive:5"]["metrics"] == wanted["eval"]["adaptive:5"]["metrics"]


def test_the_cli_resumes_and_refuses_other_options(manager, tmp_path, monkeypatch, reference):
    out = tmp_path / "stopped"
    stop_after(monkeypatch, 4)
    with pytest.raises(Stop):
        run(manager, out)
    monkeypatch.undo()
    app = pytest.importorskip("attd_cli.app").app  # attd-core's own tests lack it
    CliRunner = pytest.importorskip("typer.testing").CliRunner  # noqa: N806 (a class)
    result = CliRunner().invoke(app, ["run", "--resume", str(out), "--seed", "2"], obj=manager)
    assert result.exit_code == 2 and "give it no other options" in result.stderr
    result = CliRunner().invoke(app, ["run", "--resume", str(out)], obj=manager)
    assert result.exit_code == 0, result.output
    assert "resume" in result.stdout
    assert_same_run(out, reference)
    result = CliRunner().invoke(app, ["run", "--resume", str(out)], obj=manager)
    assert result.exit_code == 2 and "has finished" in result.stderr


@pytest.fixture
def stopped(manager, tmp_path, monkeypatch) -> Path:
    out = tmp_path / "stopped"
    stop_after(monkeypatch, 7)
    with pytest.raises(Stop):
        run(manager, out)
    monkeypatch.undo()
    return out


def test_a_truncated_training_state_is_refused(manager, stopped):
    path = stopped / "checkpoint" / "optimizer.safetensors"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match="optimizer.safetensors: truncated or modified"):
        run_experiment(resume_config(stopped, manager), manager, resume=True)


def test_pickled_weights_are_refused(manager, stopped):
    path = stopped / "checkpoint" / "model.safetensors"
    torch.save({"weights": torch.zeros(2)}, path)
    metadata_path = stopped / "checkpoint" / "metadata.json"
    metadata = json.loads(metadata_path.read_text())
    metadata["weights_bytes"] = path.stat().st_size
    metadata_path.write_text(json.dumps(metadata))
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        run_experiment(resume_config(stopped, manager), manager, resume=True)


def test_a_changed_config_is_refused(manager, stopped):
    config = stopped / "config.yaml"
    config.write_text(config.read_text().replace("lr: 0.001", "lr: 0.002"))
    with pytest.raises(CheckpointError, match="config differs"):
        run_experiment(resume_config(stopped, manager), manager, resume=True)


def test_resume_needs_a_run_folder(manager, tmp_path):
    with pytest.raises(ConfigError, match="has no config.yaml"):
        resume_config(tmp_path, manager)


def _stepped_training() -> tuple[torch.nn.Module, torch.optim.Optimizer, Any, TrainingState]:
    """A linear model after one AdamW step, and its captured training state."""
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    schedule.step()
    position = TrainingPosition(step=1, epoch=1, batches=1)
    state = TrainingState.capture(position, optimizer, schedule, torch.Generator().get_state())
    return model, optimizer, schedule, state


def _global_rng() -> tuple[Any, ...]:
    return torch.get_rng_state(), random.getstate(), np.random.get_state()[1].tolist()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (
            lambda state: setattr(state, "torch_rng", torch.full_like(state.torch_rng, 255)),
            "rng.safetensors: torch: not a state the generator takes",
        ),
        (
            lambda state: setattr(state, "epoch_generator", state.epoch_generator[:100]),
            "rng.safetensors: epoch_generator: not a state the generator takes",
        ),
        (
            lambda state: state.optimizer["state"][0].update(exp_avg=torch.zeros(5)),
            "optimizer.safetensors: state.0.exp_avg has shape (5,), its parameter (2, 3)",
        ),
        (
            lambda state: state.optimizer["state"].update({9: {"step": torch.tensor(1.0)}}),
            "optimizer.safetensors: state.9 is of no parameter",
        ),
        (
            lambda state: state.optimizer["param_groups"][0].update(params=[0, 0]),
            "training.optimizer_groups.0.params: parameter 0 is in two groups",
        ),
    ],
    ids=["torch rng", "epoch generator", "moment shape", "stray state", "shared parameter"],
)
def test_a_state_that_does_not_fit_changes_nothing(damage, message):
    model, optimizer, schedule, state = _stepped_training()
    damage(state)
    before = (_global_rng(), optimizer.state_dict(), schedule.state_dict())
    generator = torch.Generator().manual_seed(5)
    with pytest.raises(CheckpointError, match=re.escape(message)):
        state.restore(optimizer, schedule, generator, total=10, epoch_length=4)
    rng, optimizer_state, schedule_state = before
    now = _global_rng()
    assert torch.equal(now[0], rng[0]) and now[1:] == rng[1:]
    assert schedule.state_dict() == schedule_state
    assert optimizer.state_dict()["state"][0]["step"] == optimizer_state["state"][0]["step"]
    assert torch.equal(generator.get_state(), torch.Generator().manual_seed(5).get_state())


@pytest.mark.parametrize(
    ("rng", "optimizer", "message"),
    [
        ({"epoch_generator": 0}, None, "rng.safetensors: holds no 'torch' state"),
        (None, {"state.x.exp_avg": torch.zeros(1)}, "key 'state.x.exp_avg' is not state."),
    ],
    ids=["no torch state", "bad optimizer key"],
)
def test_malformed_tensor_files_are_named(rng, optimizer, message):
    _, _, _, state = _stepped_training()
    record, tensors = state.to_files()
    record = json.loads(json.dumps(record))
    if rng is not None:
        tensors["rng"] = {key: tensors["rng"][key] for key in rng}
    if optimizer is not None:
        tensors["optimizer"] = optimizer
    with pytest.raises(CheckpointError, match=re.escape(message)):
        TrainingState.from_files(record, tensors)


def test_a_training_state_from_before_training_seconds_were_recorded_loads():
    _, _, _, state = _stepped_training()
    record, tensors = state.to_files()
    record = json.loads(json.dumps(record))
    del record["position"]["seconds"]
    assert TrainingState.from_files(record, tensors).position.seconds == 0.0


def test_a_malformed_training_record_is_named():
    _, _, _, state = _stepped_training()
    record, tensors = state.to_files()
    record = json.loads(json.dumps(record))
    record["position"]["epoch"] = None
    with pytest.raises(CheckpointError, match=r"training\.position\.epoch: Input should be"):
        TrainingState.from_files(record, tensors)


# -- one writer, and what killed writers left ---------------------------------------------


def test_a_run_folder_another_process_writes_is_not_resumed(manager, stopped):
    before = sorted(path.name for path in stopped.iterdir())
    resolved = resume_config(stopped, manager)
    with attd_core.lock_folder(stopped):  # a live `--resume` of the same folder
        with pytest.raises(ConfigError, match=f"run folder {str(stopped)!r} is in use"):
            run_experiment(resolved, manager, resume=True)
    assert sorted(path.name for path in stopped.iterdir()) == before
    run_experiment(resolved, manager, resume=True)  # once it is gone, the folder is free
    assert (stopped / "summary.json").is_file()


def test_a_run_finished_while_the_resume_started_is_not_resumed_again(manager, stopped):
    resolved = resume_config(stopped, manager)
    (stopped / "summary.json").write_text("{}")  # another --resume finished it meanwhile
    with pytest.raises(ConfigError, match="has finished"):
        run_experiment(resolved, manager, resume=True)
    assert (stopped / "summary.json").read_text() == "{}"


def test_a_resume_removes_what_killed_writers_left(manager, stopped):
    leftovers = [".checkpoint-k3x9_a", ".checkpoint-old-p0q1", ".metrics.jsonl.tmp-4242"]
    (stopped / leftovers[0]).mkdir()
    (stopped / leftovers[0] / "model.safetensors").write_bytes(b"\x08\x00")
    (stopped / leftovers[1] / "checkpoint").mkdir(parents=True)
    (stopped / leftovers[2]).write_text('{"event": "tr')
    (stopped / "notes.txt").write_text("mine")  # not attd's: kept
    run_experiment(resume_config(stopped, manager), manager, resume=True)
    names = {path.name for path in stopped.iterdir()}
    assert not names & set(leftovers)
    assert names == {"config.yaml", "metrics.jsonl", "checkpoint", "summary.json", "notes.txt"}


def test_a_resume_after_training_keeps_the_training_time(manager, tmp_path, monkeypatch):
    out = tmp_path / "stopped"
    original = evaluator.evaluate

    def fail_on_second(*args, **kwargs):
        if kwargs["tta"] != "none":
            raise Stop
        return original(*args, **kwargs)

    monkeypatch.setattr("attd_core.runtime.run.evaluate", fail_on_second)
    with pytest.raises(Stop):
        run(manager, out)
    monkeypatch.undo()
    recorded = json.loads((out / "checkpoint" / "metadata.json").read_text())["seconds"]
    assert recorded > 0
    summary = run_experiment(resume_config(out, manager), manager, resume=True)
    assert summary.train.seconds == recorded
