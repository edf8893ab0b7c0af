"""The adapter-slot convention, both sides: how backbones read states, how adapters build them.

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
from torch import Tensor, nn

from attd_core.errors import ConfigError
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


def weight_slot(name: str, linear: nn.Linear) -> dict[str, AdapterSlot]:
    """A `weight` slot on a linear map: the base is its detached `(out, in)` weight."""
    return {name: AdapterSlot(name=name, base=linear.weight.detach(), kind="weight")}


Norm = nn.LayerNorm | nn.RMSNorm
"""The norms backbones adapt: a LayerNorm, or an RMSNorm (a scale and no shift)."""


def norm_slots(name: str, norm: Norm) -> dict[str, AdapterSlot]:
    """`{name}.weight` (`norm_weight`) and, where the norm has a shift, `{name}.bias`
    (`norm_bias`): an RMSNorm has no bias slot, since it has no bias to change."""
    return {
        f"{name}.{part}": AdapterSlot(
            name=f"{name}.{part}", base=getattr(norm, part).detach(), kind=f"norm_{part}"
        )
        for part in ("weight", "bias")
        if getattr(norm, part, None) is not None
    }


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
    materialising an `(out, in)` matrix per sample. `x` is `(B, L, in)` or `(B, in)`;
    per-sample tensors are `(B, out, r)`, `(B, r, in)` or `(B, out, in)`. With nothing
    in the state for `slot` this is `F.linear` itself; an all-zero delta adds exact
    zeros, so a fresh LoRA state (U = 0) leaves the output bitwise unchanged.
    """
    y = F.linear(x, weight, bias)
    dense = state.get(slot)
    factors = _factors(state, slot)
    if dense is None and factors is None:
        return y
    rows = x if x.dim() > 2 else x.unsqueeze(-2)  # (B, in) -> (B, 1, in) for batched deltas
    if dense is not None:
        _check_shape(slot, "delta", dense, tuple(weight.shape))
        y = y + (rows @ dense.mT).reshape(y.shape)
    if factors is not None:
        u, v = factors
        rank = u.shape[-1]
        _check_shape(slot, "factor U", u, (weight.shape[0], rank))
        _check_shape(slot, "factor V", v, (rank, weight.shape[1]))
        y = y + ((rows @ v.mT) @ u.mT).reshape(y.shape)
    return y


def delta_layer_norm(x: Tensor, norm: Norm, state: AdapterState, slot: str) -> Tensor:
    """`norm(x)` with the state's deltas on `{slot}.weight` and `{slot}.bias` (no bias for
    an RMSNorm).

    With no delta this is the module's own call. Shared deltas go into `F.layer_norm` /
    `F.rms_norm` as adapted weight and bias; per-sample ones (`(B, D)`, `x` `(B, ..., D)`)
    scale and shift the normalised `x` per sample.
    """
    base_bias = getattr(norm, "bias", None)
    d_weight = slot_delta(state, f"{slot}.weight", norm.weight.shape)
    d_bias = None if base_bias is None else slot_delta(state, f"{slot}.bias", base_bias.shape)
    if d_weight is None and d_bias is None:
        return norm(x)
    weight = norm.weight if d_weight is None else norm.weight + d_weight
    bias = base_bias if d_bias is None else base_bias + d_bias
    if weight.dim() == 1 and (bias is None or bias.dim() == 1):
        return _normalise(x, norm, weight, bias)
    scaled = _normalise(x, norm, None, None) * _per_sample(weight, x)
    return scaled if bias is None else scaled + _per_sample(bias, x)


def _normalise(x: Tensor, norm: Norm, weight: Tensor | None, bias: Tensor | None) -> Tensor:
    if isinstance(norm, nn.RMSNorm):
        return F.rms_norm(x, norm.normalized_shape, weight, norm.eps)
    return F.layer_norm(x, norm.normalized_shape, weight, bias, norm.eps)


def _per_sample(vector: Tensor, x: Tensor) -> Tensor:
    """Broadcast a `(D,)` or per-sample `(B, D)` vector against `x` `(B, ..., D)`."""
    if vector.dim() == 1:
        return vector
    return vector.reshape(vector.shape[0], *(1,) * (x.dim() - 2), vector.shape[-1])


def batch_shape(per_sample: bool, batch_size: int | None) -> tuple[int, ...]:
    """The leading dimensions of a fresh state's tensors: `(batch_size,)` per sample, else ()."""
    return (batch_size,) if per_sample and batch_size is not None else ()


def zero_deltas(slots: Iterable[AdapterSlot], lead: tuple[int, ...]) -> AdapterState:
    """A dense all-zero delta per slot, like its base, with leading dimensions `lead`."""
    return {
        slot.name: torch.zeros(
            *lead, *slot.base.shape, dtype=slot.base.dtype, device=slot.base.device
        )
        for slot in slots
    }


def sample_numel(tensor: Tensor, slot_dims: int) -> int:
    """Elements of one sample's tensor: a per-sample one has one more dim than `slot_dims`."""
    return tensor[0].numel() if tensor.dim() == slot_dims + 1 else tensor.numel()


def missing_slots(
    adapter: str, backbone: Any, needed: str, candidates: Iterable[str] = ()
) -> ConfigError:
    """The error for an adapter that finds nothing to adapt on `backbone`.

    `candidates` lists the slots of the right kind that a selection (targets) left out.
    """
    listed = ", ".join(candidates)
    return ConfigError(
        f"adapter {adapter} needs {needed}, and backbone {type(backbone).__name__} has none"
        + (f"; available: {listed}" if listed else "")
    )
