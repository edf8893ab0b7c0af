"""The batched inner loop: every sample adapts its own state for its own number of steps.

All samples run in one loop. A state tensor carries a leading batch dimension when
adaptation is per sample and nothing couples samples, so one backward of the summed
per-sample loss gives each sample its own gradient; a sample leaves the working batch
once its steps are done, so compute follows the sum of the k_i, not B * max k.
Guards act per sample (per row): gradient clipping, trust region, damping, rollback of
a step that raised the inner loss, non-finite revert, entropy filtering, and the
adapter's own projection. A shared state (no batch dimension) is one row for the whole
batch, adapted on the mean loss.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch
from torch import Tensor

from attd_core.interfaces import (
    AdaptableModel,
    Adaptation,
    AdapterState,
    Batch,
    InnerObjective,
    ModelOutput,
)
from attd_core.options import InnerLoopOptions
from attd_core.tta.inner_optim import direction, per_row, row_norm
from attd_core.tta.selector import select_keys

StepPlan = Tensor | Callable[[Tensor], Tensor]
"""Steps per sample `(B,)`, or a function of the difficulty (inner loss before adapting)."""


def adapt_batch(
    model: AdaptableModel,
    batch: Batch,
    objective: InnerObjective,
    options: InnerLoopOptions,
    steps: StepPlan,
    *,
    initial_state: AdapterState | None = None,
    gamma: Callable[[Tensor], Tensor] | None = None,
    on_step: Callable[[int, AdapterState], None] | None = None,
    differentiable: bool = False,
    create_graph: bool = False,
    reference: ModelOutput | None = None,
) -> Adaptation:
    """Adapt a state for `batch`, sample i taking up to `steps[i]` inner steps.

    The state starts from `initial_state` or a fresh `model.init_adapter_state` (episodic).
    `gamma` maps each row's inner loss to its damping (a learned gate); otherwise
    `options.damping` is used. `on_step(s, state)` sees the whole batch's state after
    step s (for oracles and training regimes). With `differentiable`, updates stay in the
    autograd graph (training regimes); `create_graph` makes them second order.
    `reference` is `model(batch)` without gradients, for a caller that has already run
    it: otherwise the loop takes it from the objective's own forward at the fresh state
    where it can (see `_Unadapted`), and runs it only where it cannot.
    """
    loop = _Loop(
        model, batch, objective, options, initial_state, gamma, differentiable, create_graph
    )
    return loop.run(steps, on_step, reference)


class _Loop:
    """One call of `adapt_batch`; the working state lives in row form (see inner_optim).

    Everything the loop keeps is set here: the configuration, the fresh state, and the
    per-row state the steps and guards update (a row per sample, or one shared row).
    """

    def __init__(
        self,
        model: AdaptableModel,
        batch: Batch,
        objective: InnerObjective,
        options: InnerLoopOptions,
        initial_state: AdapterState | None,
        gamma: Callable[[Tensor], Tensor] | None,
        differentiable: bool,
        create_graph: bool,
    ) -> None:
        self.model, self.batch, self.objective, self.options = model, batch, objective, options
        self.gamma, self.differentiable, self.create_graph = gamma, differentiable, create_graph
        self.per_sample = model.per_sample
        fresh = initial_state if initial_state is not None else model.init_adapter_state(len(batch))
        if not differentiable:
            fresh = {key: value.detach() for key, value in fresh.items()}
        self.fresh: AdapterState = fresh  # what the difficulty is measured at
        self.own_fresh = initial_state is None  # the model's own fresh state changes nothing
        self.selected = select_keys(options.adapt, model.adapter_owners(fresh))  # adapted keys
        # Per row: where it started (the trust region's centre), its state before its
        # last step (for rollback and revert), its last inner loss, guard flags and
        # optimiser buffers.
        self.initial: AdapterState = {
            key: value if self.per_sample else value.unsqueeze(0) for key, value in fresh.items()
        }
        self.before: AdapterState = dict(self.initial)
        n_rows, device = (len(batch) if self.per_sample else 1), batch.inputs.device
        self.last_loss = torch.full((n_rows,), math.inf, device=device)
        self.flags = {
            name: torch.zeros(n_rows, dtype=torch.bool, device=device)
            for name in ("nonfinite", "rolled_back")
        }
        self.buffers: dict[str, Tensor] = {}
        self.filter_flags: dict[str, Tensor] = {}  # per sample, set by the entropy filter
        self.stats: dict[str, float] = {}  # batch totals of guard counters

    def count(self, key: str, value: Tensor | int) -> None:
        self.stats[key] = self.stats.get(key, 0.0) + float(value)

    def model_form(self, rows: AdapterState) -> AdapterState:
        return rows if self.per_sample else {key: value[0] for key, value in rows.items()}

    def run(
        self,
        steps: StepPlan,
        on_step: Callable[[int, AdapterState], None] | None,
        reference: ModelOutput | None = None,
    ) -> Adaptation:
        model, batch, size = self.model, self.batch, len(self.batch)
        device = batch.inputs.device
        if reference is None:
            reference = _Unadapted(model, batch)
            if not self.own_fresh:  # a carried state is not the unadapted model
                reference = reference.output
        difficulty = None
        if callable(steps):
            with torch.no_grad():
                recorder = _recording(model, batch, self.fresh, reference)
                difficulty = self.objective(recorder, batch, self.fresh, reference).detach()
            steps = steps(difficulty)
        planned = steps.to(device=device, dtype=torch.long).clone()
        weights = self._entropy_filter(reference, planned)
        if not self.per_sample:
            if planned.unique().numel() > 1:
                raise ValueError(
                    "per-sample step counts need a per-sample adapter state "
                    "(leading batch dimension); this adapter's state is shared"
                )
            planned = planned[:1]
        rows = dict(self.initial)
        taken = torch.zeros(planned.shape[0], dtype=torch.long, device=device)
        done = planned <= 0
        step = 0
        while not bool(done.all()):
            index = (~done).nonzero().squeeze(1)
            rows, losses, finished = self._step(rows, index, step, reference, weights)
            if difficulty is None and step == 0 and index.numel() == size:
                difficulty = losses.detach()
            taken = taken.index_add(0, index, torch.ones_like(index))
            done = done.index_put((index,), finished | (taken[index] >= planned[index]))
            step += 1
            if on_step is not None:
                on_step(step, self.model_form(rows))
        if self.options.rollback:
            rows = self._final_rollback(rows, taken, reference, weights)
        steps_taken = taken if self.per_sample else taken.expand(size)
        flags = {
            name: flag if self.per_sample else flag.expand(size)
            for name, flag in self.flags.items()
        }
        state = None if int(taken.sum()) == 0 else self.model_form(rows)
        if state is not None and not self.differentiable:
            state = {key: value.detach() for key, value in state.items()}
        flags = {**flags, **self.filter_flags}
        return Adaptation(state, steps_taken.clone(), self.stats, difficulty, flags)

    # -- one step ------------------------------------------------------------------------

    def _working(
        self, rows: AdapterState, index: Tensor, reference: Reference, weights: Tensor
    ) -> tuple[Batch, Reference, AdapterState, Tensor]:
        """The active rows' batch, reference, state and sample weights."""
        if not self.per_sample or index.numel() == len(self.batch):
            return self.batch, reference, rows, weights
        sub_rows = {key: value.index_select(0, index) for key, value in rows.items()}
        if isinstance(reference, _Unadapted):
            reference = reference.output
        return (
            self.batch.select(index),
            _select_output(reference, index),
            sub_rows,
            weights.index_select(0, index),
        )

    def _row_losses(
        self,
        batch: Batch,
        reference: Reference,
        rows: AdapterState,
        weights: Tensor,
        fresh: bool = False,
    ) -> Tensor:
        """The rows' inner losses; `fresh` rows are at the fresh state, where the
        objective's forward on the whole batch may serve as the reference."""
        state = self.model_form(rows)
        model = _recording(self.model, batch, state, reference) if fresh else self.model
        losses = self.objective(model, batch, state, reference)
        if self.per_sample:
            return losses
        return ((losses * weights).sum() / weights.sum().clamp_min(1)).unsqueeze(0)

    def _step(
        self,
        rows: AdapterState,
        index: Tensor,
        step: int,
        reference: Reference,
        weights: Tensor,
    ) -> tuple[AdapterState, Tensor, Tensor]:
        """One inner step for the rows at `index`; returns the new rows, the rows' losses
        and which of them finished early (reverted or rolled back)."""
        options = self.options
        batch, sub_reference, sub_rows, sub_weights = self._working(rows, index, reference, weights)
        sub_rows = {
            key: (
                value.detach().requires_grad_()
                if key in self.selected and not value.requires_grad
                else value
            )
            for key, value in sub_rows.items()
        }
        with torch.enable_grad():
            fresh = step == 0 and batch is self.batch
            losses = self._row_losses(batch, sub_reference, sub_rows, sub_weights, fresh)
            params = [sub_rows[key] for key in self.selected]
            grads = torch.autograd.grad(
                losses.sum(), params, create_graph=self.create_graph, materialize_grads=True
            )
        grads = dict(zip(self.selected, grads, strict=True))
        norm = row_norm(grads)
        bad = torch.zeros_like(index, dtype=torch.bool)
        if options.nonfinite_guard:
            bad = ~(torch.isfinite(losses.detach()) & torch.isfinite(norm))
            grads = {key: torch.nan_to_num(g, 0.0, 0.0, 0.0) for key, g in grads.items()}
            self.count("nonfinite", bad.sum())
        raised = torch.zeros_like(bad)
        if options.rollback and step > 0:
            raised = ~bad & (losses.detach() > self.last_loss.index_select(0, index))
            self.count("rolled_back", raised.sum())
        keep = ~(bad | raised)

        with torch.set_grad_enabled(self.differentiable):
            stepped = self._update(sub_rows, grads, norm, keep, index, step, losses)
            before = {key: value.index_select(0, index) for key, value in self.before.items()}
            revert = bad | raised
            new_rows = {
                key: torch.where(per_row(revert, value), before[key], value)
                for key, value in stepped.items()
            }
        self.before = {
            key: value.index_copy(
                0, index, sub_rows[key].detach() if not self.differentiable else sub_rows[key]
            )
            for key, value in self.before.items()
        }
        self.last_loss = self.last_loss.index_copy(0, index, losses.detach())
        for name, flag in (("nonfinite", bad), ("rolled_back", raised)):
            self.flags[name] = self.flags[name].index_copy(0, index, self.flags[name][index] | flag)
        rows = {key: value.index_copy(0, index, new_rows[key]) for key, value in rows.items()}
        return rows, losses, revert

    def _update(
        self,
        rows: AdapterState,
        grads: dict[str, Tensor],
        norm: Tensor,
        keep: Tensor,
        index: Tensor,
        step: int,
        losses: Tensor,
    ) -> AdapterState:
        """Clip, take the optimiser's step with damping, project; rows not kept unchanged."""
        options = self.options
        if options.grad_clip is not None:
            clipped = norm > options.grad_clip
            scale = torch.where(clipped, options.grad_clip / norm.clamp_min(options.grad_clip), 1.0)
            grads = {key: g * per_row(scale, g) for key, g in grads.items()}
            self.count("grad_clipped", (clipped & keep).sum())
        buffers = {key: value.index_select(0, index) for key, value in self.buffers.items()}
        moves, new_buffers = direction(options.optimizer, grads, buffers, step, options.momentum)
        self._store_buffers(new_buffers, index, keep)
        gamma = (
            self.gamma(losses.detach())
            if self.gamma is not None
            else torch.full_like(norm, options.damping)
        )
        if self.gamma is not None or options.damping < 1:
            self.count("damped", (keep & (gamma.detach() < 1)).sum())
        stepped = dict(rows)
        for key, move in moves.items():
            rate = per_row(gamma * options.lr * keep.to(move.dtype), move)
            stepped[key] = rows[key] - rate * move
        if options.trust_region is not None:
            stepped = self._trust_region(stepped, index, keep)
        projected, counts = self.model.project_adapter_state(self.model_form(stepped))
        for key, value in counts.items():
            self.count(key, value)
        if not self.per_sample:
            projected = {key: value.unsqueeze(0) for key, value in projected.items()}
        return {
            key: torch.where(per_row(keep, value), projected[key], rows[key])
            for key, value in stepped.items()
        }

    def _store_buffers(self, new: dict[str, Tensor], index: Tensor, keep: Tensor) -> None:
        for key, value in new.items():
            value = value.detach()
            current = self.buffers.get(key)
            if current is None:
                current = torch.zeros(
                    (self.last_loss.shape[0], *value.shape[1:]),
                    dtype=value.dtype,
                    device=value.device,
                )
            old = current.index_select(0, index)
            self.buffers[key] = current.index_copy(
                0, index, torch.where(per_row(keep, value), value, old)
            )

    def _trust_region(self, rows: AdapterState, index: Tensor, keep: Tensor) -> AdapterState:
        """Pull each row's selected tensors back to ||state - initial|| <= rho."""
        rho = self.options.trust_region
        initial = {key: self.initial[key].index_select(0, index) for key in self.selected}
        moved = {key: rows[key] - initial[key] for key in self.selected}
        distance = row_norm(moved)
        over = distance > rho
        scale = torch.where(over, rho / distance.clamp_min(rho), 1.0)
        self.count("trust_region", (over & keep).sum())
        result = dict(rows)
        for key in self.selected:
            result[key] = initial[key] + moved[key] * per_row(scale, moved[key])
        return result

    # -- guards around the loop ----------------------------------------------------------

    def _entropy_filter(self, reference: Reference, planned: Tensor) -> Tensor:
        """Zero the steps (or the loss weight, for a shared state) of uncertain samples."""
        weights = torch.ones(planned.shape[0], device=planned.device)
        c = self.options.entropy_filter
        if c is None:
            return weights
        logits = reference.logits
        if logits.dim() != 2:
            raise ValueError(
                f"entropy_filter needs classification logits (B, C); got {tuple(logits.shape)}"
            )
        log_p = torch.log_softmax(logits.float(), dim=-1)
        entropy = -(log_p.exp() * log_p).sum(-1)
        uncertain = entropy > c * math.log(logits.shape[-1])
        if self.per_sample or bool(uncertain.all()):
            planned.masked_fill_(uncertain, 0)
        self.count("entropy_filtered", uncertain.sum())
        self.filter_flags["entropy_filtered"] = uncertain
        return (~uncertain).to(weights.dtype)

    def _final_rollback(
        self, rows: AdapterState, taken: Tensor, reference: Reference, weights: Tensor
    ) -> AdapterState:
        """Check each row's last step too: undo it where it raised the inner loss."""
        candidates = (taken > 0) & ~self.flags["nonfinite"] & ~self.flags["rolled_back"]
        index = candidates.nonzero().squeeze(1)
        if index.numel() == 0:
            return rows
        batch, sub_reference, sub_rows, sub_weights = self._working(rows, index, reference, weights)
        with torch.no_grad():
            losses = self._row_losses(batch, sub_reference, sub_rows, sub_weights)
        raised = losses > self.last_loss.index_select(0, index)
        self.count("rolled_back", raised.sum())
        self.flags["rolled_back"] = self.flags["rolled_back"].index_copy(0, index, raised)
        return {
            key: value.index_copy(
                0,
                index,
                torch.where(
                    per_row(raised, sub_rows[key]),
                    self.before[key].index_select(0, index),
                    sub_rows[key],
                ),
            )
            for key, value in rows.items()
        }


