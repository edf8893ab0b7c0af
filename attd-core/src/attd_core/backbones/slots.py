"""How every backbone reads an adapter state: one convention for deltas, one key check.

A state holds, per slot, a dense delta under the slot's name and/or low-rank factors
under `<slot>.U` and `<slot>.V` (delta = U @ V), each optionally with a leading batch
dimension (one delta per sample). Keeping the rules here means an adapter built from
slot metadata works on any backbone, and every backbone rejects the same mistakes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from attd_core.interfaces import AdapterSlot, AdapterState

LOW_RANK_FACTORS = ("U", "V")


def check_state_keys(state: AdapterState, slots: Iterable[str], owner: str) -> None:
    """Reject keys that name no slot of `owner`: the state was built for another backbone."""
    slots = list(slots)
    valid = set(slots) | {f"{slot}.{factor}" for slot in slots for factor in LOW_RANK_FACTORS}
    unknown = sorted(set(state) - valid)
    if unknown:
        raise ValueError(
            f"adapter state key {unknown[0]!r} names no slot of this {owner}; "
            f"valid slots (dense, or low-rank as <slot>.U and <slot>.V): {', '.join(slots)}"
        )


def stacked_slots(layers: Iterable[Any]) -> dict[str, AdapterSlot]:
    """The slots of a stack of layers, each layer's named `layers.{i}.<its slot>`."""
    slots: dict[str, AdapterSlot] = {}
    for i, layer in enumerate(layers):
        slots.update(layer.adapter_slots(f"layers.{i}."))
    return slots


def _factors(state: AdapterState, slot: str) -> tuple[Tensor, Tensor] | None:
    u, v = (state.get(f"{slot}.{factor}") for factor in LOW_RANK_FACTORS)
    if (u is None) != (v is None):
        raise ValueError(f"adapter state holds only one of {slot}.U and {slot}.V")
    return None if u is None else (u, v)


def _check_shape(slot: str, name: str, tensor: Tensor, shape: tuple[int, ...]) -> None:
    if tensor.dim() not in (len(shape), len(shape) + 1) or tensor.shape[-len(shape) :] != shape:
        raise ValueError(
            f"adapter {name} for {slot} has shape {tuple(tensor.shape)}; expected "
            f"{shape}, optionally with a leading batch dimension"
        )


def slot_delta(state: AdapterState, slot: str, base_shape: torch.Size) -> Tensor | None:
    """The delta a state holds for `slot`: dense (`slot`) plus low-rank (`slot.U @ slot.V`).

    The result broadcasts against the base whether or not it carries a batch dimension.
    None when the state has nothing for `slot`.
    """
    delta = state.get(slot)
    factors = _factors(state, slot)
    if factors is not None:
        u, v = factors
        delta = u @ v if delta is None else delta + u @ v
    if delta is not None:
        _check_shape(slot, "delta", delta, tuple(base_shape))
    return delta


def adapted(base: Tensor, state: AdapterState, slot: str) -> Tensor:
    """`base` plus the state's delta for `slot` (the base itself when there is none)."""
    delta = slot_delta(state, slot, base.shape)
    return base if delta is None else base + delta


def delta_linear(
    x: Tensor, weight: Tensor, bias: Tensor | None, state: AdapterState, slot: str
) -> Tensor:
    """`x @ (W + delta)^T + b` for a weight slot, without forming a low-rank product.

    Low-rank factors act as `(x @ V^T) @ U^T`, which costs O(r) per token instead of
    materialising an `(out, in)` matrix per sample. `x` is `(B, L, in)`; per-sample
    tensors are `(B, out, r)`, `(B, r, in)` or `(B, out, in)`. An all-zero delta adds
    exact zeros, so a fresh LoRA state (U = 0) leaves the output bitwise unchanged.
    """
    y = F.linear(x, weight, bias)
    dense = state.get(slot)
    if dense is not None:
        _check_shape(slot, "delta", dense, tuple(weight.shape))
        y = y + x @ dense.mT
    factors = _factors(state, slot)
    if factors is not None:
        u, v = factors
        rank = u.shape[-1]
        _check_shape(slot, "factor U", u, (weight.shape[0], rank))
        _check_shape(slot, "factor V", v, (rank, weight.shape[1]))
        y = y + (x @ v.mT) @ u.mT
    return y
