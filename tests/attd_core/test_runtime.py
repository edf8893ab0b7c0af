"""The runtime end to end on a tiny fake task and backbone, plus its parts on their own.

The fake task, backbone and adapter below satisfy the contracts with a few lines each;
the `none`/`fixed` strategies and the `entropy-kl` objective are attd-core's real ones.
"""

from __future__ import annotations

import io
import json
import os
import random
import stat
from dataclasses import replace
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field
from rich.console import Console
from torch import Tensor, nn

import attd_core
from attd_core import (
    AdapterSlot,
    AdapterSpec,
    BackboneSpec,
    CheckpointError,
    ConfigError,
    InputSpec,
    NoOptions,
    PluginError,
    TaskSpec,
    hookimpl,
    parse_component,
)
from attd_core.model import AttdModel, BoundModel
from attd_core.runtime import checkpoint
from attd_core.runtime.checkpoint import load_checkpoint, save_checkpoint
from attd_core.runtime.config import resolve_run_config
from attd_core.runtime.evaluator import evaluate
from attd_core.runtime.finished_run import load_run
from attd_core.runtime.metrics import MetricsWriter
from attd_core.runtime.run import run_experiment
from attd_core.runtime.summary import RunSummary
from attd_core.runtime.trainer import lr_factor
from attd_core.tasks import ClassificationTask

# -- fakes -------------------------------------------------------------------------------


class FirstTokenOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    size: int = Field(64, ge=1)
    length: int = Field(8, ge=1)


class FirstTokenTask(ClassificationTask):
    """Two classes: is the first token a 1? Vocabulary 4 (0 pads)."""

    input_spec = InputSpec(vocab_size=4, pad_id=0)
    num_classes = 2

    def __init__(self, options: FirstTokenOptions) -> None:
        self.options = options

    def load_split(self, split: str) -> list[dict[str, Any]]:
        rng = random.Random(split)
        rows = [[rng.randint(1, 3) for _ in range(self.options.length)] for _ in range(64)]
        return [{"tokens": row, "label": int(row[0] == 1)} for row in rows[: self.options.size]]

    def preprocess(self, raw_batch: list[dict[str, Any]]) -> attd_core.Batch:
        return self.collate_tokens(
            [example["tokens"] for example in raw_batch],
            [example["label"] for example in raw_batch],
        )


class TinyOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    d_model: int = Field(8, ge=1)


class TinyBackbone(nn.Module):
    """Every position sees itself and the first token; one adapter slot shifts the output."""

    def __init__(self, options: TinyOptions) -> None:
        super().__init__()
        self.d_model = options.d_model
        self.mix = nn.Linear(options.d_model, options.d_model)
        self.shift = nn.Parameter(torch.zeros(options.d_model))

    def adapter_slots(self) -> dict[str, AdapterSlot]:
        return {"shift": AdapterSlot("shift", self.shift)}

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        adapter_state: dict[str, Tensor] | None = None,
    ) -> Tensor:
        shift = (
            self.shift if adapter_state is None else self.shift + adapter_state["shift"][:, None]
        )
        return x + torch.tanh(self.mix(x + x[:, :1])) + shift


