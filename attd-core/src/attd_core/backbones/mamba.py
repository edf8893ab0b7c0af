"""The Mamba backbone, with adapter slots on each layer's A, dt bias and D.

Adapters never wrap or mutate modules: the backbone receives an adapter state (a flat
dict of tensors, see `attd_core.AdapterState`) on every call and adds the deltas to its
parameters inside each block, so one set of base weights serves any number of states.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attd_core.backbones.scan import selective_scan
from attd_core.interfaces import AdapterSlot, AdapterState, ModelOutput
from attd_core.options import MambaOptions

A_UPPER_BOUND = -1e-4
"""Adapted A entries are clamped to at most this, so every mode stays strictly decaying."""

SLOT_PARAMETERS = ("A", "dt_bias", "D")
"""The per-layer parameters an adapter state may hold deltas for: `layers.{i}.<name>`."""

LOW_RANK_FACTORS = ("U", "V")


def slot_delta(state: AdapterState, slot: str, base_shape: torch.Size) -> Tensor | None:
    """The delta a state holds for `slot`: dense (`slot`) plus low-rank (`slot.U @ slot.V`).

    Each tensor may carry a leading batch dimension (one delta per sample); the result
    broadcasts against the base either way. None when the state has nothing for `slot`.
    """
    delta = state.get(slot)
    u, v = (state.get(f"{slot}.{factor}") for factor in LOW_RANK_FACTORS)
    if (u is None) != (v is None):
        raise ValueError(f"adapter state holds only one of {slot}.U and {slot}.V")
    if u is not None:
        delta = u @ v if delta is None else delta + u @ v
    if delta is not None and (
        delta.dim() not in (len(base_shape), len(base_shape) + 1)
        or delta.shape[delta.dim() - len(base_shape) :] != base_shape
    ):
        raise ValueError(
            f"adapter delta for {slot} has shape {tuple(delta.shape)}; expected "
            f"{tuple(base_shape)}, optionally with a leading batch dimension"
        )
    return delta


class MambaBlock(nn.Module):
    """One Mamba mixer (specs/attd.md): projections, causal conv, selective scan, gate."""

    def __init__(self, options: MambaOptions) -> None:
        super().__init__()
        self.d_model = options.d_model
        self.d_inner = options.expand * options.d_model
        self.d_state = options.d_state
        self.dt_rank = options.dt_rank or math.ceil(options.d_model / 16)
        self.in_proj = nn.Linear(self.d_model, 2 * self.d_inner, bias=False)
        self.conv1d = nn.Conv1d(
            self.d_inner,
            self.d_inner,
            kernel_size=options.d_conv,
            groups=self.d_inner,
            padding=options.d_conv - 1,
        )
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * self.d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        self.out_proj = nn.Linear(self.d_inner, self.d_model, bias=False)
        rows = torch.arange(1, self.d_state + 1, dtype=torch.float32).repeat(self.d_inner, 1)
        self.A_log = nn.Parameter(torch.log(rows))
        self.D = nn.Parameter(torch.ones(self.d_inner))
        self._init_dt(options.dt_min, options.dt_max)
        with torch.no_grad():
            self.out_proj.weight /= math.sqrt(options.n_layers)

    def _init_dt(self, dt_min: float, dt_max: float) -> None:
        """Initial step sizes log-uniform in [dt_min, dt_max], through softplus's inverse."""
        bound = self.dt_rank**-0.5
        nn.init.uniform_(self.dt_proj.weight, -bound, bound)
        log_dt = torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min))
        dt = torch.exp(log_dt + math.log(dt_min))
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))

    def base_A(self) -> Tensor:
        return -torch.exp(self.A_log)

    def forward(
        self, x: Tensor, adapter_state: AdapterState | None = None, prefix: str = ""
    ) -> tuple[Tensor, Tensor]:
        """Mix `(B, L, d_model)`; the state's deltas are looked up as `{prefix}A` etc.

        Returns the output and how many entries of the adapted A hit `A_UPPER_BOUND`.
        """
        state = adapter_state or {}
        length = x.shape[1]
        xs, z = self.in_proj(x).chunk(2, dim=-1)
        xs = F.silu(self.conv1d(xs.transpose(1, 2))[..., :length].transpose(1, 2))
        dt, B, C = self.x_proj(xs).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = F.linear(dt, self.dt_proj.weight)

        A = self.base_A()
        a_clamped = torch.zeros((), dtype=torch.long, device=x.device)
        delta_A = slot_delta(state, f"{prefix}A", A.shape)
        if delta_A is not None:
            A = A + delta_A
            over = A > A_UPPER_BOUND
            a_clamped = over.sum()
            A = torch.where(over, A.new_tensor(A_UPPER_BOUND), A)
        dt_bias, D = self.dt_proj.bias, self.D
        delta_dt_bias = slot_delta(state, f"{prefix}dt_bias", dt_bias.shape)
        if delta_dt_bias is not None:
            dt_bias = dt_bias + delta_dt_bias
        delta_D = slot_delta(state, f"{prefix}D", D.shape)
        if delta_D is not None:
            D = D + delta_D

        y = selective_scan(xs, dt, A, B, C, D=D, z=z, dt_bias=dt_bias, dt_softplus=True)
        return self.out_proj(y), a_clamped


