"""TTA strategies: how many inner steps each sample gets, on top of the batched engine.

`none` and `fixed:k` need nothing else; `adaptive` and `gate` ask a controller plugin
(built by the plugin manager that creates the strategy), fed with each sample's inner
loss before adaptation; `oracle` picks each sample's best
step count with labels (evaluation only). Strategies with learned parts (controller
thresholds, the damping gate) are modules, so the controller regime trains them and
checkpoints save them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from attd_core.errors import ConfigError
from attd_core.interfaces import (
    AdaptableModel,
    Adaptation,
    AdapterState,
    Batch,
    Controller,
    InnerObjective,
)
from attd_core.options import (
    AdaptiveOptions,
    FixedOptions,
    InnerLoopOptions,
    NoneOptions,
    OracleOptions,
)
from attd_core.tta.engine import StepPlan, adapt_batch

if TYPE_CHECKING:
    from attd_core.plugins import PluginManager


class NoAdaptation:
    """The baseline: predict with the trained weights, zero steps for every sample."""

    uses_labels = False

    def __init__(self, options: NoneOptions | None = None) -> None:
        self.options = options or NoneOptions()

    def adapt(self, model: AdaptableModel, batch: Batch, objective: InnerObjective) -> Adaptation:
        steps = torch.zeros(len(batch), dtype=torch.long, device=batch.inputs.device)
        return Adaptation(state=None, steps=steps)


class DampingGate(nn.Module):
    """A learned damping `gamma = sigmoid(w * inner_loss + b)`, one value per sample.

    It starts nearly undamped (gamma ~ 0.98 for any loss); the controller regime learns
    how much to trust a step given how large the inner loss is.
    """

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(()))
        self.bias = nn.Parameter(torch.tensor(4.0))

    def forward(self, loss: Tensor) -> Tensor:
        return torch.sigmoid(self.weight * loss + self.bias)


class InnerLoopStrategy(nn.Module):
    """What every adapting strategy shares: the engine's options, damping, stream resets.

    With `reset=continual` one shared state is carried from batch to batch (a stream);
    `collapse_entropy` resets it when the adapted predictions' mean entropy collapses
    below `c * ln C`, which is how unguarded continual adaptation fails (specs/tta.md).
    """

    uses_labels = False

    def __init__(self, options: InnerLoopOptions) -> None:
        super().__init__()
        self.options = options
        self.gate = DampingGate() if options.learned_damping else None
        self._carried: AdapterState | None = None
        self._engine_options: dict[str, bool] = {}

    def reset(self) -> None:
        """Forget the carried state: the next batch starts fresh."""
        self._carried = None

    @contextmanager
    def differentiable(self, create_graph: bool = False) -> Iterator[None]:
        """Keep inner updates in the autograd graph (second order with `create_graph`):
        how the meta regime trains the base model through adaptation."""
        self._engine_options = {"differentiable": True, "create_graph": create_graph}
        try:
            yield
        finally:
            self._engine_options = {}

    def run_engine(
        self,
        model: AdaptableModel,
        batch: Batch,
        objective: InnerObjective,
        steps: StepPlan,
        **engine_options: object,
    ) -> Adaptation:
        continual = self.options.reset == "continual"
        if continual and model.per_sample:
            raise ConfigError(
                "reset=continual carries one state across batches; give the adapter "
                "per_sample: false"
            )
        adaptation = adapt_batch(
            model,
            batch,
            objective,
            self.options,
            steps,
            initial_state=self._carried if continual else None,
            gamma=self.gate,
            **self._engine_options,
            **engine_options,
        )
        if continual and adaptation.state is not None:
            self._carried = adaptation.state
            if self.options.collapse_entropy is not None and self._collapsed(model, batch):
                self._carried = None
                adaptation.stats["collapse_resets"] = 1.0
        return adaptation

    def _collapsed(self, model: AdaptableModel, batch: Batch) -> bool:
        with torch.no_grad():
            logits = model(batch, self._carried).logits
        log_p = torch.log_softmax(logits.float(), dim=-1)
        entropy = -(log_p.exp() * log_p).sum(-1).mean()
        return bool(entropy < self.options.collapse_entropy * math.log(logits.shape[-1]))


class FixedSteps(InnerLoopStrategy):
    """The same k inner steps for every sample (`fixed:k`)."""

    def __init__(self, options: FixedOptions) -> None:
        super().__init__(options)

    def adapt(self, model: AdaptableModel, batch: Batch, objective: InnerObjective) -> Adaptation:
        steps = torch.full((len(batch),), self.options.k, device=batch.inputs.device)
        return self.run_engine(model, batch, objective, steps)


def create_controller(options: AdaptiveOptions, manager: PluginManager) -> Controller:
    """The controller plugin named in `options`, from `manager`, given the strategy's
    k_max, target and tau."""
    spec = manager.get("controller", options.controller)
    offered = {"k_max": options.k_max, "target_k": options.target_k, "tau": options.tau}
    accepted = {
        key: value
        for key, value in offered.items()
        if key in spec.config.model_fields and value is not None
    }
    return manager.create("controller", options.controller, accepted)


class AdaptiveSteps(InnerLoopStrategy):
    """Steps per sample from a controller (`adaptive:k_max,controller=...`, and `gate`).

    An untrained controller that needs fitting is calibrated by the evaluator on a
    calibration split before the first batch (`calibrate`). The controller comes from
    `manager`, which `PluginManager.create` passes.
    """

    def __init__(self, options: AdaptiveOptions, *, manager: PluginManager) -> None:
        super().__init__(options)
        self.controller = create_controller(options, manager)

    @property
    def needs_calibration(self) -> bool:
        return self.controller.needs_calibration

    def calibrate(
        self, model: AdaptableModel, batches: Iterable[Batch], objective: InnerObjective
    ) -> None:
        """Fit the controller from the difficulties (and best steps) of `batches`."""
        if not self.controller.needs_calibration:
            return
        wants_best = self.controller.uses_best_steps
        difficulties, best = [], []
        for batch in batches:
            difficulties.append(difficulty_of(model, batch, objective))
            if wants_best:
                best.append(best_steps(model, batch, objective, self.options, self.k_max)[0])
        if not difficulties:
            raise ConfigError("the calibration split is empty: cannot calibrate the controller")
        self.controller.calibrate(torch.cat(difficulties), torch.cat(best) if best else None)

    @property
    def k_max(self) -> int:
        return self.options.k_max

    def adapt(self, model: AdaptableModel, batch: Batch, objective: InnerObjective) -> Adaptation:
        if self.controller.needs_calibration:
            raise ConfigError(
                f"controller {self.options.controller!r} is not calibrated or trained; "
                "call calibrate() first (the evaluator does, on eval.calibration_split)"
            )
        return self.run_engine(model, batch, objective, self._planner)

    def _planner(self, difficulty: Tensor) -> Tensor:
        return self.controller.plan(difficulty).k_hard


class OracleSteps(InnerLoopStrategy):
    """Each sample's best step count in 0..k_max, chosen by its task loss (labels).

    The state returned is the one judged best, so the oracle's accuracy is exactly that
    of its chosen steps (an upper bound for every controller). `steps` reports the
    chosen counts, so mean k reads as the oracle's plan; its compute is k_max steps and
    k_max + 1 task-loss forwards for every sample.
    """

    uses_labels = True

    def __init__(self, options: OracleOptions) -> None:
        super().__init__(options)

    def adapt(self, model: AdaptableModel, batch: Batch, objective: InnerObjective) -> Adaptation:
        best, state, adaptation = best_steps(
            model, batch, objective, self.options, self.options.k_max, gamma=self.gate
        )
        return Adaptation(state, best, adaptation.stats, adaptation.difficulty, adaptation.flags)


def difficulty_of(model: AdaptableModel, batch: Batch, objective: InnerObjective) -> Tensor:
    """The ponder signal: each sample's inner loss at a fresh state, before adapting."""
    with torch.no_grad():
        reference = model(batch)
        return objective(model, batch, model.init_adapter_state(len(batch)), reference)


