"""Training regimes beyond `base`: align the inner objective with the task, train the
controller, or train through adaptation.

`aligned`: TTT's joint training, `L_task + lambda * L_inner` on the same inputs (the
inner objective at the fresh adapter state, its head trained with the task), so that
at test time the inner gradient points where the task's loss falls.

`controller`: the backbone is frozen and only the strategy's learned parts (controller
thresholds or hazard, damping gate) train, on
`E[sum_k w_k L_task(psi_k)] + lambda * E[cost] + beta * E[sum_k P(K >= k) ||psi_k - psi_{k-1}||^2]`,
where `w` is the controller's differentiable distribution over step counts. This is
the expected form of specs/attd.md's objective: the task loss after K steps, weighted
by how likely each K is, so thresholds learn through the soft gates.
`meta`: the base model trains on the task loss after a simulated inner loop (MAML
style), first or second order.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import NoReturn

import torch
from rich.console import Console
from torch import Tensor
from torch.utils.data import DataLoader

from attd_core.errors import ConfigError, TrainingDivergedError
from attd_core.interfaces import AdapterState, Batch, InnerObjective
from attd_core.model import BoundModel
from attd_core.runtime.config import TrainConfig
from attd_core.runtime.evaluator import frozen
from attd_core.runtime.metrics import MetricsWriter
from attd_core.runtime.progress import progress_bar
from attd_core.runtime.trainer import TrainResult, train_loader
from attd_core.tta.engine import adapt_batch
from attd_core.tta.strategies import AdaptiveSteps, InnerLoopStrategy


def train_controller(
    bound: BoundModel,
    strategy: AdaptiveSteps,
    objective: InnerObjective,
    config: TrainConfig,
    *,
    seed: int,
    device: torch.device,
    metrics: MetricsWriter,
    console: Console | None = None,
) -> TrainResult:
    """Train `strategy`'s controller (and damping gate) with the base model frozen.

    A non-finite loss raises `TrainingDivergedError` before its step (nothing is
    saved: the run's checkpoint is written after this phase).
    """
    model = bound.model
    loader = train_loader(bound.task, config, torch.Generator().manual_seed(seed))
    model.eval()
    with frozen(model):
        return _train_controller(
            bound, strategy, objective, config, loader, device, metrics, console
        )


def _train_controller(
    bound: BoundModel,
    strategy: AdaptiveSteps,
    objective: InnerObjective,
    config: TrainConfig,
    loader: DataLoader,
    device: torch.device,
    metrics: MetricsWriter,
    console: Console | None,
) -> TrainResult:
    if strategy.controller.needs_calibration:
        calibration = (batch.to(device) for _, batch in zip(range(8), loader, strict=False))
        strategy.calibrate(bound, calibration, objective)
    params = [param for param in strategy.parameters() if param.requires_grad]
    if not params:
        raise ConfigError(
            f"controller {strategy.options.controller!r} has nothing to learn; "
            "the controller regime needs threshold, gate or halting"
        )
    optimizer = torch.optim.Adam(params, lr=config.controller_lr)
    started, step, logged = time.perf_counter(), 0, None
    with progress_bar(console) as progress:
        bar = progress.add_task("controller", total=config.controller_steps, status="")
        while step < config.controller_steps:
            for batch in loader:
                batch = batch.to(device)
                loss, mean_k = _controller_loss(bound, strategy, objective, batch, config)
                value = loss.item()
                if not math.isfinite(value):
                    _diverged(metrics, step + 1, value, config)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
                logged = value
                metrics.write(
                    {"event": "controller", "step": step, "loss": logged, "mean_k": mean_k}
                )
                progress.update(bar, advance=1, status=f"loss {logged:.4f} mean k {mean_k:.2f}")
                if step == config.controller_steps:
                    break
    if not all(bool(torch.isfinite(param).all()) for param in params):
        _diverged(metrics, step, None, config)
    return TrainResult(step, 0, logged, time.perf_counter() - started)


def _diverged(
    metrics: MetricsWriter, step: int, loss: float | None, config: TrainConfig
) -> NoReturn:
    """Record where the controller phase diverged in `metrics.jsonl`, then raise."""
    metrics.write({"event": "diverged", "phase": "controller", "step": step, "loss": loss})
    hint = f"lower train.controller_lr (now {config.controller_lr:g})"
    raise TrainingDivergedError("controller training", step, loss, hint)


def _controller_loss(
    bound: BoundModel,
    strategy: AdaptiveSteps,
    objective: InnerObjective,
    batch: Batch,
    config: TrainConfig,
) -> tuple[Tensor, float]:
    controller, k_max = strategy.controller, strategy.k_max
    fresh = bound.init_adapter_state(len(batch))
    with torch.no_grad():
        reference = bound(batch)
        difficulty = objective(bound, batch, fresh, reference)
    plan = controller.plan(difficulty)
    if plan.weights is None:
        raise ConfigError(
            f"controller {strategy.options.controller!r} gives no differentiable plan"
        )
    task_losses = [bound.sample_losses(reference, batch)]
    moves: list[Tensor] = []
    previous: list[AdapterState] = [fresh]
    learned_steps = strategy.gate is not None

    def record(step: int, state: AdapterState) -> None:
        with torch.set_grad_enabled(learned_steps):
            task_losses.append(bound.sample_losses(bound(batch, state), batch))
            moves.append(_squared_move(state, previous[-1], len(batch), bound.per_sample))
        previous.append(state)

    steps = torch.full((len(batch),), k_max, device=difficulty.device)
    adapt_batch(
        bound,
        batch,
        objective,
        strategy.options,
        steps,
        initial_state=fresh,
        gamma=strategy.gate,
        on_step=record,
        differentiable=learned_steps,
        reference=reference,
    )
    losses = torch.stack(task_losses, dim=1)  # (B, k_max + 1)
    reach = plan.weights.flip(1).cumsum(1).flip(1)[:, 1:]  # P(K >= k), k = 1..k_max
    step_penalty = (reach * torch.stack(moves, dim=1)).sum(1)
    loss = (
        (plan.weights * losses).sum(1).mean()
        + config.lambda_cost * plan.cost.mean()
        + config.beta_step * step_penalty.mean()
    )
    return loss, float(plan.k_hard.float().mean())


def _squared_move(
    state: AdapterState, previous: AdapterState, size: int, per_sample: bool
) -> Tensor:
    """`||psi_k - psi_{k-1}||^2` per sample `(B,)` (a shared state's move for every sample)."""
    total = sum(
        (state[key] - previous[key]).pow(2).reshape(size if per_sample else 1, -1).sum(1)
        for key in state
    )
    return total.expand(size) if not per_sample else total


def meta_loss(
    bound: BoundModel,
    strategy: InnerLoopStrategy,
    objective: InnerObjective,
    second_order: bool,
) -> Callable[[Batch], Tensor]:
    """The task loss after `strategy` adapts each batch, differentiable for the base model.

    Second order differentiates through the inner loop's updates. First order takes the
    adapted state as a constant (first-order MAML: the gradient of the task loss at
    `psi_k`), so the inner loop runs as at test time, its state detached, and the
    backward does not go through the inner steps at all.
    """

    def loss(batch: Batch) -> Tensor:
        if second_order:
            with strategy.differentiable(create_graph=True):
                adaptation = strategy.adapt(bound, batch, objective)
        else:
            adaptation = strategy.adapt(bound, batch, objective)
        return bound.task.compute_loss(bound(batch, adaptation.state), batch)

    return loss


def aligned_loss(
    bound: BoundModel, objective: InnerObjective, weight: float
) -> Callable[[Batch], Tensor]:
    """The task loss plus `weight` times the batch's mean inner loss.

    One forward serves both: it is the task's output and the objective's `reference`
    (which objectives read detached), and the inner loss is taken at no adapter state,
    which is what a fresh state computes.
    """

    def loss(batch: Batch) -> Tensor:
        output = bound(batch)
        inner = objective(bound, batch, None, output)
        return bound.task.compute_loss(output, batch) + weight * inner.mean()

    return loss
