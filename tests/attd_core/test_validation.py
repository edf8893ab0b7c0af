"""Validation while training: the records learning curves are drawn from."""

from __future__ import annotations

import io
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from rich.console import Console
from safetensors.torch import load_file

import attd_core
from attd_core import ConfigError, ValidationRecord, resolve_run_config
from attd_core.runtime import trainer
from attd_core.runtime.run import run_experiment
from attd_core.testing import ParityPlugin, new_plugin_manager

TINY = [
    "model.backbone.d_model=8",
    "model.backbone.n_layers=1",
    "model.backbone.d_state=4",
    "model.backbone.dropout=0.2",  # a model left in eval mode would train differently
    "model.adapter.rank=1",
    "train.log_every=1",
    "eval.limit=8",
]
"""Parity: 32 training examples in batches of 16, so 2 steps an epoch."""


@pytest.fixture
def manager() -> attd_core.PluginManager:
    return new_plugin_manager(parity=ParityPlugin())


def run(manager, out: Path, *extra: str, console: Console | None = None):
    resolved = resolve_run_config(manager, task="parity", overrides=[*TINY, *extra], output_dir=out)
    return run_experiment(resolved, manager, console=console or Console(file=io.StringIO()))


def records(run_dir: Path, event: str) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [record for record in map(json.loads, lines) if record["event"] == event]


# -- when and what --------------------------------------------------------------------------


def test_training_validates_at_every_epoch_end_and_at_the_end(manager, tmp_path):
    console = Console(file=io.StringIO(), width=200)
    summary = run(manager, tmp_path / "run", "train.max_steps=5", console=console)
    validations = records(tmp_path / "run", "val")
    assert [(r["step"], r["epoch"]) for r in validations] == [(2, 1), (4, 2), (5, 3)]
    fixed = {"event", "step", "epoch", "split", "n", "seconds", "validation_seconds"}
    assert all(set(r) == fixed | {"accuracy", "loss"} for r in validations)
    assert all(r["split"] == "validation" and r["n"] == 32 for r in validations)
    seconds = [r["seconds"] for r in validations]
    assert seconds == sorted(seconds) and seconds[-1] <= summary.train.seconds
    assert ValidationRecord.read(validations)[0].metrics == {
        key: validations[0][key] for key in ("accuracy", "loss")
    }
    output = console.file.getvalue()
    assert "validation at step 2 (epoch 1): accuracy " in output
    assert "on 32 validation examples" in output


def test_eval_every_validates_every_n_steps_on_at_most_eval_limit_examples(manager, tmp_path):
    extra = ["train.max_steps=7", "train.eval_every=3", "train.eval_limit=5"]
    run(manager, tmp_path / "run", *extra)
    validations = records(tmp_path / "run", "val")
    assert [r["step"] for r in validations] == [3, 6, 7]
    assert {r["n"] for r in validations} == {5}


def test_validation_does_not_change_training(manager, tmp_path):
    run(manager, tmp_path / "with", "train.max_steps=5", "train.eval_every=1")
    run(manager, tmp_path / "without", "train.max_steps=5", "train.eval_split=null")
    assert len(records(tmp_path / "with", "val")) == 5
    assert records(tmp_path / "without", "val") == []
    assert records(tmp_path / "with", "train") == records(tmp_path / "without", "train")
    expected = load_file(str(tmp_path / "without" / "checkpoint" / "model.safetensors"))
    got = load_file(str(tmp_path / "with" / "checkpoint" / "model.safetensors"))
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[key], got[key]) for key in expected)


class FakeClock:
    """`time.perf_counter` advancing one second a call; validation takes 1000."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        self.now += 1.0
        return self.now

    def validate(self, *args, **kwargs) -> dict[str, float]:
        self.now += 1000.0
        return {"accuracy": 0.5}


def test_validation_time_is_not_training_time(manager, tmp_path, monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(trainer, "time", SimpleNamespace(perf_counter=clock.perf_counter))
    monkeypatch.setattr(trainer, "validate", clock.validate)
    summary = run(manager, tmp_path / "run", "train.max_steps=4")
    validations = records(tmp_path / "run", "val")
    assert [r["step"] for r in validations] == [2, 4]
    assert all(r["validation_seconds"] >= 1000 for r in validations)
    assert summary.train.seconds < 1000
    assert validations[-1]["seconds"] < 1000


# -- refused before training --------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            ["train.eval_split=null", "train.eval_every=5"],
            "train.eval_every (5) sets how often to validate, but train.eval_split is null",
        ),
        (["train.eval_every=0"], "train.eval_every"),
        (["train.eval_limit=0"], "train.eval_limit"),
    ],
    ids=["interval without validation", "zero interval", "zero limit"],
)
def test_contradictory_or_bad_validation_settings_are_refused(manager, settings, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve_run_config(manager, task="parity", overrides=settings)


def test_a_validation_split_the_task_lacks_is_refused_before_training(manager, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(ConfigError) as error:
        run(manager, out, "train.eval_split=dev")
    assert str(error.value) == (
        "train.eval_split: task 'parity' has no split 'dev'; splits: train, validation, "
        "test; train.eval_split=null trains without validation"
    )
    assert not out.exists()