def best_steps(
    model: AdaptableModel,
    batch: Batch,
    objective: InnerObjective,
    options: InnerLoopOptions,
    k_max: int,
    gamma: Callable[[Tensor], Tensor] | None = None,
) -> tuple[Tensor, AdapterState, Adaptation]:
    """Run k_max steps for every sample and keep, per sample, the step with the lowest
    task loss (the earliest on ties): `(best k (B,), the state there, the full run)`."""
    if batch.labels is None:
        raise ConfigError("the oracle needs labels: this batch has none")
    if not model.per_sample:
        raise ConfigError("the oracle picks a step per sample: it needs a per-sample adapter")
    fresh = model.init_adapter_state(len(batch))
    with torch.no_grad():
        reference = model(batch)
    best_loss = model.sample_losses(reference, batch)
    best = torch.zeros(len(batch), dtype=torch.long, device=best_loss.device)
    chosen = {key: value.detach().clone() for key, value in fresh.items()}

    def record(step: int, state: AdapterState) -> None:
        nonlocal best_loss, best
        with torch.no_grad():
            loss = model.sample_losses(model(batch, state), batch)
        better = loss < best_loss
        best_loss = torch.where(better, loss, best_loss)
        best = torch.where(better, torch.full_like(best, step), best)
        for key, value in state.items():
            mask = better.reshape(better.shape + (1,) * (value.dim() - 1))
            chosen[key] = torch.where(mask, value.detach(), chosen[key])

    steps = torch.full((len(batch),), k_max, device=best.device)
    run = adapt_batch(
        model,
        batch,
        objective,
        options,
        steps,
        initial_state=fresh,
        gamma=gamma,
        on_step=record,
        reference=reference,
    )
    return best, chosen, run
