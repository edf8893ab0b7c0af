"""Evaluation with a test-time adaptation strategy: adapt each batch, then predict."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from rich.console import Console
from torch import nn

from attd_core.errors import ConfigError, PluginError
from attd_core.interfaces import Batch, InnerObjective, Shift, TTAStrategy
from attd_core.model import BoundModel
from attd_core.runtime.batching import task_loader
from attd_core.runtime.paired import encode_outcomes
from attd_core.runtime.progress import progress_bar
from attd_core.runtime.summary import EvalSummary


@dataclass(frozen=True)
class EvalResult:
    """One strategy on one split: task metrics weighted by batch size, and the cost.

    `steps` holds every sample's inner step count (in evaluation order), so k
    percentiles and histograms need no second pass; `uses_labels` marks the oracle.
    `correct` holds whether each sample was predicted right (same order), for tasks
    that say so (`example_correct`); None for the others. Evaluation order depends on
    the examples alone, so two strategies on one split pair up sample by sample.
    """

    tta: str
    split: str
    metrics: dict[str, float]
    steps: list[int]
    seconds: float
    stats: dict[str, float] = field(default_factory=dict)
    uses_labels: bool = False
    adapter_parameters: int | None = None
    correct: tuple[bool, ...] | None = None

    @property
    def n(self) -> int:
        return len(self.steps)

    @property
    def mean_k(self) -> float:
        return sum(self.steps) / self.n

    def k_percentile(self, q: float) -> float:
        """The q-th percentile (0..100) of the per-sample step counts, interpolated."""
        ordered = sorted(self.steps)
        position = (len(ordered) - 1) * q / 100
        low = int(position)
        high = min(low + 1, len(ordered) - 1)
        return ordered[low] + (ordered[high] - ordered[low]) * (position - low)

    def record(self) -> dict[str, Any]:
        """The `metrics.jsonl` line: everything, guard counters included."""
        head = {"event": "eval", "tta": self.tta, "split": self.split}
        summary = self.summary().model_dump(exclude={"metrics", "correct", "paired"})
        return {**head, **self.stats, **self.metrics, **summary}

    def summary(self) -> EvalSummary:
        """The `summary.json` entry: headline numbers and cost."""
        return EvalSummary(
            metrics=dict(self.metrics),
            mean_k=self.mean_k,
            p50_k=self.k_percentile(50),
            p90_k=self.k_percentile(90),
            seconds=self.seconds,
            seconds_per_sample=self.seconds / self.n,
            n=self.n,
            uses_labels=self.uses_labels,
            adapter_parameters=self.adapter_parameters,
            split=self.split,
            correct=None if self.correct is None else encode_outcomes(self.correct),
        )


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
    calibration: Sequence[Any] = (),
    shift: Shift | None = None,
    seed: int = 0,
) -> EvalResult:
    """Adapt to every batch of `examples` with `strategy`, then predict without gradients.

    Examples are batched in length order when the task can measure them (less padding).
    A strategy that needs fitting is calibrated first on `calibration` examples; one that
    carries state across batches is reset. `shift` corrupts each batch (reproducibly,
    from `seed`) before the strategy sees it.

    The strategy adapts on each batch's context view and the adapted model is scored on
    its scored view (`evaluation_views`), so no inner objective sees a scored target and
    every strategy, `none` included, is scored on the same targets.

    Base weights are frozen for the pass, so no strategy can change them (and none pays
    for their gradients); the generator is reset so that every pass starts alike.
    """
    if len(examples) == 0:
        raise ConfigError(f"split {split!r} is empty: nothing to evaluate")
    loader = task_loader(bound.task, examples, batch_size)
    bound.model.eval()
    bound.reset_generator()
    if hasattr(strategy, "reset"):
        strategy.reset()
    shift_generator = torch.Generator().manual_seed(seed)
    uses_labels = bool(getattr(strategy, "uses_labels", False))
    sums: dict[str, float] = {}
    stats: dict[str, float] = {}
    steps: list[int] = []
    judge = getattr(bound.task, "example_correct", None)
    correct: list[bool] = []
    parameters = None
    started = time.perf_counter()
    with frozen(bound.model), progress_bar(console) as progress:
        if getattr(strategy, "needs_calibration", False):
            batches = (
                evaluation_views(bound.task, batch.to(device), labels=True)[0]
                for batch in task_loader(bound.task, calibration, batch_size)
            )
            strategy.calibrate(bound, batches, objective)
        bar = progress.add_task(f"eval {tta}", total=len(loader), status="")
        for batch in loader:
            batch = batch.to(device)
            if shift is not None:
                batch = shift.apply(batch, shift_generator)
            context, batch = evaluation_views(bound.task, batch, labels=uses_labels)
            adaptation = strategy.adapt(bound, context, objective)
            if adaptation.state is not None and parameters is None:
                parameters = bound.num_adapter_parameters(adaptation.state)
            with torch.no_grad():
                output = bound(batch, adaptation.state)
            size = len(batch)
            for key, value in bound.task.compute_metrics(output, batch).items():
                sums[key] = sums.get(key, 0.0) + value * size
            for key, value in adaptation.stats.items():
                stats[key] = stats.get(key, 0.0) + value
            steps += adaptation.steps.tolist()
            if judge is not None:
                correct += _judged(judge(output, batch), size, bound.task)
            progress.update(bar, advance=1, status=_status(sums, len(steps)))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started
    metrics = {key: value / len(steps) for key, value in sums.items()}
    outcomes = tuple(correct) if judge is not None else None
    return EvalResult(tta, split, metrics, steps, seconds, stats, uses_labels, parameters, outcomes)


def evaluation_views(task: Any, batch: Batch, *, labels: bool) -> tuple[Batch, Batch]:
    """`(context, scored)`: what a strategy may adapt on, and what is then scored.

    From the task's `evaluation_views` hook when it has one (language modelling adapts
    on a prefix of each block and scores the rest), else the batch for both. The context
    keeps its labels only when `labels` is true (a strategy that declares `uses_labels`,
    or calibration on a held-out split), so a label-free strategy reads `labels=None`.
    """
    hook = getattr(task, "evaluation_views", None)
    context, scored = hook(batch) if hook is not None else (batch, batch)
    if (len(context), len(scored)) != (len(batch), len(batch)):
        raise PluginError(
            f"{type(task).__name__}.evaluation_views returned views of {len(context)} and "
            f"{len(scored)} samples for a batch of {len(batch)}: both keep every sample"
        )
    return (context if labels else replace(context, labels=None)), scored


@contextmanager
def frozen(model: nn.Module) -> Iterator[None]:
    """No parameter of `model` takes gradients inside; the flags come back afterwards."""
    flags = [(param, param.requires_grad) for param in model.parameters()]
    for param, _ in flags:
        param.requires_grad_(False)
    try:
        yield
    finally:
        for param, flag in flags:
            param.requires_grad_(flag)


def _judged(judged: Any, size: int, task: Any) -> list[bool]:
    """`example_correct`'s answer for a batch of `size`, checked: one bool per example."""
    shape = tuple(getattr(judged, "shape", ()))
    if shape != (size,):
        raise PluginError(
            f"{type(task).__name__}.example_correct returned shape {shape} for a batch of "
            f"{size}: it returns one bool per example, shape ({size},)"
        )
    return [bool(value) for value in judged.tolist()]


def _status(sums: dict[str, float], n: int) -> str:
    return f"accuracy {sums['accuracy'] / n:.4f}" if "accuracy" in sums else ""
