"""Functional inner optimisers over adapter-state rows, with per-row statistics.

Every tensor here is "row form": a leading dimension of rows, one row per sample when
adaptation is per sample, a single row when the state is shared. Optimiser buffers are
plain tensors in a dict keyed like the state, so rows can be selected, updated and
written back without any `torch.optim` object that would couple samples.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


def row_norm(tensors: Mapping[str, Tensor]) -> Tensor:
    """The Euclidean norm of each row over all tensors: `(R,)`."""
    squares = [t.flatten(1).pow(2).sum(1) for t in tensors.values()]
    return torch.stack(squares).sum(0).sqrt()


def per_row(values: Tensor, like: Tensor) -> Tensor:
    """`(R,)` values shaped to broadcast against a row-form tensor."""
    return values.reshape(values.shape + (1,) * (like.dim() - values.dim()))


def direction(
    optimizer: str,
    grads: Mapping[str, Tensor],
    buffers: Mapping[str, Tensor],
    step: int,
    momentum: float,
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """The update direction for `grads` at 0-based `step`, and the new buffers.

    SGD: the gradient, or the heavy-ball buffer `m = momentum * m + g`. Adam: the
    bias-corrected `m / (sqrt(v) + eps)`; all rows in a step have taken the same number
    of steps (finished rows leave the working set), so one bias correction fits all.
    """
    if optimizer == "sgd":
        if momentum == 0:
            return dict(grads), {}
        new = {
            key: g if f"{key}:m" not in buffers else momentum * buffers[f"{key}:m"] + g
            for key, g in grads.items()
        }
        return new, {f"{key}:m": m for key, m in new.items()}
    beta1, beta2 = ADAM_BETAS
    updates: dict[str, Tensor] = {}
    new_buffers: dict[str, Tensor] = {}
    for key, g in grads.items():
        m = buffers.get(f"{key}:m", torch.zeros_like(g)) * beta1 + (1 - beta1) * g
        v = buffers.get(f"{key}:v", torch.zeros_like(g)) * beta2 + (1 - beta2) * g * g
        m_hat = m / (1 - beta1 ** (step + 1))
        v_hat = v / (1 - beta2 ** (step + 1))
        updates[key] = m_hat / (v_hat.sqrt() + ADAM_EPS)
        new_buffers[f"{key}:m"], new_buffers[f"{key}:v"] = m, v
    return updates, new_buffers