def _select_output(output: ModelOutput, index: Tensor) -> ModelOutput:
    """The rows at `index` of every per-sample tensor in `output`."""

    def pick(value: Tensor | None) -> Tensor | None:
        return None if value is None else value.index_select(0, index)

    return dataclasses.replace(
        output,
        logits=pick(output.logits),
        features=pick(output.features),
        embedded=pick(output.embedded),
        pooled=pick(output.pooled),
    )


class _Unadapted:
    """`model(batch)`, the reference of a loop given none: run once at most, and only if read.

    The model's own fresh adapter state changes nothing (every adapter's contract,
    tests/attd_core/test_adapters.py), so an objective's forward of the whole batch at
    that state is this forward: `_recording` keeps its detached output as the reference,
    and the loop does not run the forward twice (a meta-training step saves one of its
    three). The forward runs on its own, without gradients, only when the reference is
    read before the objective has run it (an entropy filter, masked reconstruction's
    targets); an objective that never reads it (consistency) never pays for it. With
    dropout active (training) the reference is that forward's draw, not a second one.
    It reads as a `ModelOutput` (`reference.logits`); `output` is the `ModelOutput` itself.
    """

    def __init__(self, model: AdaptableModel, batch: Batch) -> None:
        self.model, self.batch = model, batch
        self.known: ModelOutput | None = None

    @property
    def output(self) -> ModelOutput:
        if self.known is None:
            with torch.no_grad():
                self.known = self.model(self.batch)
        return self.known

    def __getattr__(self, name: str) -> Tensor | None:
        return getattr(self.output, name)


