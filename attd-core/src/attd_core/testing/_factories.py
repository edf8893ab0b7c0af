"""Tiny components for tests: a task, backbones, models and a bound model.

Everything is small enough that a forward takes a millisecond, seeded, and built
without touching the global random state.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from attd_core.errors import ConfigError
from attd_core.hookspecs import hookimpl
from attd_core.interfaces import Adapter, Backbone, Batch, InputSpec, Pooling, Task
from attd_core.model import AttdModel, BoundModel
from attd_core.plugins import PluginManager
from attd_core.specs import NoOptions, PluginSpec, TaskSpec
from attd_core.tasks import ClassificationTask
from attd_core.testing import new_plugin_manager

TINY_BACKBONES: dict[str, dict[str, Any]] = {
    "mamba": {"d_model": 16, "n_layers": 1, "d_state": 4},
    "transformer": {"d_model": 16, "n_layers": 1, "n_heads": 2, "mlp_ratio": 2},
    "hybrid": {
        "d_model": 16,
        "n_layers": 2,
        "d_state": 4,
        "n_heads": 2,
        "mlp_ratio": 2,
        "pattern": "MA",
    },
}
"""The options `tiny_backbone` starts from, per built-in backbone."""


class TinyTask(ClassificationTask):
    """Three classes over a 12-token vocabulary (0 pads); labels cycle 0, 1, 2.

    Each split holds one sequence per entry of `lengths` (default 9, 5, 14, 7), so a
    batch of them is padded; tokens are drawn from a generator seeded by the split's
    name, so splits differ and repeat exactly.
    """

    input_spec = InputSpec(vocab_size=12, pad_id=0)
    num_classes = 3

    def __init__(self, lengths: tuple[int, ...] = (9, 5, 14, 7)) -> None:
        self.lengths = tuple(lengths)

    def load_split(self, split: str) -> list[dict[str, Any]]:
        if split not in self.splits:
            raise ConfigError(f"TinyTask has no split {split!r}; splits: {', '.join(self.splits)}")
        generator = torch.Generator().manual_seed(len(split))
        vocab = self.input_spec.vocab_size
        return [
            {
                "tokens": torch.randint(1, vocab, (n,), generator=generator).tolist(),
                "label": i % self.num_classes,
            }
            for i, n in enumerate(self.lengths)
        ]

    def sequence_length(self, example: dict[str, Any]) -> int:
        return len(example["tokens"])

    def preprocess(self, raw_batch: list[dict[str, Any]]) -> Batch:
        return self.collate_tokens(
            [example["tokens"] for example in raw_batch],
            [example["label"] for example in raw_batch],
        )


def _seeded(seed: int, build: Any) -> Any:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


class ParityTask(ClassificationTask):
    """Two classes, the parity of the token sum: 32 sequences of length 6 per split over
    tokens 1 and 2 (0 pads), seeded by the split's name. `attd run` trains and evaluates
    it in seconds, so end-to-end tests of the runtime and the CLI use it."""

    input_spec = InputSpec(vocab_size=3, pad_id=0)
    num_classes = 2

    def __init__(self, options: NoOptions | None = None) -> None:
        self.options = options

    def load_split(self, split: str) -> list[dict[str, Any]]:
        if split not in self.splits:
            raise ConfigError(f"parity has no split {split!r}; splits: {', '.join(self.splits)}")
        rng = random.Random(split)
        rows = [[rng.randint(1, 2) for _ in range(6)] for _ in range(32)]
        return [{"tokens": row, "label": sum(row) % 2} for row in rows]

    def preprocess(self, raw_batch: list[dict[str, Any]]) -> Batch:
        tokens = [example["tokens"] for example in raw_batch]
        return self.collate_tokens(tokens, [example["label"] for example in raw_batch])


class ParityPlugin:
    """Registers `ParityTask` as the task `parity` (batch size 16):
    `manager.add_plugin(ParityPlugin(), name="parity")`."""

    @hookimpl
    def attd_register(self, register: Callable[[PluginSpec], None]) -> None:
        register(
            TaskSpec(
                name="parity",
                summary="parity of the token sum",
                factory="attd_core.testing._factories:ParityTask",
                config=NoOptions,
                run_defaults={"train.batch_size": 16},
            )
        )


def tiny_backbone(name: str = "mamba", seed: int = 0, **options: Any) -> Backbone:
    """A small built-in backbone (`mamba`, `transformer`, `hybrid`), in eval mode.

    `options` override `TINY_BACKBONES[name]` (e.g. `bidirectional=True`, `d_model=8`).
    """
    if name not in TINY_BACKBONES:
        raise ValueError(f"no tiny {name!r} backbone; choose one of {', '.join(TINY_BACKBONES)}")
    spec = new_plugin_manager().get("backbone", name)
    return _seeded(seed, lambda: spec.create({**TINY_BACKBONES[name], **options})).eval()


def tiny_model(
    task: Task | None = None,
    backbone: Backbone | None = None,
    *,
    pooling: str | Pooling = "masked-mean",
    seed: int = 0,
    manager: PluginManager | None = None,
) -> AttdModel:
    """`AttdModel` for `task` (default `TinyTask`) on `backbone` (default a tiny Mamba), eval.

    A pooling name is resolved through `manager` (default: attd-core's built-ins only).
    """
    task = TinyTask() if task is None else task
    backbone = backbone if backbone is not None else tiny_backbone(seed=seed)
    manager = manager or new_plugin_manager()

    def build() -> AttdModel:
        return AttdModel(task, backbone, pooling, manager=manager)

    return _seeded(seed, build).eval()


def tiny_bound_model(
    task: Task | None = None,
    backbone: Backbone | None = None,
    adapters: Mapping[str, Adapter] | None = None,
    *,
    seed: int = 0,
    sharpen: bool = True,
) -> BoundModel:
    """A frozen `BoundModel`: what a TTA strategy adapts, as the evaluator hands it over.

    Defaults: `TinyTask`, a one-layer Mamba with wide step sizes, and a rank-2 Delta-SSM
    adapter with a wide initialisation, so that the inner loss moves within a few steps.
    `sharpen` scales the head (x10) and Mamba's output projections (x5), making the
    predictions confident and sensitive to A, like a trained model's. Parameters do not
    require gradients and the model is in eval mode.
    """
    task = TinyTask() if task is None else task
    if backbone is None:
        backbone = tiny_backbone(seed=seed, dt_min=0.1, dt_max=1.0)
    model = tiny_model(task, backbone, seed=seed)
    if sharpen:
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if name.startswith("head.") and name.endswith("weight"):
                    parameter.mul_(10.0)
                elif name.endswith("mixer.out_proj.weight"):
                    parameter.mul_(5.0)
    if adapters is None:
        options = {"rank": 2, "init_scale": 1.0, "max_delta_norm": 5.0}
        adapters = {"delta-ssm": new_plugin_manager().create("adapter", "delta-ssm", options)}
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return BoundModel(model, adapters, seed=seed)


def first_examples(task: Task, split: str, n: int) -> list[Any]:
    """The first `n` examples of `split` (all of them when it has fewer), as a list."""
    examples = task.load_split(split)
    return [examples[i] for i in range(min(n, len(examples)))]


def task_batch(task: Task, split: str = "test", n: int = 8) -> Batch:
    """The first `n` examples of `split`, collated by the task."""
    return task.preprocess(first_examples(task, split, n))


def frozen_copy(module: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of `module`'s state dict, to check later that nothing changed it."""
    return {key: value.detach().clone() for key, value in module.state_dict().items()}
