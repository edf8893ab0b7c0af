"""Training regimes: base, controller (frozen backbone) and meta (through the inner loop)."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
import torch
from pydantic import BaseModel, ConfigDict
from safetensors.torch import load_file

import attd_core
from attd_core import ConfigError, InputSpec, TaskSpec, hookimpl
from attd_core.runtime.config import TrainConfig
from attd_core.runtime.finished_run import load_run
from attd_core.runtime.regimes import _controller_loss
from attd_core.runtime.run import build_components
from attd_core.tasks import ClassificationTask

TINY = [
    "model.backbone.d_model=8",
    "model.backbone.n_layers=1",
    "model.backbone.d_state=4",
    "model.adapter={name: delta-ssm, rank: 1, init_scale: 1.0}",  # dropped for another adapter
    "train.max_steps=4",
    "train.batch_size=8",
]


class CountOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CountTask(ClassificationTask):
    """Three classes: how many 1-tokens (0, 1, 2+) a length-6 sequence of 1s and 2s holds."""

    input_spec = InputSpec(vocab_size=3, pad_id=0)
    num_classes = 3

    def __init__(self, options: CountOptions) -> None:
        self.options = options

    def load_split(self, split: str) -> list[dict[str, Any]]:
        rng = random.Random(split)
        rows = [[rng.choice((1, 2, 2, 2)) for _ in range(rng.randint(3, 6))] for _ in range(24)]
        return [{"tokens": row, "label": min(row.count(1), 2)} for row in rows]

    def preprocess(self, raw_batch: list[dict[str, Any]]) -> attd_core.Batch:
        tokens = [example["tokens"] for example in raw_batch]
        return self.collate_tokens(tokens, [example["label"] for example in raw_batch])


class CountPlugin:
    @hookimpl
    def attd_register(self, register: Any) -> None:
        register(
            TaskSpec(
                name="count",
                summary="count the ones",
                factory=f"{__name__}:CountTask",
                config=CountOptions,
            )
        )


@pytest.fixture
def manager(attd_pm: attd_core.PluginManager) -> attd_core.PluginManager:
    attd_pm.add_plugin(CountPlugin(), name="count")
    return attd_pm


def resolve(manager, *overrides: str, tta=(), output_dir=None):
    return attd_core.resolve_run_config(
        manager, task="count", tta=tta, overrides=[*TINY, *overrides], output_dir=output_dir
    )


def test_the_base_regime_rejects_a_training_strategy(manager):
    with pytest.raises(ConfigError, match="train.strategy"):
        resolve(manager, "train.strategy=fixed:1")


def test_the_controller_regime_needs_a_strategy_with_a_controller(manager):
    with pytest.raises(ConfigError, match="use adaptive:K or gate:K"):
        resolve(manager, "train.regime=controller", "train.strategy=fixed:1")
    resolved = resolve(manager, "train.regime=controller")
    assert resolved.config.train.strategy == "adaptive:5"  # the default is filled in


def test_second_order_meta_needs_a_twice_differentiable_scan(manager):
    resolved = resolve(manager, "train.regime=meta", "train.meta_order=second")
    with pytest.raises(ConfigError, match="scan_backend=chunked"):
        build_components(resolved, manager, torch.device("cpu"))


def test_the_controller_loss_trains_the_thresholds(manager):
    resolved = resolve(manager, "train.regime=controller", "train.strategy=adaptive:3")
    parts = build_components(resolved, manager, torch.device("cpu"))
    batch = parts.task.preprocess(parts.task.load_split("train")[:8])
    strategy = parts.training
    strategy.calibrate(parts.bound, [batch], parts.objective)
    loss, mean_k = _controller_loss(
        parts.bound, strategy, parts.objective, batch, TrainConfig(lambda_cost=0.1)
    )
    loss.backward()
    grads = [p.grad for p in strategy.controller.parameters()]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    assert 0 <= mean_k <= 3


def test_the_controller_loss_runs_the_unadapted_forward_once(manager):
    """It hands its reference to the inner loop, which would otherwise run it again."""
    resolved = resolve(manager, "train.regime=controller", "train.strategy=adaptive:2")
    parts = build_components(resolved, manager, torch.device("cpu"))
    batch = parts.task.preprocess(parts.task.load_split("train")[:8])
    parts.training.calibrate(parts.bound, [batch], parts.objective)
    calls = []
    parts.model.register_forward_hook(
        lambda module, args, output: calls.append(None) if args[1] is None else None
    )
    _controller_loss(parts.bound, parts.training, parts.objective, batch, TrainConfig())
    assert len(calls) == 1


def test_a_controller_run_saves_and_restores_the_trained_controller(manager, tmp_path):
    out = tmp_path / "run"
    resolved = resolve(
        manager,
        "train.regime=controller",
        "train.strategy=adaptive:3",
        "train.controller_steps=3",
        "eval.calibration_limit=8",
        tta=["adaptive:3"],
        output_dir=out,
    )
    summary = attd_core.run_experiment(resolved, manager)
    assert summary.train.regime == "controller"
    assert summary.train.controller.steps == 3
    assert list(summary.eval) == ["none", "adaptive:3"]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["event"] == "controller"] == [1, 2, 3]
    metadata = json.loads((out / "checkpoint" / "metadata.json").read_text())
    assert metadata["trained_strategy"] == "adaptive:3"
    saved = load_file(out / "checkpoint" / "strategy.safetensors")

    _, parts, _ = load_run(out, manager, tta=["adaptive:3"])
    restored = parts.strategies["adaptive:3"]
    assert not restored.needs_calibration
    for key, value in restored.state_dict().items():
        assert torch.equal(value, saved[key]), key


@pytest.mark.parametrize("order", ["first", "second"])
def test_the_meta_regime_trains_through_the_inner_loop(manager, tmp_path, order):
    meta = attd_core.run_experiment(
        resolve(
            manager,
            "train.regime=meta",
            f"train.meta_order={order}",
            "model.backbone.scan_backend=chunked",
            "model.adapter=norm-affine",  # moves an untrained model's logits (A barely does)
            "train.strategy=fixed:1,lr=1.0",
            output_dir=tmp_path / "meta",
        ),
        manager,
    )
    base = attd_core.run_experiment(
        resolve(
            manager,
            "model.backbone.scan_backend=chunked",
            "model.adapter=norm-affine",
            output_dir=tmp_path / "base",
        ),
        manager,
    )
    assert meta.train.regime == "meta" and meta.train.steps == 4
    assert meta.train.loss != base.train.loss  # same seed, different objective
