"""Validation while training: the task's metrics on a capped split, for learning curves.

The trainer validates every `train.eval_every` optimiser steps (or at the end of every
epoch) and at the end of training, and records each result as a `"val"` line of
`metrics.jsonl`. It runs the bare model, without adaptation (as `none` does), not
through `evaluate`: that resets the adapter generator the meta regime trains with and
toggles the parameters' gradient flags. Nothing training holds or draws changes here,
so a run ends with the same weights whether it validates or not.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Subset

from attd_core.interfaces import Task
from attd_core.model import AttdModel
from attd_core.runtime.batching import task_loader
from attd_core.runtime.config import TrainConfig


def validation_loader(task: Task, config: TrainConfig) -> DataLoader | None:
    """Batches of the examples every validation uses, the first `train.eval_limit` of
    `train.eval_split` (in `train.eval_batch_size`s); None when the run does not validate."""
    if config.eval_split is None:
        return None
    examples = task.load_split(config.eval_split)
    limit = config.eval_limit
    if limit is not None and limit < len(examples):
        examples = Subset(examples, range(limit))
    return task_loader(task, examples, config.eval_batch_size)


def validation_due(config: TrainConfig, step: int, total: int, epoch_ended: bool) -> bool:
    """Whether to validate after optimiser step `step` of `total`: every
    `train.eval_every` steps, or at each epoch's end when that is null, and at the end."""
    if step == total:
        return True
    if config.eval_every is None:
        return epoch_ended
    return step % config.eval_every == 0


def validate(model: AttdModel, loader: DataLoader, device: torch.device) -> dict[str, float]:
    """The task's metrics over the examples of `loader`, each batch's weighted by its size
    (as `evaluate` weighs them), in eval mode and without gradients.

    The model's train/eval mode comes back afterwards, and so do the global RNG states,
    so that a task or backbone drawing from them cannot move what training draws next.
    """
    sums: dict[str, float] = {}
    training = model.training
    model.eval()
    cuda = [device] if device.type == "cuda" else []
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=cuda):
            for batch in loader:
                batch = batch.to(device)
                for key, value in model.task.compute_metrics(model(batch), batch).items():
                    sums[key] = sums.get(key, 0.0) + value * len(batch)
    finally:
        model.train(training)
    return {key: value / len(loader.dataset) for key, value in sums.items()}