Reference = ModelOutput | _Unadapted


class _Recorder:
    """The model for one objective call at the fresh state: its forward of the loop's
    batch at that state becomes the reference, if none is known yet."""

    def __init__(self, model: AdaptableModel, state: AdapterState, reference: _Unadapted) -> None:
        self.model, self.state, self.reference = model, state, reference

    def __getattr__(self, name: str) -> object:
        return getattr(self.model, name)

    def __call__(self, batch: Batch, adapter_state: AdapterState | None = None) -> ModelOutput:
        output = self.model(batch, adapter_state)
        seen = batch is self.reference.batch and adapter_state is self.state
        if seen and self.reference.known is None:
            self.reference.known = _detached(output)
        return output


def _recording(
    model: AdaptableModel, batch: Batch, state: AdapterState, reference: Reference
) -> AdaptableModel:
    """`model`, recording the reference while `reference` is still unknown (see `_Unadapted`)."""
    unknown = isinstance(reference, _Unadapted) and reference.known is None
    if unknown and batch is reference.batch:
        return _Recorder(model, state, reference)  # type: ignore[return-value]
    return model


def _detached(output: ModelOutput) -> ModelOutput:
    return dataclasses.replace(
        output,
        **{
            field.name: value.detach()
            for field in dataclasses.fields(output)
            if isinstance(value := getattr(output, field.name), Tensor)
        },
    )
