"""Evaluation with a test-time adaptation strategy: adapt each batch, then predict."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from rich.console import Console
from torch import nn
from torch.utils.data import DataLoader

from attd_core.errors import ConfigError
from attd_core.interfaces import InnerObjective, TTAStrategy
from attd_core.model import BoundModel
from attd_core.runtime.batching import LengthGroupedBatches, example_lengths
from attd_core.runtime.progress import progress_bar


@dataclass(frozen=True)
class EvalResult:
    """One strategy on one split: task metrics weighted by batch size, and the cost."""

    tta: str
    split: str
    metrics: dict[str, float]
    mean_k: float
    seconds: float
    n: int
    stats: dict[str, float] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """The `metrics.jsonl` line: everything, guard counters included."""
        head = {"event": "eval", "tta": self.tta, "split": self.split}
        cost = {"mean_k": self.mean_k, "seconds": self.seconds, "n": self.n}
        return {**head, **self.stats, **self.metrics, **cost}

    def summary(self) -> dict[str, Any]:
        """The `summary.json` entry: the headline numbers only."""
        return {
            "accuracy": self.metrics.get("accuracy"),
            "mean_k": self.mean_k,
            "seconds": self.seconds,
            "n": self.n,
        }


def evaluate(
    bound: BoundModel,
    strategy: TTAStrategy,
    objective: InnerObjective,
    examples: Sequence[Any],
    *,
    tta: str,
    split: str,
    batch_size: int,
    device: torch.device,
    console: Console | None = None,
) -> EvalResult:
    """Adapt to every batch of `examples` with `strategy`, then predict without gradients.

    Examples are batched in length order when the task can measure them (less padding).

    Base weights are frozen for the pass, so no strategy can change them (and none pays
    for their gradients); the generator is reset so that every pass starts alike.
    """
    if len(examples) == 0:
        raise ConfigError(f"split {split!r} is empty: nothing to evaluate")
    lengths = example_lengths(bound.task, examples)
    batching: dict[str, Any] = (
        {"batch_size": batch_size}
        if lengths is None
        else {"batch_sampler": LengthGroupedBatches(lengths, batch_size)}
    )
    loader = DataLoader(examples, collate_fn=bound.task.preprocess, **batching)
    bound.model.eval()
    bound.reset_generator()
    sums: dict[str, float] = {}
    stats: dict[str, float] = {}
    steps = n = 0
    started = time.perf_counter()
    with _frozen(bound.model), progress_bar(console) as progress:
        bar = progress.add_task(f"eval {tta}", total=len(loader), status="")
        for batch in loader:
            batch = batch.to(device)
            adaptation = strategy.adapt(bound, batch, objective)
            with torch.no_grad():
                output = bound(batch, adaptation.state)
            size = len(batch)
            for key, value in bound.task.compute_metrics(output, batch).items():
                sums[key] = sums.get(key, 0.0) + value * size
            for key, value in adaptation.stats.items():
                stats[key] = stats.get(key, 0.0) + value
            steps += int(adaptation.steps.sum())
            n += size
            progress.update(bar, advance=1, status=_status(sums, n))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started
    metrics = {key: value / n for key, value in sums.items()}
    return EvalResult(tta, split, metrics, steps / n, seconds, n, stats)


@contextmanager
def _frozen(model: nn.Module) -> Iterator[None]:
    flags = [(param, param.requires_grad) for param in model.parameters()]
    for param, _ in flags:
        param.requires_grad_(False)
    try:
        yield
    finally:
        for param, flag in flags:
            param.requires_grad_(flag)


def _status(sums: dict[str, float], n: int) -> str:
    return f"accuracy {sums['accuracy'] / n:.4f}" if "accuracy" in sums else ""
