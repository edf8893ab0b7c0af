"""Delta-SSM: a low-rank delta on each layer's state matrix, `A = A0 + U V` (specs/attd.md).

U starts at zero and V small and random, so a fresh state leaves the model unchanged while
U still receives gradient. The norm cap is a trust region: it keeps each step's dynamics
close to the trained ones, whatever the inner loop does.
"""

from __future__ import annotations

import torch
from torch import Tensor

from attd_core.errors import ConfigError
from attd_core.interfaces import AdapterState, Backbone
from attd_core.options import DeltaSSMOptions

_ROUNDING = 1e-5
"""Relative slack on the cap, so a delta rescaled onto it is not counted (or moved) again."""


class DeltaSSMAdapter:
    """Creates `<slot>.U` (d_inner x r) and `<slot>.V` (r x N) for every `*.A` slot."""

    def __init__(self, options: DeltaSSMOptions | None = None) -> None:
        self.options = options or DeltaSSMOptions()

    @property
    def per_sample(self) -> bool:
        return self.options.per_sample

    def init_state(
        self,
        backbone: Backbone,
        batch_size: int | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> AdapterState:
        """A fresh state; V is drawn on the CPU from `generator` so runs are reproducible."""
        slots = [slot for name, slot in backbone.adapter_slots().items() if name.endswith(".A")]
        if not slots:
            raise ConfigError(
                f"adapter delta-ssm needs state-matrix slots ('<layer>.A'), and backbone "
                f"{type(backbone).__name__} has none"
            )
        rank, scale = self.options.rank, self.options.init_scale
        lead = (batch_size,) if self.options.per_sample and batch_size is not None else ()
        state: AdapterState = {}
        for slot in slots:
            d_inner, d_state = slot.base.shape
            like = {"device": slot.base.device, "dtype": slot.base.dtype}
            state[f"{slot.name}.U"] = torch.zeros(*lead, d_inner, rank, **like)
            v = torch.randn(*lead, rank, d_state, generator=generator) * scale
            state[f"{slot.name}.V"] = v.to(**like)
        return state

    def project(self, state: AdapterState) -> tuple[AdapterState, dict[str, Tensor]]:
        """Rescale U wherever `||U V||_F > max_delta_norm`, per sample and layer.

        Returns a new state (inputs untouched) and `delta_norm_capped`, the number of
        (sample, layer) pairs that were rescaled.
        """
        cap = self.options.max_delta_norm
        projected = dict(state)
        capped: Tensor | int = 0
        for key, u in state.items():
            if not key.endswith(".U"):
                continue
            norm = torch.linalg.matrix_norm(u @ state[f"{key[:-2]}.V"])
            over = norm > cap * (1 + _ROUNDING)
            scale = torch.where(over, cap / norm.clamp_min(cap), torch.ones_like(norm))
            projected[key] = u * scale[..., None, None]
            capped = capped + over.sum()
        return projected, {"delta_norm_capped": torch.as_tensor(capped)}

    def num_parameters(self, state: AdapterState) -> int:
        """Adapter parameters of one sample (U and V are matrices; a third dim is the batch)."""
        return sum(t[0].numel() if t.dim() == 3 else t.numel() for t in state.values())
