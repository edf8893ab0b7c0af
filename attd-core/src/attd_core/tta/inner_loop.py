"""The inner loop: SGD on the adapter state only, one batched loop with per-sample step counts.

Every state tensor carries a leading batch dimension when adaptation is per sample, and
nothing couples samples, so one backward pass of the summed per-sample loss gives each
sample its own gradient. A sample whose step count is reached is masked out of the update.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from attd_core.interfaces import AdaptableModel, Adaptation, AdapterState, Batch, InnerObjective


def run_inner_loop(
    model: AdaptableModel,
    batch: Batch,
    objective: InnerObjective,
    steps: Tensor,
    lr: float,
    grad_clip: float | None = None,
) -> Adaptation:
    """Adapt a fresh state for `batch`, sample i taking `steps[i]` SGD steps.

    Episodic: the state starts from `model.init_adapter_state` on every call. Base weights
    receive no gradient (only the state's tensors are differentiated). A shared state (no
    batch dimension) is allowed when every sample takes the same number of steps.
    """
    size = len(batch)
    steps = steps.to(device=batch.inputs.device, dtype=torch.long)
    state = {key: value.detach() for key, value in model.init_adapter_state(size).items()}
    per_sample = model.per_sample
    if not per_sample and steps.unique().numel() > 1:
        raise ValueError(
            "per-sample step counts need a per-sample adapter state (leading batch dimension)"
        )
    with torch.no_grad():
        reference = model(batch)
    totals: dict[str, Tensor] = {}
    with torch.enable_grad():
        for step in range(int(steps.max()) if size else 0):
            active = steps > step
            params = [t.requires_grad_() for t in state.values()]
            losses = objective(model(batch, state), batch, reference)
            grads = torch.autograd.grad(losses.sum(), params, materialize_grads=True)
            with torch.no_grad():
                state, step_stats = _update(model, state, grads, active, per_sample, lr, grad_clip)
            for key, value in step_stats.items():
                totals[key] = totals.get(key, 0) + value
    stats = {key: float(value) for key, value in totals.items()}
    return Adaptation(state=state, steps=steps.clone(), stats=stats)


def _update(
    model: AdaptableModel,
    state: AdapterState,
    grads: Sequence[Tensor],
    active: Tensor,
    per_sample: bool,
    lr: float,
    grad_clip: float | None,
) -> tuple[AdapterState, dict[str, Tensor]]:
    """One clipped SGD step and projection, applied to the active samples only."""
    if per_sample:
        norm = torch.stack([g.flatten(1).pow(2).sum(1) for g in grads]).sum(0).sqrt()
    else:
        norm = torch.stack([g.pow(2).sum() for g in grads]).sum().sqrt()
        active = active.any()
    stats: dict[str, Tensor] = {}
    scale = torch.ones_like(norm)
    if grad_clip is not None:
        clipped = norm > grad_clip
        scale = torch.where(clipped, grad_clip / norm.clamp_min(grad_clip), scale)
        stats["grad_clipped"] = (clipped & active).sum()

    def per_row(values: Tensor, like: Tensor) -> Tensor:
        return values.reshape(values.shape + (1,) * (like.dim() - values.dim()))

    stepped = {
        key: torch.where(per_row(active, t), t - lr * per_row(scale, t) * g, t)
        for (key, t), g in zip(state.items(), grads, strict=True)
    }
    projected, guard_stats = model.project_adapter_state(stepped)
    state = {key: torch.where(per_row(active, t), projected[key], t) for key, t in stepped.items()}
    return state, {**stats, **guard_stats}
