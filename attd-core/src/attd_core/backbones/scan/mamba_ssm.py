"""The scan by mamba-ssm's fused CUDA kernel (`selective_scan_fn`), for CUDA tensors.

Imported at the top, so this backend is available exactly when mamba-ssm imports. The
kernel's limits shape `accepts`: one A `(d, N)` for the whole batch (per-sample Delta-SSM
adapters need another backend), no initial state (`TAKES_INITIAL_STATE`), float32/fp16/bf16
inputs with A in float32, `N <= 256`; and it cannot be differentiated twice. D, the gate and
the mask are applied by the dispatcher, and dt arrives biased and softplus-ed, so the kernel
runs the bare recurrence (`delta_softplus=False`). `causal_conv1d` belongs to the Mamba block.
"""

from __future__ import annotations

import torch
from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
from torch import Tensor

TAKES_INITIAL_STATE = False
"""`selective_scan_fn` always starts from a zero state: the dispatcher refuses calls with one."""

_INPUT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_MAX_STATE = 256


def is_cuda(x: Tensor) -> bool:
    """Whether `x` lives where the kernel runs; a function of its own so tests can fake a GPU."""
    return x.is_cuda


def accepts(x: Tensor, A: Tensor) -> bool:
    """CUDA tensors of a kernel dtype, with one A `(d, N)` shared by the batch."""
    return is_cuda(x) and A.dim() == 2 and A.shape[-1] <= _MAX_STATE and x.dtype in _INPUT_DTYPES


def scan(
    x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, initial_state: Tensor | None
) -> tuple[Tensor, Tensor]:
    """`h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t`, `y_t = C_t . h_t`; returns y and the last h.

    mamba-ssm wants channels before tokens: x, dt `(b, d, L)` and B, C `(b, N, L)`.
    """
    if initial_state is not None:
        raise ValueError("mamba-ssm's selective_scan_fn cannot start from an initial state")
    dtype = x.dtype
    y, last = selective_scan_fn(
        x.transpose(1, 2),
        dt.to(dtype).transpose(1, 2),
        A.float(),
        B.to(dtype).transpose(1, 2),
        C.to(dtype).transpose(1, 2),
        delta_softplus=False,
        return_last_state=True,
    )
    return y.transpose(1, 2), _NoGradientThroughLastState.apply(last.to(dtype))


class _NoGradientThroughLastState(torch.autograd.Function):
    """Identity that fails loudly in backward: mamba-ssm drops the gradient of the last state
    (its backward ignores it), which would otherwise give silently wrong gradients."""

    @staticmethod
    def forward(ctx, last: Tensor) -> Tensor:
        return last.view_as(last)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        raise RuntimeError(
            "mamba-ssm's selective_scan_fn cannot differentiate through the last state; "
            "use scan backend 'recompute' or 'chunked' for losses that depend on it"
        )
