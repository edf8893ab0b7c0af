"""Norm affine: deltas on the norm layers' scales and biases, what TENT adapts.

Few parameters that act on every feature at once make a cheap, well-conditioned target
for entropy minimisation. The deltas start at zero, so a fresh state changes nothing.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

import torch

from attd_core.adapters.base import SlotAdapter
from attd_core.backbones.slots import batch_shape, missing_slots, sample_numel, zero_deltas
from attd_core.interfaces import AdapterState, Backbone
from attd_core.options import NormAffineOptions

NORM_KINDS = ("norm_weight", "norm_bias")


class NormAffineAdapter(SlotAdapter):
    """A dense zero delta on every norm slot whose full name matches one of `targets`."""

    options_model = NormAffineOptions
    options: NormAffineOptions

    def init_state(
        self,
        backbone: Backbone,
        batch_size: int | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> AdapterState:
        """Zeros like each chosen norm slot; nothing random, so `generator` is unused."""
        norms = [s for s in backbone.adapter_slots().values() if s.kind in NORM_KINDS]
        targets = self.options.targets
        chosen = [s for s in norms if any(fnmatchcase(s.name, t) for t in targets)]
        if not chosen:
            raise missing_slots(
                "norm-affine",
                backbone,
                f"norm slots matching targets {targets}",
                [s.name for s in norms],
            )
        return zero_deltas(chosen, batch_shape(self.options.per_sample, batch_size))

    def num_parameters(self, state: AdapterState) -> int:
        """One sample's parameters: every delta is a vector."""
        return sum(sample_numel(tensor, 1) for tensor in state.values())
