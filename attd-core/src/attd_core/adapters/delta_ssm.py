"""Delta-SSM: a low-rank delta on each layer's state matrix (specs/attd.md), in log space
by default, `A = A0 * exp(U V)`, or as the original script's `A = A0 + U V`.

U starts at zero and V random, so a fresh state leaves the model unchanged while U still
receives gradient. The norm cap is a trust region: it keeps each step's dynamics close
to the trained ones, whatever the inner loop does. In log space a delta scales each
decay rate by a share of itself, so the same cap and step mean the same at any size of
A0, and A stays negative by construction. In linear space keeping `A0 + U V` below the
slot's upper bound keeps every mode decaying without relying on the backbone's clamp,
whose gradient is zero wherever it fires.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

from attd_core.adapters.base import SlotAdapter
from attd_core.backbones.slots import batch_shape, missing_slots, sample_numel, zero_deltas
from attd_core.interfaces import AdapterSlot, AdapterState, Backbone
from attd_core.options import DeltaSSMOptions

_ROUNDING = 1e-5
"""Relative slack on both constraints, so a projected delta is not counted (or moved) again."""
LINEAR_INIT_SCALE = 0.01
"""V's std in linear space: the original script's."""


class DeltaSSMAdapter(SlotAdapter):
    """`<slot>.U` (d_inner x r) and `<slot>.V` (r x N) for every slot of kind `A_log` (log
    space) or `A` (linear), plus dense deltas on the `dt_bias` and `D` slots when the
    options ask for them."""

    options_model = DeltaSSMOptions
    options: DeltaSSMOptions

    def init_state(
        self,
        backbone: Backbone,
        batch_size: int | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> AdapterState:
        """A fresh state; V is drawn on the CPU from `generator` so runs are reproducible."""
        slots = backbone.adapter_slots().values()
        dense_kinds = [kind for kind in ("dt_bias", "D") if getattr(self.options, kind)]
        matrix_kind = self._matrix_kind
        by_kind = {
            kind: [slot for slot in slots if slot.kind == kind]
            for kind in (matrix_kind, *dense_kinds)
        }
        for kind, found in by_kind.items():
            if not found:
                raise missing_slots("delta-ssm", backbone, f"slots of kind {kind!r}")
        rank = self.options.rank
        lead = batch_shape(self.options.per_sample, batch_size)
        state: AdapterState = {}
        for slot in by_kind[matrix_kind]:
            d_inner, d_state = slot.base.shape
            like = {"device": slot.base.device, "dtype": slot.base.dtype}
            state[f"{slot.name}.U"] = torch.zeros(*lead, d_inner, rank, **like)
            v = torch.randn(*lead, rank, d_state, generator=generator) * self._init_scale(d_state)
            state[f"{slot.name}.V"] = v.to(**like)
        for kind in dense_kinds:
            state |= zero_deltas(by_kind[kind], lead)
        return state

    @property
    def _matrix_kind(self) -> str:
        return "A_log" if self.options.space == "log" else "A"

    def _init_scale(self, d_state: int) -> float:
        if self.options.init_scale is not None:
            return self.options.init_scale
        return d_state**-0.5 if self.options.space == "log" else LINEAR_INIT_SCALE

    def project(
        self, state: AdapterState, slots: Mapping[str, AdapterSlot]
    ) -> tuple[AdapterState, dict[str, Tensor]]:
        """Rescale U per sample and layer so that U V is within `max_delta_norm` (log space:
        its root-mean-square entry; linear: its Frobenius norm) and, in linear space with
        `keep_a_negative`, `A0 + U V <= upper_bound` (the slot's) entrywise.

        Returns a new state (inputs untouched) and the number of (sample, layer) pairs
        each rule rescaled: `delta_norm_capped` and, in linear space, `a_projected`.
        """
        log_space = self.options.space == "log"
        keep_negative = self.options.keep_a_negative and not log_space
        projected = dict(state)
        capped: Tensor | int = 0
        bounded: Tensor | int = 0
        for key, u in state.items():
            if not key.endswith(".U"):
                continue
            name = key[:-2]
            delta = u @ state[f"{name}.V"]
            norm = torch.linalg.matrix_norm(delta)
            cap = self.options.max_delta_norm
            if log_space:
                cap = cap * math.sqrt(delta.shape[-2] * delta.shape[-1])
            over = norm > cap * (1 + _ROUNDING)
            scale = torch.where(over, cap / norm.clamp_min(cap), torch.ones_like(norm))
            capped = capped + over.sum()
            bound = slots[name].upper_bound
            if keep_negative and bound is not None:
                shrink = _bound_scale(slots[name].base, delta * scale[..., None, None], bound)
                scale = scale * torch.where(shrink < 1, shrink * (1 - _ROUNDING), 1)
                bounded = bounded + (shrink < 1).sum()
            projected[key] = u * scale[..., None, None]
        stats = {"delta_norm_capped": torch.as_tensor(capped)}
        if keep_negative:
            stats["a_projected"] = torch.as_tensor(bounded)
        return projected, stats

    def num_parameters(self, state: AdapterState) -> int:
        """One sample's parameters: U and V are matrices, dt bias and D deltas vectors."""
        return sum(
            sample_numel(tensor, 2 if key.endswith((".U", ".V")) else 1)
            for key, tensor in state.items()
        )


def _bound_scale(base: Tensor, delta: Tensor, bound: float) -> Tensor:
    """The largest s in [0, 1] with `base + s * delta <= bound`, per leading index.

    Only entries the delta raises constrain s: the closed form is the minimum of
    `(bound - base) / delta` over entries with `delta > 0`.
    """
    rising = delta > 0
    room = (bound - base) / torch.where(rising, delta, torch.ones_like(delta))
    room = torch.where(rising, room, torch.full_like(room, torch.inf))
    return room.amin(dim=(-2, -1)).clamp(0, 1)
