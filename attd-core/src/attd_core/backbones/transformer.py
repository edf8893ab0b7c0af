"""A pre-norm Transformer encoder: the attention baseline, adaptable through weight and
norm slots.

Every projection is an explicit weight read by `delta_linear` and every norm goes through
`delta_layer_norm`, so an adapter state adds `(x @ V^T) @ U^T` (or a dense delta) per
sample without wrapping any module, exactly as the Mamba backbone applies its deltas.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attd_core.backbones.slots import (
    check_state_keys,
    delta_layer_norm,
    delta_linear,
    norm_slots,
    stacked_slots,
    weight_slot,
)
from attd_core.interfaces import AdapterSlot, AdapterState
from attd_core.options import AttentionOptions, TransformerOptions

WEIGHT_SLOTS = ("q", "k", "v", "out", "mlp_in", "mlp_out")
"""The per-layer linear maps an adapter state may change: `layers.{i}.<name>`."""


def sinusoidal_positions(positions: Tensor, d_model: int, dtype: torch.dtype) -> Tensor:
    """The sine/cosine encoding of integer positions `(B, L)` -> `(B, L, d_model)`.

    Computed on the fly, so no maximum length is baked into the model.
    """
    half = d_model // 2
    frequencies = torch.exp(
        torch.arange(half, device=positions.device, dtype=dtype) * (-math.log(10000.0) / half)
    )
    angles = positions.unsqueeze(-1).to(dtype) * frequencies
    encoding = torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)
    return F.pad(encoding, (0, d_model % 2))


def attention_mask(mask: Tensor | None, length: int, causal: bool) -> Tensor | None:
    """Which keys each query may attend to, `(B, 1, L, L)`; None when SDPA's flags suffice.

    Padded keys are excluded. Every token may also attend to itself, so no row is ever
    empty: a pad query with no visible key (an all-pad sample, or causal rows before left
    padding ends) gives NaN in some kernels and torch versions (the math kernel before
    2.5), and a NaN value poisons real tokens in the next layer despite its zero weight.
    """
    if mask is None:
        return None
    allowed = mask[:, None, None, :]
    if causal:
        allowed = allowed & torch.ones(length, length, dtype=torch.bool, device=mask.device).tril()
    return allowed | torch.eye(length, dtype=torch.bool, device=mask.device)


class TransformerLayer(nn.Module):
    """`x + attention(norm(x))`, then `x + mlp(norm(x))` with a GELU MLP."""

    def __init__(self, options: AttentionOptions) -> None:
        super().__init__()
        width, hidden = options.d_model, options.mlp_ratio * options.d_model
        self.n_heads = options.n_heads
        self.causal = options.causal
        self.attention_dropout = options.dropout
        self.norm1 = nn.LayerNorm(width)
        self.q = nn.Linear(width, width)
        self.k = nn.Linear(width, width)
        self.v = nn.Linear(width, width)
        self.out = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        self.mlp_in = nn.Linear(width, hidden)
        self.mlp_out = nn.Linear(hidden, width)
        self.dropout = nn.Dropout(options.dropout)

    def adapter_slots(self, prefix: str) -> dict[str, AdapterSlot]:
        """`{prefix}<name>` (kind `weight`, base the `(out, in)` weight) for each of
        `WEIGHT_SLOTS`, and `{prefix}norm1.weight` / `.bias`, `{prefix}norm2.weight` / `.bias`.
        """
        slots: dict[str, AdapterSlot] = {}
        for name in WEIGHT_SLOTS:
            slots.update(weight_slot(f"{prefix}{name}", getattr(self, name)))
        for name in ("norm1", "norm2"):
            slots.update(norm_slots(f"{prefix}{name}", getattr(self, name)))
        return slots

    def _linear(self, name: str, x: Tensor, state: AdapterState, prefix: str) -> Tensor:
        layer = getattr(self, name)
        return delta_linear(x, layer.weight, layer.bias, state, f"{prefix}{name}")

    def forward(
        self, x: Tensor, attn_mask: Tensor | None, state: AdapterState, prefix: str
    ) -> Tensor:
        """`attn_mask` comes from `attention_mask`, built once per forward for all layers."""
        batch, length, width = x.shape
        h = delta_layer_norm(x, self.norm1, state, f"{prefix}norm1")
        q, k, v = (
            self._linear(name, h, state, prefix)
            .view(batch, length, self.n_heads, -1)
            .transpose(1, 2)
            for name in ("q", "k", "v")
        )
        attended = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=attn_mask,
            dropout_p=self.attention_dropout if self.training else 0.0,
            is_causal=self.causal and attn_mask is None,
        )
        attended = attended.transpose(1, 2).reshape(batch, length, width)
        x = x + self.dropout(self._linear("out", attended, state, prefix))
        h = delta_layer_norm(x, self.norm2, state, f"{prefix}norm2")
        hidden = F.gelu(self._linear("mlp_in", h, state, prefix))
        return x + self.dropout(self._linear("mlp_out", hidden, state, prefix))


class TransformerBackbone(nn.Module):
    """Sinusoidal positions, pre-norm encoder layers, then a final LayerNorm."""

    def __init__(self, options: TransformerOptions | None = None) -> None:
        super().__init__()
        options = options or TransformerOptions()
        self.d_model = options.d_model
        self.causal = options.causal
        self.layers = nn.ModuleList(TransformerLayer(options) for _ in range(options.n_layers))
        self.norm_f = nn.LayerNorm(options.d_model)
        self._slot_names = tuple(self.adapter_slots())

    def adapter_slots(self) -> dict[str, AdapterSlot]:
        """Per layer i: `layers.{i}.q`, `.k`, `.v`, `.out`, `.mlp_in`, `.mlp_out` (`weight`),
        `layers.{i}.norm1.weight` / `.bias` and `layers.{i}.norm2.weight` / `.bias`; then
        the final norm's `norm_f.weight` / `.bias`.

        A weight slot's base is the detached `(out, in)` weight, so LoRA factors are
        `<slot>.U` `(out, r)` and `<slot>.V` `(r, in)`, optionally with a leading batch
        dimension.
        """
        return stacked_slots(self.layers) | norm_slots("norm_f", self.norm_f)

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        adapter_state: AdapterState | None = None,
    ) -> Tensor:
        """`(B, L, d_model)` -> `(B, L, d_model)`; `mask` (B, L) is True on real tokens.

        Padded inputs are zeroed and never attended to; positions count real tokens
        only, so left or right padding leaves real outputs unchanged.
        """
        state = adapter_state or {}
        check_state_keys(state, self._slot_names, type(self).__name__)
        batch, length, _ = x.shape
        if mask is None:
            positions = torch.arange(length, device=x.device).expand(batch, length)
        else:
            mask = mask.bool()
            x = x * mask.unsqueeze(-1).to(x.dtype)
            positions = (mask.cumsum(1) - 1).clamp(min=0)
        x = x + sinusoidal_positions(positions, self.d_model, x.dtype)
        attn_mask = attention_mask(mask, length, self.causal)
        for i, layer in enumerate(self.layers):
            x = layer(x, attn_mask, state, f"layers.{i}.")
        return delta_layer_norm(x, self.norm_f, state, "norm_f")
