"""LoRA: low-rank deltas on linear weights, `W + (alpha / rank) U V` (Hu et al., 2021).

The state holds the raw factors and `deltas` applies the alpha / rank scale, so the inner
loop's step size does not depend on the rank. U starts at zero and V as PEFT initialises
it, so a fresh state leaves the model unchanged while U still receives gradient.
"""

from __future__ import annotations

import math
from fnmatch import fnmatchcase

import torch

from attd_core.adapters.base import SlotAdapter
from attd_core.backbones.slots import batch_shape, missing_slots, sample_numel
from attd_core.interfaces import AdapterState, Backbone
from attd_core.options import LoRAOptions

_GLOB = (".", "*", "?", "[")
"""A target with none of these names a slot's last part (`in_proj`); otherwise it is a
glob over full slot names (`layers.1.*`)."""


def _matches(target: str, slot: str) -> bool:
    """Whether a LoRA `targets` entry selects the slot named `slot`."""
    if any(char in target for char in _GLOB):
        return fnmatchcase(slot, target)
    return slot.rsplit(".", 1)[-1] == target


class LoRAAdapter(SlotAdapter):
    """`<slot>.U` (out x r) and `<slot>.V` (r x in) on every `weight` slot `targets` selects."""

    options_model = LoRAOptions
    options: LoRAOptions

    @property
    def scale(self) -> float:
        return self.options.alpha / self.options.rank

    def init_state(
        self,
        backbone: Backbone,
        batch_size: int | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> AdapterState:
        """Zero U; V uniform in `+-1 / sqrt(in)` (PEFT's kaiming-uniform), drawn on the CPU
        from `generator` so runs are reproducible."""
        weights = [slot for slot in backbone.adapter_slots().values() if slot.kind == "weight"]
        targets = self.options.targets
        chosen = [slot for slot in weights if any(_matches(t, slot.name) for t in targets)]
        if not chosen:
            raise missing_slots(
                "lora",
                backbone,
                f"weight slots matching targets {targets}",
                [slot.name for slot in weights],
            )
        rank = self.options.rank
        lead = batch_shape(self.options.per_sample, batch_size)
        state: AdapterState = {}
        for slot in chosen:
            out, in_ = slot.base.shape
            like = {"device": slot.base.device, "dtype": slot.base.dtype}
            state[f"{slot.name}.U"] = torch.zeros(*lead, out, rank, **like)
            uniform = torch.rand(*lead, rank, in_, generator=generator) * 2 - 1
            state[f"{slot.name}.V"] = (uniform / math.sqrt(in_)).to(**like)
        return state

    def deltas(self, state: AdapterState) -> AdapterState:
        """A new state with every U multiplied by alpha / rank (differentiably)."""
        scale = self.scale
        return {key: t * scale if key.endswith(".U") else t for key, t in state.items()}

    def num_parameters(self, state: AdapterState) -> int:
        """One sample's parameters: every factor is a matrix."""
        return sum(sample_numel(tensor, 2) for tensor in state.values())
