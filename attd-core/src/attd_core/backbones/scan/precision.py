"""Low-precision inputs run in float32: bf16 or fp16 rounding would compound over tokens."""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import Tensor

Scan = Callable[..., tuple[Tensor, Tensor]]


def in_float32(scan: Scan) -> Scan:
    """Run `scan(x, dt, A, B, C, initial_state)` in at least float32; cast results back."""

    @functools.wraps(scan)
    def wrapper(
        x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, initial_state: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        dtype = x.dtype
        work = torch.promote_types(dtype, torch.float32)
        tensors = (x, dt, A, B, C, initial_state)
        y, last = scan(*(None if t is None else t.to(work) for t in tensors))
        return y.to(dtype), last.to(dtype)

    return wrapper
