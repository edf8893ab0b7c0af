"""The selective scan of Mamba in pure PyTorch: runs anywhere, per-sample A included.

The fused CUDA scan of mamba-ssm takes one A for the whole batch; per-sample adapters
need this path. `selective_scan_reference` is the plain per-token loop the tests trust,
and the only path that differentiates twice for now.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

CHUNK = 16
"""Tokens per chunk: the chunk's intermediates stay small enough to be reused, not refetched."""


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

    The recurrence has a hand-written backward that recomputes states chunk by chunk
    instead of keeping `(b, L, d, N)` tensors for autograd: about 3x faster on CPU, but
    differentiable once only (second order needs `selective_scan_reference`).
    """
    dt = _prepare_dt(x, dt, dt_bias, dt_softplus)
    y, last = _RecomputingScan.apply(x, dt, A, B, C, initial_state)
    return _finish(y, x, D, z, last, return_last_state)


def _chunk_states(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
    """States and decays of one chunk in `(T, b, d, N)` layout, given the state before it."""
    dt_t = dt.transpose(0, 1).contiguous()
    decay = torch.exp(dt_t.unsqueeze(-1) * A)
    states = (dt_t * x.transpose(0, 1)).unsqueeze(-1) * B.transpose(0, 1).unsqueeze(2)
    states[0].addcmul_(decay[0], h)
    for t in range(1, states.shape[0]):
        states[t].addcmul_(decay[t], states[t - 1])
    return states, decay


class _RecomputingScan(torch.autograd.Function):
    """The recurrence `h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t`, `y_t = C_t . h_t`.

    Forward keeps only the inputs and each chunk's starting state; backward recomputes a
    chunk's states, runs the adjoint recurrence `g_t = C_t gy_t + exp(dt_{t+1} A) g_{t+1}`
    backwards through it, and turns `g` into every input's gradient.
    """

    @staticmethod
    def forward(ctx, x, dt, A, B, C, initial_state):
        batch, length, d_inner = x.shape
        A_ = A if A.dim() == 3 else A.unsqueeze(0)
        h = x.new_zeros(batch, d_inner, A.shape[-1]) if initial_state is None else initial_state
        y = x.new_empty(batch, length, d_inner)
        starts = []
        for s in range(0, length, CHUNK):
            e = min(s + CHUNK, length)
            starts.append(h)
            states, _ = _chunk_states(x[:, s:e], dt[:, s:e], A_, B[:, s:e], h)
            y[:, s:e] = torch.einsum("tbdn,btn->btd", states, C[:, s:e])
            h = states[-1]
        ctx.has_initial_state = initial_state is not None
        ctx.save_for_backward(x, dt, A, B, C, torch.stack(starts))
        return y, h.clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y, grad_last):
        x, dt, A, B, C, starts = ctx.saved_tensors
        length = x.shape[1]
        A_ = A if A.dim() == 3 else A.unsqueeze(0)
        grad_x, grad_dt = torch.empty_like(x), torch.empty_like(dt)
        grad_B, grad_C = torch.empty_like(B), torch.empty_like(C)
        grad_A = x.new_zeros(x.shape[0], *A.shape[-2:])
        carry = torch.zeros_like(starts[0]) if grad_last is None else grad_last.clone()
        for index in reversed(range(starts.shape[0])):
            s, e = index * CHUNK, min((index + 1) * CHUNK, length)
            xc, dtc, Bc, gyc = x[:, s:e], dt[:, s:e], B[:, s:e], grad_y[:, s:e]
            states, decay = _chunk_states(xc, dtc, A_, Bc, starts[index])
            gy_t, dt_t = gyc.transpose(0, 1), dtc.transpose(0, 1)
            grad_h = gy_t.unsqueeze(-1) * C[:, s:e].transpose(0, 1).unsqueeze(2)
            for t in reversed(range(grad_h.shape[0])):
                grad_h[t].add_(carry)
                carry = decay[t] * grad_h[t]
            grad_C[:, s:e] = torch.einsum("tbdn,tbd->btn", states, gy_t)
            grad_B[:, s:e] = torch.einsum("tbdn,tbd->btn", grad_h, dt_t * xc.transpose(0, 1))
            grad_drive = torch.einsum("tbdn,btn->tbd", grad_h, Bc)  # d/d(dt * x)
            previous = torch.cat([starts[index].unsqueeze(0), states[:-1]])
            grad_log_decay = grad_h.mul_(previous).mul_(decay)  # d/d(dt * A), reusing grad_h
            grad_A += torch.einsum("tbdn,tbd->bdn", grad_log_decay, dt_t)
            grad_x[:, s:e] = (grad_drive * dt_t).transpose(0, 1)
            grad_dt[:, s:e] = (
                grad_drive * xc.transpose(0, 1) + (grad_log_decay * A_).sum(-1)
            ).transpose(0, 1)
        if A.dim() == 2:
            grad_A = grad_A.sum(0)
        return grad_x, grad_dt, grad_A, grad_B, grad_C, carry if ctx.has_initial_state else None


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
