"""The scan in plain PyTorch ops with a hand-written backward that recomputes states.

Forward keeps only the inputs and each chunk's starting state, never `(b, L, d, N)`
tensors; backward recomputes a chunk's states and runs the adjoint recurrence through
it. About 3x the autograd loop on CPU, memory growing with the chunk, not L; but
differentiable once only.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from attd_core.backbones.scan.precision import in_float32

CHUNK = 16
"""Tokens per chunk: the chunk's intermediates stay small enough to be reused, not refetched."""


@in_float32
def scan(
    x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, initial_state: Tensor | None
) -> tuple[Tensor, Tensor]:
    """`h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t`, `y_t = C_t . h_t`; returns y and the last h."""
    return _RecomputingScan.apply(x, dt, A, B, C, initial_state)


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
