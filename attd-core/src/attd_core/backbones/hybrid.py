"""Mamba and attention layers interleaved in one residual stack (Jamba-style).

The layers are the Mamba backbone's `MambaLayer` and the Transformer's
`TransformerLayer`, unchanged, so a hybrid adapts through the same slots as each (SSM,
projection and norm slots on Mamba layers, weight and norm slots on attention layers).
Mamba layers carry position, so attention layers get no positional encoding.
"""

from __future__ import annotations

from torch import Tensor, nn

from attd_core.backbones.mamba import MambaLayer, scan_backends_used
from attd_core.backbones.slots import (
    check_state_keys,
    delta_layer_norm,
    norm_slots,
    stacked_slots,
)
from attd_core.backbones.transformer import TransformerLayer, attention_mask
from attd_core.interfaces import AdapterSlot, AdapterState
from attd_core.options import HybridOptions


def layer_kinds(pattern: str, n_layers: int) -> str:
    """`pattern` repeated or cut to `n_layers` characters, M (Mamba) or A (attention)."""
    return "".join(pattern[i % len(pattern)] for i in range(n_layers))


class HybridBackbone(nn.Module):
    """Pre-norm residual layers whose kinds follow `pattern`, then a final LayerNorm."""

    def __init__(self, options: HybridOptions | None = None) -> None:
        super().__init__()
        options = options or HybridOptions()
        self.d_model = options.d_model
        self.causal = options.causal
        self.kinds = layer_kinds(options.pattern, options.n_layers)
        self.layers = nn.ModuleList(
            MambaLayer(options) if kind == "M" else TransformerLayer(options) for kind in self.kinds
        )
        self.norm_f = nn.LayerNorm(options.d_model)
        self._slot_names = tuple(self.adapter_slots())

    @property
    def scan_backend_used(self) -> str | None:
        """The selective-scan backend of the last forward's Mamba layers."""
        return scan_backends_used(self)

    def adapter_slots(self) -> dict[str, AdapterSlot]:
        """The union of the layers' slots, indexed by position in the stack, and `norm_f.*`.

        A Mamba layer i has the Mamba backbone's per-layer slots (`layers.{i}.A`, `.h0`,
        `.in_proj`, `.norm.weight`, ..., and `layers.{i}.reverse.*` when bidirectional);
        an attention layer i the Transformer's (`layers.{i}.q`, ..., `.norm1.weight`, ...).
        """
        return stacked_slots(self.layers) | norm_slots("norm_f", self.norm_f)

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        adapter_state: AdapterState | None = None,
    ) -> Tensor:
        """`(B, L, d_model)` -> `(B, L, d_model)`; `mask` (B, L) is True on real tokens."""
        state = adapter_state or {}
        check_state_keys(state, self._slot_names, type(self).__name__)
        if mask is not None:
            mask = mask.bool()
            x = x * mask.unsqueeze(-1).to(x.dtype)
        # Built once, and only when needed: it is (B, 1, L, L).
        attn_mask = attention_mask(mask, x.shape[1], self.causal) if "A" in self.kinds else None
        for i, layer in enumerate(self.layers):
            if isinstance(layer, MambaLayer):
                x = layer(x, mask, state, f"layers.{i}.")
            else:
                x = layer(x, attn_mask, state, f"layers.{i}.")
        return delta_layer_norm(x, self.norm_f, state, "norm_f")
