"""The base training regime: the task loss, AdamW, linear warm-up then cosine decay,
with validation along the way for learning curves."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NoReturn

import torch
from rich.console import Console
from torch import Tensor, nn
from torch.utils.data import DataLoader

from attd_core.errors import ConfigError, TrainingDivergedError
from attd_core.interfaces import Batch, Task
from attd_core.model import AttdModel
from attd_core.runtime.batching import task_loader
from attd_core.runtime.config import TrainConfig
from attd_core.runtime.distributed import SINGLE, Distributed
from attd_core.runtime.metrics import MetricsWriter
from attd_core.runtime.progress import progress_bar
from attd_core.runtime.records import ValidationRecord
from attd_core.runtime.resume import TrainingPosition, TrainingState
from attd_core.runtime.validation import validate, validation_due, validation_loader


@dataclass(frozen=True)
class TrainResult:
    """What training did: optimiser steps, epochs started, the last logged loss, and the
    training seconds (wall time less validation, summed over a resumed run's sessions)."""

    steps: int
    epochs: int
    loss: float | None
    seconds: float


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Multiplier of the peak lr at 0-based `step`: linear warm-up, then cosine to zero."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW over every trainable parameter, in up to three groups, always in this order
    (a resumed run's saved groups must line up with them; empty ones are left out):

    1. weight matrices, decayed by `train.weight_decay`, at `train.lr`;
    2. biases, norm gains, embeddings and parameters marked `_no_weight_decay`
       (mamba-ssm's convention) at `train.lr`, not decayed (S4 and Mamba practice);
    3. parameters marked `_ssm_parameter` (a Mamba layer's `A_log`, `D` and dt
       projection) at `train.ssm_lr` (or `train.lr`), not decayed.
    """
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay, no_decay, ssm = [], [], []
    for param in model.parameters():
        if not param.requires_grad:
            continue
        marked = getattr(param, "_no_weight_decay", False)
        if getattr(param, "_ssm_parameter", False):
            ssm.append(param)
        elif param.dim() < 2 or id(param) in embeddings or marked:
            no_decay.append(param)
        else:
            decay.append(param)
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
        {"params": ssm, "weight_decay": 0.0, "lr": config.ssm_lr or config.lr},
    ]
    return torch.optim.AdamW([group for group in groups if group["params"]], lr=config.lr)


def train_loader(
    task: Task,
    config: TrainConfig,
    generator: torch.Generator,
    distributed: Distributed = SINGLE,
) -> DataLoader:
    """Shuffled batches of the `train` split, grouped by length when the task can measure it.

    Each pass draws its order from `generator`, so its state when an epoch begins
    decides that epoch's batches; with several processes each gets its share of each.
    """
    loader = task_loader(
        task,
        task.load_split("train"),
        config.batch_size,
        generator=generator,
        group_by_length=config.group_by_length,
        shard=(distributed.rank, distributed.world),
    )
    if len(loader) == 0:
        raise ConfigError("the task's 'train' split is empty: nothing to train on")
    return loader


def train(
    model: AttdModel,
    task: Task,
    config: TrainConfig,
    *,
    seed: int,
    device: torch.device,
    metrics: MetricsWriter,
    console: Console | None = None,
    loss_fn: Callable[[Batch], Tensor] | None = None,
    resume: TrainingState | None = None,
    checkpoint: Callable[[TrainingState], None] | None = None,
    generators: Mapping[str, torch.Generator] | None = None,
    distributed: Distributed = SINGLE,
) -> TrainResult:
    """Train on the task's `train` split; `max_steps`, when set, overrides `epochs`.

    `loss_fn` replaces the plain task loss (the meta regime adapts before the loss).
    Every `config.checkpoint_every` steps `checkpoint` receives a `TrainingState`;
    passing one back as `resume` (to a model holding that checkpoint's weights) goes on
    from there, to the same final weights, bit for bit, as a run never stopped.
    `generators` are other generators `loss_fn` draws from, saved and restored with it.

    With `distributed` active, every process takes its share of each batch through
    DistributedDataParallel, weighted so that the step is the one a single process
    would take on the whole batch; only rank 0 checkpoints. Resuming is bit-exact for
    one process only (each process's dropout draws depend on its share).

    The first `train.eval_limit` examples of `train.eval_split` are validated (see
    `validation.py`) every `train.eval_every` steps, or at each epoch's end, and at the
    end; each result is a `"val"` record whose `seconds` are the training seconds so
    far: validation's own time (`validation_seconds`) is not counted in them. Rank 0
    alone validates, before any checkpoint of the same step.

    A non-finite loss raises `TrainingDivergedError` before its step, and so do
    non-finite weights before a checkpoint and at the end: no model of NaNs is saved or
    returned. Every process sees the whole batch's loss and the same weights, so all
    of them stop at the same step and none waits for the others.
    """
    generator = torch.Generator().manual_seed(seed)
    loader = train_loader(task, config, generator, distributed)
    if loss_fn is None:

        def loss_fn(batch: Batch) -> Tensor:
            return task.compute_loss(model(batch), batch)

    step_loss = _BatchLoss(model, loss_fn)
    if distributed.active:
        step_loss = nn.parallel.DistributedDataParallel(step_loss)

    total = config.max_steps or config.epochs * len(loader)
    warmup = round(config.warmup_ratio * total)
    optimizer = build_optimizer(model, config)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total, warmup)
    )
    at = TrainingPosition()
    if resume is not None:
        at = resume.restore(
            optimizer, schedule, generator, generators, total=total, epoch_length=len(loader)
        )
    validation = validation_loader(task, config) if distributed.is_main else None
    every = config.checkpoint_every
    model.train()
    clock = _Clock(at)
    logged = None
    with progress_bar(console) as progress:
        bar = progress.add_task("train", total=total, completed=at.step, status="")
        while at.step < total:
            if at.batches == 0:
                at.epoch += 1
            epoch_generator = generator.get_state()
            for index, batch in enumerate(loader):
                if index < at.batches:  # used before the checkpoint this run resumes
                    continue
                batch = batch.to(device)
                loss = step_loss(batch)
                weight, loss_value = _share(loader, batch, loss, distributed)
                if not math.isfinite(loss_value):
                    _diverged(metrics, at, loss_value, config)
                optimizer.zero_grad(set_to_none=True)
                (loss * weight).backward()
                if config.grad_clip is not None:
                    nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                lr = optimizer.param_groups[0]["lr"]
                optimizer.step()
                schedule.step()
                at.step += 1
                at.batches += 1
                at.window.append(loss_value)
                if at.step % config.log_every == 0 or at.step == total:
                    logged = sum(at.window) / len(at.window)
                    at.window = []
                    metrics.write(
                        {
                            "event": "train",
                            "step": at.step,
                            "epoch": at.epoch,
                            "loss": logged,
                            "lr": lr,
                        }
                    )
                    status = f"epoch {at.epoch} loss {logged:.4f} lr {lr:.2e}"
                    progress.update(bar, status=status)
                progress.advance(bar)
                ended = at.batches == len(loader)
                if validation is not None and validation_due(config, at.step, total, ended):
                    record = _validate(model, validation, config, device, at, clock)
                    metrics.write(record.model_dump())
                    progress.console.print(_validation_line(record), highlight=False)
                if at.step == total:
                    break
                due = every is not None and at.step % every == 0
                if checkpoint is not None and due:
                    _check_weights(model, metrics, at, config)
                    if distributed.is_main:
                        clock.read()
                        checkpoint(
                            TrainingState.capture(
                                at, optimizer, schedule, epoch_generator, generators
                            )
                        )
            else:
                at.batches = 0  # the epoch ran out: the next one begins
    _check_weights(model, metrics, at, config)
    return TrainResult(at.step, at.epoch, logged, clock.read())


class _Clock:
    """Training seconds, kept in `position.seconds` so that checkpoints carry them into
    a resumed session: wall time, less the time spent inside `paused()`."""

    def __init__(self, position: TrainingPosition) -> None:
        self.position = position
        self.lap = time.perf_counter()

    def read(self) -> float:
        """The training seconds so far."""
        now = time.perf_counter()
        self.position.seconds += now - self.lap
        self.lap = now
        return self.position.seconds

    @contextmanager
    def paused(self) -> Iterator[None]:
        self.read()
        try:
            yield
        finally:
            self.lap = time.perf_counter()


def _validate(
    model: AttdModel,
    loader: DataLoader,
    config: TrainConfig,
    device: torch.device,
    at: TrainingPosition,
    clock: _Clock,
) -> ValidationRecord:
    """The record of validating on `loader`'s examples now, off the training clock."""
    with clock.paused():
        started = time.perf_counter()
        scores = validate(model, loader, device)
        spent = time.perf_counter() - started
    return ValidationRecord.of(
        scores,
        step=at.step,
        epoch=at.epoch,
        split=config.eval_split,
        n=len(loader.dataset),
        seconds=at.seconds,
        validation_seconds=spent,
    )


def _validation_line(record: ValidationRecord) -> str:
    """A validation as the line printed above the progress bar."""
    scores = ", ".join(f"{key} {value:.4f}" for key, value in record.metrics.items())
    return (
        f"validation at step {record.step} (epoch {record.epoch}): {scores} on "
        f"{record.n} {record.split} examples"
    )


def _check_weights(
    model: nn.Module, metrics: MetricsWriter, at: TrainingPosition, config: TrainConfig
) -> None:
    """Stop before a checkpoint or the end if an update made any weight non-finite
    (a finite loss with an infinite gradient does that)."""
    if not all(bool(torch.isfinite(param).all()) for param in model.parameters()):
        _diverged(metrics, at, None, config)


def _diverged(
    metrics: MetricsWriter, at: TrainingPosition, loss: float | None, config: TrainConfig
) -> NoReturn:
    """Record where training diverged in `metrics.jsonl`, then raise."""
    step = at.step + 1 if loss is not None else at.step
    metrics.write({"event": "diverged", "phase": "train", "step": step, "loss": loss})
    hint = f"lower train.lr (now {config.lr:g})"
    if config.grad_clip is None:
        hint += " or set train.grad_clip"
    if config.regime == "meta":
        hint += ", or the inner lr of train.strategy"
    raise TrainingDivergedError("training", step, loss, hint)


class _BatchLoss(nn.Module):
    """The model and its loss as one module, so that DistributedDataParallel wraps the
    whole step: the meta regime's loss runs the model several times (adapting first)."""

    def __init__(self, model: nn.Module, loss_fn: Callable[[Batch], Tensor]) -> None:
        super().__init__()
        self.model, self.loss_fn = model, loss_fn

    def forward(self, batch: Batch) -> Tensor:
        return self.loss_fn(batch)


def _share(
    loader: DataLoader, batch: Batch, loss: Tensor, distributed: Distributed
) -> tuple[float, float]:
    """The weight of this process's loss, and the whole batch's mean loss.

    DistributedDataParallel averages gradients over processes, so a share of n of the
    batch's N examples is weighed n * world / N: the average is then the gradient of
    the whole batch's mean loss.
    """
    if not distributed.active:
        return 1.0, loss.item()
    real = getattr(loader.batch_sampler, "real", True)
    count = len(batch) if real else 0
    total, weighted = distributed.totals(count, loss.item() * count)
    return count * distributed.world / total, weighted / total
