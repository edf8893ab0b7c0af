"""State offset: a learned initial SSM state per scan, the state-space counterpart of a
prefix (prefix tuning prepends keys and values; a recurrent model can only start elsewhere).

The delta starts at zero, the base start, so a fresh state leaves the model unchanged; it
is dense because the state `(d_inner, d_state)` is small.
"""

from __future__ import annotations

import torch

from attd_core.adapters.base import SlotAdapter
from attd_core.backbones.slots import batch_shape, missing_slots, sample_numel, zero_deltas
from attd_core.interfaces import AdapterState, Backbone
from attd_core.options import StateOffsetOptions


class StateOffsetAdapter(SlotAdapter):
    """A dense zero delta on every slot of kind `initial_state`; any start is allowed."""

    options_model = StateOffsetOptions

    def init_state(
        self,
        backbone: Backbone,
        batch_size: int | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> AdapterState:
        """Zeros like each initial-state slot; nothing random, so `generator` is unused."""
        slots = [s for s in backbone.adapter_slots().values() if s.kind == "initial_state"]
        if not slots:
            raise missing_slots("state-offset", backbone, "initial-state slots (an SSM scan)")
        return zero_deltas(slots, batch_shape(self.options.per_sample, batch_size))

    def num_parameters(self, state: AdapterState) -> int:
        """One sample's parameters: every offset is a `(d_inner, d_state)` matrix."""
        return sum(sample_numel(tensor, 2) for tensor in state.values())