class ShiftAdapter:
    """A per-sample additive shift, capped to [-1, 1]."""

    per_sample = True

    def __init__(self, options: BaseModel) -> None:
        self.options = options

    def init_state(
        self, backbone: TinyBackbone, batch_size: int | None = None, *, generator: Any = None
    ) -> dict[str, Tensor]:
        base = backbone.adapter_slots()["shift"].base
        shape = base.shape if batch_size is None else (batch_size, *base.shape)
        return {"shift": torch.zeros(shape)}

    def deltas(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        return state

    def project(
        self, state: dict[str, Tensor], slots: Any
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        capped = state["shift"].clamp(-1.0, 1.0)
        return {"shift": capped}, {"capped": (capped != state["shift"]).sum()}

    def num_parameters(self, state: dict[str, Tensor]) -> int:
        return state["shift"].shape[-1]  # one sample's shift


class FakePlugin:
    @hookimpl
    def attd_register(self, register: Any) -> None:
        register(
            TaskSpec(
                name="first-token",
                summary="is the first token a 1?",
                factory=f"{__name__}:FirstTokenTask",
                config=FirstTokenOptions,
                run_defaults={"train.batch_size": 16, "train.lr": 0.05, "train.log_every": 2},
            )
        )
        register(
            BackboneSpec(
                name="tiny", summary="tiny", factory=f"{__name__}:TinyBackbone", config=TinyOptions
            )
        )
        register(AdapterSpec(name="shift", summary="shift", factory=f"{__name__}:ShiftAdapter"))


@pytest.fixture
def manager(attd_pm: attd_core.PluginManager) -> attd_core.PluginManager:
    attd_pm.add_plugin(FakePlugin(), name="fake")
    return attd_pm


def quiet() -> Console:
    return Console(file=io.StringIO(), width=100)


def run_fake(
    manager: attd_core.PluginManager,
    output_dir: Path | None,
    console: Console | None = None,
    **kwargs: Any,
) -> RunSummary:
    kwargs.setdefault("tta", ["fixed:2,lr=0.1"])
    resolved = resolve_run_config(
        manager,
        task="first-token",
        backbone="tiny",
        overrides=["model.adapter=shift", *kwargs.pop("overrides", [])],
        output_dir=output_dir,
        **kwargs,
    )
    return run_experiment(resolved, manager, console=console or quiet())


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    left, right = a.state_dict(), b.state_dict()
    return left.keys() == right.keys() and all(torch.equal(left[k], right[k]) for k in left)


def tiny_model(d_model: int = 8) -> AttdModel:
    task = FirstTokenTask(FirstTokenOptions())
    backbone = TinyBackbone(TinyOptions(d_model=d_model))
    return AttdModel(task, backbone)


# -- run_experiment ----------------------------------------------------------------------


def test_a_run_writes_config_metrics_checkpoint_and_summary(manager, tmp_path):
    out = tmp_path / "run"
    summary = run_fake(manager, out)

    assert {path.name for path in out.iterdir()} == {
        "config.yaml",
        "metrics.jsonl",
        "checkpoint",
        "summary.json",
    }
    written = json.loads((out / "summary.json").read_text())
    assert RunSummary.read(out) == summary
    assert summary.task == "first-token"
    assert list(summary.eval) == ["none", "fixed:2,lr=0.1"]
    assert set(written) == {
        "task",
        "shift",
        "eval",
        "backbone",
        "adapter",
        "scan_backend",
        "train",
        "seed",
        "device",
        "output_dir",
    }
    assert set(written["train"]) == {"regime", "steps", "epochs", "loss", "seconds"}
    for entry in written["eval"].values():
        assert set(entry) == {
            "accuracy",
            "metrics",
            "mean_k",
            "p50_k",
            "p90_k",
            "seconds",
            "seconds_per_sample",
            "n",
            "uses_labels",
            "adapter_parameters",
            "split",
            "correct",
            "paired",
        }
        assert 0.0 <= entry["accuracy"] <= 1.0 and entry["seconds"] > 0 and entry["n"] == 64
        assert entry["uses_labels"] is False
        assert set(entry["metrics"]) == {"accuracy", "loss"}
        assert entry["metrics"]["accuracy"] == entry["accuracy"]
    assert summary.eval["none"].mean_k == 0.0
    assert summary.eval["none"].adapter_parameters is None
    fixed = summary.eval["fixed:2,lr=0.1"]
    assert fixed.mean_k == fixed.p50_k == fixed.p90_k == 2.0
    assert fixed.adapter_parameters == 8  # one shift per channel of d_model 8
    assert summary.train.steps == 4  # 64 examples / batch 16, one epoch

    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["task"] == {"name": "first-token", "size": 64, "length": 8}
    assert config["eval"]["tta"] == ["fixed:2,lr=0.1"]

    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [record for record in records if record["event"] == "train"]
    assert [record["step"] for record in train] == [2, 4]
    assert set(train[0]) == {"event", "step", "epoch", "loss", "lr"}
    evals = {record["tta"]: record for record in records if record["event"] == "eval"}
    assert list(evals) == ["none", "fixed:2,lr=0.1"]
    assert evals["none"]["split"] == "test" and evals["none"]["n"] == 64
    assert "capped" in evals["fixed:2,lr=0.1"]  # guard counters reach the metrics


def test_the_checkpoint_holds_the_trained_model(manager, tmp_path):
    out = tmp_path / "run"
    run_fake(manager, out, tta=[])
    metadata = load_checkpoint(out, tiny_model())
    assert metadata["task"] == "first-token" and metadata["step"] == 4
    assert metadata["config"] == yaml.safe_load((out / "config.yaml").read_text())


@pytest.mark.parametrize("recorded", [True, False], ids=["new run", "older run"])
def test_a_run_evaluates_again_with_the_pooling_it_trained_with(manager, tmp_path, recorded):
    """Before the pooling plugins, `mean` meant the mean over real tokens (`masked-mean`
    now): a run whose checkpoint does not record its pooling is read that way."""
    out = tmp_path / "run"
    run_fake(manager, out, tta=[], overrides=["model.pooling=mean"])
    metadata_file = out / "checkpoint" / "metadata.json"
    metadata = json.loads(metadata_file.read_text())
    assert metadata["pooling"] == "mean"
    if not recorded:
        del metadata["pooling"]
        metadata_file.write_text(json.dumps(metadata))
    resolved, parts, _ = load_run(out, manager, tta=["none"])
    expected = "mean" if recorded else "masked-mean"
    assert resolved.config.model.pooling == parts.model.pooling_name == expected


def test_evaluation_never_changes_base_weights(manager):
    task = FirstTokenTask(FirstTokenOptions(size=32))
    model = tiny_model()
    before = {key: value.clone() for key, value in model.state_dict().items()}
    bound = BoundModel(model, {"shift": ShiftAdapter(NoOptions())}, seed=0)
    strategy = parse_component("fixed:5,lr=10", "strategy", manager).create()
    objective = manager.create("objective", "entropy-kl")
    result = evaluate(
        bound,
        strategy,
        objective,
        task.load_split("test"),
        tta="fixed:5,lr=10",
        split="test",
        batch_size=8,
        device=torch.device("cpu"),
    )
    assert result.n == 32 and result.mean_k == 5.0
    assert result.stats["capped"] > 0  # lr=10 pushed the shift into its cap
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())
    assert all(param.requires_grad for param in model.parameters())


def test_evaluation_keeps_each_examples_outcome_in_evaluation_order(manager):
    task = FirstTokenTask(FirstTokenOptions(size=32))
    bound = BoundModel(tiny_model(), {"shift": ShiftAdapter(NoOptions())}, seed=0)
    objective = manager.create("objective", "entropy-kl")
    results = [
        evaluate(
            bound,
            parse_component(spec, "strategy", manager).create(),
            objective,
            task.load_split("test"),
            tta=spec,
            split="test",
            batch_size=8,
            device=torch.device("cpu"),
        )
        for spec in ("none", "none")
    ]
    first = results[0]
    assert first.correct is not None and len(first.correct) == first.n == 32
    assert sum(first.correct) / first.n == first.metrics["accuracy"]
    assert results[1].correct == first.correct  # the same examples, in the same order
    assert first.summary().correct == "".join("1" if c else "0" for c in first.correct)
    assert "correct" not in first.record()


def test_an_example_correct_of_the_wrong_shape_is_one_error_naming_it(manager):
    class TokenJudge(FirstTokenTask):
        def example_correct(self, output, batch):
            return torch.ones(len(batch), 2, dtype=torch.bool)  # per token, not per example

    model = tiny_model()
    model.task = TokenJudge(FirstTokenOptions(size=8))
    bound = BoundModel(model, {"shift": ShiftAdapter(NoOptions())}, seed=0)
    with pytest.raises(PluginError, match=r"TokenJudge.example_correct returned shape \(8, 2\)"):
        evaluate(
            bound,
            parse_component("none", "strategy", manager).create(),
            manager.create("objective", "entropy-kl"),
            model.task.load_split("test"),
            tta="none",
            split="test",
            batch_size=8,
            device=torch.device("cpu"),
        )


class Seeing:
    """A strategy that adapts nothing and keeps every batch it is handed."""

    def __init__(self, uses_labels: bool) -> None:
        self.uses_labels = uses_labels
        self.seen: list[attd_core.Batch] = []

    def adapt(self, model, batch, objective):
        self.seen.append(batch)
        return attd_core.Adaptation(state=None, steps=torch.zeros(len(batch), dtype=torch.long))


def evaluate_seeing(manager, task, strategy):
    model = tiny_model()
    model.task = task
    return evaluate(
        BoundModel(model, {"shift": ShiftAdapter(NoOptions())}, seed=0),
        strategy,
        manager.create("objective", "entropy-kl"),
        task.load_split("test"),
        tta="seeing",
        split="test",
        batch_size=8,
        device=torch.device("cpu"),
    )


def test_only_a_strategy_that_declares_uses_labels_is_handed_labels(manager):
    task = FirstTokenTask(FirstTokenOptions(size=16))
    label_free, oracle = Seeing(uses_labels=False), Seeing(uses_labels=True)
    evaluate_seeing(manager, task, label_free)
    result = evaluate_seeing(manager, task, oracle)
    assert label_free.seen and all(batch.labels is None for batch in label_free.seen)
    assert all(batch.labels is not None for batch in oracle.seen) and result.uses_labels


def test_a_strategy_adapts_on_the_tasks_context_view_and_is_scored_on_the_other(manager):
    class HalfSeen(FirstTokenTask):
        """Adapt on the first half of each input; score (and judge) the whole batch."""

        def __init__(self, options: FirstTokenOptions) -> None:
            super().__init__(options)
            self.scored: list[attd_core.Batch] = []

        def evaluation_views(self, batch):
            half = batch.inputs.shape[1] // 2
            context = replace(batch, inputs=batch.inputs[:, :half], mask=batch.mask[:, :half])
            return context, batch

        def example_correct(self, output, batch):
            self.scored.append(batch)
            return super().example_correct(output, batch)

    task = HalfSeen(FirstTokenOptions(size=16))
    strategy = Seeing(uses_labels=False)
    result = evaluate_seeing(manager, task, strategy)
    assert [batch.inputs.shape[1] for batch in strategy.seen] == [4, 4]
    assert task.scored and {batch.inputs.shape[1] for batch in task.scored} == {8}
    assert all(batch.labels is not None for batch in task.scored) and result.n == 16


def test_views_that_drop_samples_are_one_error_naming_the_task(manager):
    class Dropping(FirstTokenTask):
        def evaluation_views(self, batch):
            return batch.select(torch.tensor([0])), batch

    with pytest.raises(PluginError, match=r"Dropping.evaluation_views returned views of 1 and 8"):
        evaluate_seeing(manager, Dropping(FirstTokenOptions(size=8)), Seeing(uses_labels=False))


def test_a_run_compares_each_strategy_with_none_on_the_same_examples(manager, tmp_path):
    summary = run_fake(manager, tmp_path / "run", seed=3)
    none, fixed = summary.eval["none"], summary.eval["fixed:2,lr=0.1"]
    assert none.paired is None and fixed.paired is not None
    assert fixed.paired.n == fixed.n and fixed.paired.seed == 3
    assert fixed.paired.difference == pytest.approx(fixed.accuracy - none.accuracy)
    assert fixed.paired.ci_low <= fixed.paired.difference <= fixed.paired.ci_high
    assert RunSummary.read(tmp_path / "run").eval["fixed:2,lr=0.1"].paired == fixed.paired


def test_runs_with_the_same_seed_agree(manager, tmp_path):
    first = run_fake(manager, tmp_path / "a", seed=7)
    second = run_fake(manager, tmp_path / "b", seed=7)
    for key in ("none", "fixed:2,lr=0.1"):
        assert first.eval[key].accuracy == second.eval[key].accuracy
    a, b = tiny_model(), tiny_model()
    load_checkpoint(tmp_path / "a", a)
    load_checkpoint(tmp_path / "b", b)
    assert same_weights(a, b)


def test_max_steps_overrides_epochs_and_limit_caps_evaluation(manager, tmp_path):
    summary = run_fake(
        manager, tmp_path / "run", overrides=["train.max_steps=6", "eval.limit=10"], tta=[]
    )
    assert summary.train.steps == 6 and summary.train.epochs == 2
    assert list(summary.eval) == ["none"] and summary.eval["none"].n == 10


def test_a_folder_that_holds_a_run_is_refused(manager, tmp_path):
    out = tmp_path / "run"
    run_fake(manager, out, tta=[])
    with pytest.raises(ConfigError, match=r"already holds a run \(config.yaml\)"):
        run_fake(manager, out, tta=[])
    assert len(list(out.iterdir())) == 4


def test_the_default_folder_is_runs_task_timestamp(manager, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = run_fake(manager, None, tta=[])
    second = run_fake(manager, None, tta=[])
    assert first.output_dir.startswith("runs/first-token-")
    assert first.output_dir != second.output_dir
    assert (tmp_path / second.output_dir / "summary.json").is_file()


def test_the_progress_bar_is_shown(manager, tmp_path):
    console = Console(file=io.StringIO(), width=100)
    run_fake(manager, tmp_path / "run", console=console)
    shown = console.file.getvalue()
    assert "train" in shown and "eval none" in shown and "4/4" in shown


# -- parts -------------------------------------------------------------------------------


def test_lr_warms_up_linearly_then_decays_by_cosine():
    factors = [lr_factor(step, total=10, warmup=4) for step in range(10)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert factors[4] == 1.0
    assert all(a >= b for a, b in pairwise(factors[4:]))
    assert 0.0 < factors[-1] < 0.1
    assert lr_factor(0, total=3, warmup=0) == 1.0


def test_metrics_are_flushed_record_by_record(tmp_path):
    path = tmp_path / "metrics.jsonl"
    with MetricsWriter(path) as writer:
        writer.write({"event": "train", "step": 1, "loss": 0.5})
        assert json.loads(path.read_text()) == {"event": "train", "step": 1, "loss": 0.5}
        writer.write({"event": "train", "step": 2, "loss": float("nan")})
        assert json.loads(path.read_text().splitlines()[1])["loss"] is None
    with MetricsWriter(path) as writer:  # appends
        writer.write({"event": "eval"})
    assert len(path.read_text().splitlines()) == 3


def test_a_checkpoint_round_trips(tmp_path):
    model, other = tiny_model(), tiny_model()
    save_checkpoint(tmp_path, model, {"step": 3, "task": "first-token"})
    metadata = load_checkpoint(tmp_path / "checkpoint", other)
    assert metadata["step"] == 3 and metadata["attd_core"] == attd_core.__version__
    assert metadata["torch"] == torch.__version__
    assert same_weights(model, other)


def test_checkpoint_metadata_is_strict_json_with_a_diverged_loss_as_null(tmp_path):
    record = {"step": 1, "loss": float("nan"), "note": "kept"}
    target = save_checkpoint(tmp_path, tiny_model(), record)

    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} is not JSON")

    written = json.loads((target / "metadata.json").read_text(), parse_constant=refuse)
    assert written["loss"] is None and written["note"] == "kept"
    assert load_checkpoint(target, tiny_model())["loss"] is None


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"step": -1}, "step: Input should be greater than or equal to 0"),
        ({"step": 1, "epochs": "2"}, "epochs: Input should be a valid integer"),
        ({"step": 1, "pooling": "mean", "config": {}}, "config.task: Field required"),
    ],
)
def test_a_record_that_would_not_read_back_is_not_written(tmp_path, record, message):
    with pytest.raises(CheckpointError, match=f"not saving the checkpoint: .*{message}"):
        save_checkpoint(tmp_path, tiny_model(), record)
    assert list(tmp_path.iterdir()) == []