class MambaBackbone(nn.Module):
    """Pre-norm residual Mamba layers, `x + block(norm(x))`, then a final LayerNorm."""

    def __init__(self, options: MambaOptions | None = None) -> None:
        super().__init__()
        options = options or MambaOptions()
        self.d_model = options.d_model
        self.norms = nn.ModuleList(nn.LayerNorm(options.d_model) for _ in range(options.n_layers))
        self.layers = nn.ModuleList(MambaBlock(options) for _ in range(options.n_layers))
        self.norm_f = nn.LayerNorm(options.d_model)
        self.dropout = nn.Dropout(options.dropout)

    def adapter_slots(self) -> dict[str, AdapterSlot]:
        """Per layer i: `layers.{i}.A` (clamped below zero), `layers.{i}.dt_bias`, `layers.{i}.D`.

        Bases are detached views of the current weights: adapters read shapes, devices
        and values from them and build their own tensors.
        """
        slots = {}
        for i, layer in enumerate(self.layers):
            bases = {"A": layer.base_A(), "dt_bias": layer.dt_proj.bias, "D": layer.D}
            for parameter, base in bases.items():
                name = f"layers.{i}.{parameter}"
                bound = A_UPPER_BOUND if parameter == "A" else None
                slots[name] = AdapterSlot(name=name, base=base.detach(), upper_bound=bound)
        return slots

    def _check_state_keys(self, state: AdapterState) -> None:
        """Reject keys that name no slot: the state was built for another backbone."""
        slots = [f"layers.{i}.{p}" for i in range(len(self.layers)) for p in SLOT_PARAMETERS]
        valid = set(slots) | {f"{s}.{f}" for s in slots for f in LOW_RANK_FACTORS}
        unknown = sorted(set(state) - valid)
        if unknown:
            raise ValueError(
                f"adapter state key {unknown[0]!r} names no slot of this MambaBackbone; "
                f"valid slots (dense, or low-rank as <slot>.U and <slot>.V): {', '.join(slots)}"
            )

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        adapter_state: AdapterState | None = None,
        return_features: bool = False,
    ) -> Tensor | ModelOutput:
        """`(B, L, d_model)` -> `(B, L, d_model)`; `mask` (B, L) is True on real tokens.

        Padded inputs are zeroed; the model is causal, so right padding never reaches
        real positions.
        """
        state = adapter_state or {}
        self._check_state_keys(state)
        if mask is not None:
            x = x * mask.unsqueeze(-1).to(x.dtype)
        a_clamped = torch.zeros((), dtype=torch.long, device=x.device)
        for i, (norm, layer) in enumerate(zip(self.norms, self.layers, strict=True)):
            y, clamped = layer(norm(x), state, prefix=f"layers.{i}.")
            x = x + self.dropout(y)
            a_clamped = a_clamped + clamped
        features = self.norm_f(x)
        if not return_features:
            return features
        return ModelOutput(
            logits=features, features=features, stats={"a_clamped": float(a_clamped)}
        )
