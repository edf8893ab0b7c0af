"""The scan as one obviously correct loop per token: the ground truth every backend is tested
against, and (being plain autograd) differentiable any number of times."""

from __future__ import annotations

import torch
from torch import Tensor


def scan(
    x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, initial_state: Tensor | None
) -> tuple[Tensor, Tensor]:
    """`h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t`, `y_t = C_t . h_t`; returns y and the last h."""
    batch, length, d_inner = x.shape
    A_ = A.expand(batch, *A.shape[-2:])
    h = x.new_zeros(batch, d_inner, A.shape[-1]) if initial_state is None else initial_state
    ys = []
    for t in range(length):
        dt_t = dt[:, t].unsqueeze(-1)  # (b, d, 1)
        h = torch.exp(dt_t * A_) * h + dt_t * B[:, t].unsqueeze(1) * x[:, t].unsqueeze(-1)
        ys.append((h * C[:, t].unsqueeze(1)).sum(-1))
    return torch.stack(ys, dim=1), h
