"""The selective scan of Mamba in pure PyTorch: runs anywhere and differentiates twice.

The fused CUDA scan of mamba-ssm takes one A for the whole batch and has no double
backward; per-sample adapters and second-order meta-learning need this path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def selective_scan(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    dt_bias: Tensor | None = None,
    dt_softplus: bool = False,
    initial_state: Tensor | None = None,
    return_last_state: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Run `h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t`, `y_t = C_t . h_t + D x_t`, gated by silu(z).

    Shapes: x, dt, z `(b, L, d)`; A `(d, N)` or per sample `(b, d, N)`; B, C `(b, L, N)`;
    D, dt_bias `(d,)` or `(b, d)`; initial_state `(b, d, N)`. Returns y `(b, L, d)`, and
    the state after the last token `(b, d, N)` if `return_last_state`.

    All per-token terms are computed in single vectorised ops; only the recurrence itself
    loops over time, over `unbind` views, so the backward stays linear in L.
    """
    dt = _prepare_dt(x, dt, dt_bias, dt_softplus)
    A_ = A if A.dim() == 2 else A.unsqueeze(1)
    decay = torch.exp(dt.unsqueeze(-1) * A_)  # (b, L, d, N)
    drive = (dt * x).unsqueeze(-1) * B.unsqueeze(2)  # (b, L, d, N)
    states = []
    h = initial_state
    for decay_t, drive_t in zip(decay.unbind(1), drive.unbind(1), strict=True):
        h = drive_t if h is None else torch.addcmul(drive_t, decay_t, h)
        states.append(h)
    hs = torch.stack(states, dim=1)  # (b, L, d, N)
    y = (hs @ C.unsqueeze(-1)).squeeze(-1)
    return _finish(y, x, D, z, hs[:, -1], return_last_state)


def selective_scan_reference(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    dt_bias: Tensor | None = None,
    dt_softplus: bool = False,
    initial_state: Tensor | None = None,
    return_last_state: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """The same scan as one obviously correct loop per token: the tests' ground truth."""
    dt = _prepare_dt(x, dt, dt_bias, dt_softplus)
    batch, length, d_inner = x.shape
    A_ = A.expand(batch, *A.shape[-2:])
    h = x.new_zeros(batch, d_inner, A.shape[-1]) if initial_state is None else initial_state
    ys = []
    for t in range(length):
        dt_t = dt[:, t].unsqueeze(-1)  # (b, d, 1)
        h = torch.exp(dt_t * A_) * h + dt_t * B[:, t].unsqueeze(1) * x[:, t].unsqueeze(-1)
        ys.append((h * C[:, t].unsqueeze(1)).sum(-1))
    return _finish(torch.stack(ys, dim=1), x, D, z, h, return_last_state)


def _per_channel(value: Tensor) -> Tensor:
    """Broadcast a `(d,)` or per-sample `(b, d)` vector against `(b, L, d)`."""
    return value if value.dim() == 1 else value.unsqueeze(1)


def _prepare_dt(x: Tensor, dt: Tensor, dt_bias: Tensor | None, dt_softplus: bool) -> Tensor:
    if x.dim() != 3 or dt.shape != x.shape:
        raise ValueError(f"x and dt must both be (batch, L, d_inner); got {x.shape}, {dt.shape}")
    if dt_bias is not None:
        dt = dt + _per_channel(dt_bias)
    return F.softplus(dt) if dt_softplus else dt


def _finish(
    y: Tensor, x: Tensor, D: Tensor | None, z: Tensor | None, last: Tensor, return_last: bool
) -> Tensor | tuple[Tensor, Tensor]:
    if D is not None:
        y = y + x * _per_channel(D)
    if z is not None:
        y = y * F.silu(z)
    return (y, last) if return_last else y
