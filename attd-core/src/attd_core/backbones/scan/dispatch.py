"""One selective-scan API over several backends, chosen per call.

Every backend module in this package has `scan(x, dt, A, B, C, initial_state) -> (y, last)`
for the bare recurrence (dt already biased, softplus-ed and masked; D and the gate are
applied here), and imports what it needs at its top: a backend is available exactly
when its module imports. A module may define `accepts(x, A) -> bool` (device, dtype,
shared or per-sample A) and `TAKES_INITIAL_STATE = False` when it cannot start from a
given state. `auto` picks, in order, the first available backend of `AUTO_ORDER` that
accepts the call.
"""

from __future__ import annotations

import importlib
from functools import cache
from types import ModuleType

import torch.nn.functional as F
from torch import Tensor

from attd_core.errors import ConfigError

BACKENDS: dict[str, str] = {
    "reference": "attd_core.backbones.scan.reference",
    "recompute": "attd_core.backbones.scan.recompute",
    "numba": "attd_core.backbones.scan.numba_kernel",
    "chunked": "attd_core.backbones.scan.chunked",
    "mamba-ssm": "attd_core.backbones.scan.mamba_ssm",
}
"""Backend name -> module. `reference` is the tests' ground truth (twice differentiable);
`recompute` is plain PyTorch with a hand-written backward (once differentiable); `chunked`
is plain autograd, differentiable any number of times (second-order meta-learning);
`mamba-ssm` is the fused CUDA kernel (shared A, no initial state, once differentiable)."""

AUTO_ORDER: tuple[str, ...] = ("mamba-ssm", "numba", "recompute")
"""What `auto` tries, fastest first. Never `reference` (slow) nor `chunked`: it is slower
than the fused backends and only needed for second-order gradients, so ask for it by name."""


@cache
def _module(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(BACKENDS[name])
    except ImportError:
        return None


def available_backends() -> list[str]:
    """Backends whose module (and its dependencies) import on this machine."""
    return [name for name in BACKENDS if _module(name) is not None]


def _accepts(module: ModuleType, x: Tensor, A: Tensor, initial_state: Tensor | None) -> bool:
    if initial_state is not None and not getattr(module, "TAKES_INITIAL_STATE", True):
        return False
    accepts = getattr(module, "accepts", None)
    return accepts is None or accepts(x, A)


def resolve_backend(
    requested: str, x: Tensor, A: Tensor, initial_state: Tensor | None = None
) -> str:
    """The backend that will run a call: `requested`, or for `auto` the best that accepts it.

    Pass the call's `initial_state` too: some backends (mamba-ssm) cannot start from one.
    """
    if requested == "auto":
        for name in AUTO_ORDER:
            module = _module(name)
            if module is not None and _accepts(module, x, A, initial_state):
                return name
        raise ConfigError(f"no scan backend accepts this call; available: {available_backends()}")
    if requested not in BACKENDS:
        raise ConfigError(f"unknown scan backend {requested!r}; known: auto, {', '.join(BACKENDS)}")
    module = _module(requested)
    if module is None:
        raise ConfigError(
            f"scan backend {requested!r} is not available here (its module or dependency "
            f"does not import); available: {', '.join(available_backends())}"
        )
    if not _accepts(module, x, A, initial_state):
        given = "an" if initial_state is not None else "no"
        raise ConfigError(
            f"scan backend {requested!r} cannot run this call (device {x.device.type}, "
            f"{x.dtype}, A of shape {tuple(A.shape)}, {given} initial state); "
            f"available: {', '.join(available_backends())}"
        )
    return requested


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
    mask: Tensor | None = None,
    backend: str = "auto",
) -> Tensor | tuple[Tensor, Tensor]:
    """Run `h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t`, `y_t = C_t . h_t + D x_t`, gated by silu(z).

    Shapes: x, dt, z `(b, L, d)`; A `(d, N)` or per sample `(b, d, N)`; B, C `(b, L, N)`;
    D, dt_bias `(d,)` or `(b, d)`; initial_state `(b, d, N)`; mask `(b, L)`, True on real
    tokens. A masked token leaves the state unchanged (its dt is zeroed) and outputs 0,
    so the last state is the one after the last real token. Returns y `(b, L, d)`, and
    the last state `(b, d, N)` if `return_last_state`.
    """
    name = resolve_backend(backend, x, A, initial_state)
    dt = _prepare_dt(x, dt, dt_bias, dt_softplus)
    if mask is not None:
        dt = dt * mask.unsqueeze(-1).to(dt.dtype)
    y, last = _module(name).scan(x, dt, A, B, C, initial_state)
    if D is not None:
        y = y + x * _per_channel(D)
    if z is not None:
        y = y * F.silu(z)
    if mask is not None:
        y = y * mask.unsqueeze(-1).to(y.dtype)
    return (y, last) if return_last_state else y


def _per_channel(value: Tensor) -> Tensor:
    """Broadcast a `(d,)` or per-sample `(b, d)` vector against `(b, L, d)`."""
    return value if value.dim() == 1 else value.unsqueeze(1)


def _prepare_dt(x: Tensor, dt: Tensor, dt_bias: Tensor | None, dt_softplus: bool) -> Tensor:
    if x.dim() != 3 or dt.shape != x.shape:
        raise ValueError(f"x and dt must both be (batch, L, d_inner); got {x.shape}, {dt.shape}")
    if dt_bias is not None:
        dt = dt + _per_channel(dt_bias)
    return F.softplus(dt) if dt_softplus else dt