def test_a_checkpoint_gets_the_permissions_of_ordinary_files(tmp_path):
    previous = os.umask(0o022)
    try:
        target = save_checkpoint(tmp_path, tiny_model(), {"step": 1})
    finally:
        os.umask(previous)
    assert stat.S_IMODE(target.stat().st_mode) == 0o755
    for name in ("model.safetensors", "metadata.json"):
        assert stat.S_IMODE((target / name).stat().st_mode) == 0o644, name


def test_a_failed_save_leaves_no_checkpoint(tmp_path, monkeypatch):
    def half_write(tensors: Any, filename: str, metadata: Any = None) -> None:
        Path(filename).write_bytes(b"\x08\x00\x00")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint, "save_file", half_write)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path, tiny_model(), {"step": 1})
    assert list(tmp_path.iterdir()) == []


def test_a_crash_mid_save_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    """A killed process runs no cleanup: the staging folder stays, but under a hidden name."""

    def killed(*args: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint.os, "replace", killed)
    monkeypatch.setattr(checkpoint.shutil, "rmtree", lambda *args, **kwargs: None)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, tiny_model(), {"step": 1})
    assert [path.name.startswith(".checkpoint-") for path in tmp_path.iterdir()] == [True]
    with pytest.raises(CheckpointError, match="metadata.json: missing"):
        load_checkpoint(tmp_path, tiny_model())


def test_saving_again_replaces_the_old_checkpoint(tmp_path):
    save_checkpoint(tmp_path, tiny_model(), {"step": 1})
    save_checkpoint(tmp_path, tiny_model(), {"step": 2})
    assert [path.name for path in tmp_path.iterdir()] == ["checkpoint"]
    assert load_checkpoint(tmp_path, tiny_model())["step"] == 2


def test_a_truncated_weights_file_is_refused(tmp_path):
    target = save_checkpoint(tmp_path, tiny_model(), {"step": 1})
    weights = target / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match=r"model\.safetensors: truncated"):
        load_checkpoint(target, tiny_model())
    metadata = json.loads((target / "metadata.json").read_text())
    metadata["weights_bytes"] = weights.stat().st_size  # the size agrees: safetensors notices
    (target / "metadata.json").write_text(json.dumps(metadata))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: not a readable"):
        load_checkpoint(target, tiny_model())


@pytest.mark.parametrize("damage", ["no weights", "no metadata", "bad metadata"])
def test_missing_or_damaged_files_are_named(tmp_path, damage):
    target = save_checkpoint(tmp_path, tiny_model(), {"step": 1})
    name = "model.safetensors" if damage == "no weights" else "metadata.json"
    if damage == "bad metadata":
        (target / name).write_text("{not json")
    else:
        (target / name).unlink()
    with pytest.raises(CheckpointError, match=name):
        load_checkpoint(target, tiny_model())


def test_mismatched_shapes_and_keys_are_named(tmp_path):
    save_checkpoint(tmp_path, tiny_model(d_model=8), {"step": 1})
    with pytest.raises(
        CheckpointError, match=r"key 'embed.weight' has shape \(4, 8\) in the file but \(4, 4\)"
    ):
        load_checkpoint(tmp_path, tiny_model(d_model=4))
    bigger = tiny_model()
    bigger.extra = nn.Linear(2, 2)
    with pytest.raises(CheckpointError, match="no tensor for model key 'extra.bias'"):
        load_checkpoint(tmp_path, bigger)
    smaller = tiny_model()
    del smaller.head
    smaller.head = nn.Identity()
    with pytest.raises(CheckpointError, match="key 'head.bias' .* is not in the model"):
        load_checkpoint(tmp_path, smaller)
