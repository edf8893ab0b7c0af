"""The Mamba backbone, with adapter slots on each layer's A, dt bias and D.

Adapters never wrap or mutate modules: the backbone receives an adapter state (a flat
dict of tensors, see `attd_core.AdapterState`) on every call and adds the deltas to its
parameters inside each block, so one set of base weights serves any number of states
and fused kernels, which read weights directly, see the adapted values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attd_core.backbones.scan import resolve_backend, selective_scan
from attd_core.backbones.slots import adapted, check_state_keys, slot_delta, stacked_slots
from attd_core.interfaces import AdapterSlot, AdapterState, ModelOutput
from attd_core.options import MambaMixerOptions, MambaOptions

try:
    from causal_conv1d import causal_conv1d_fn
except ImportError:  # the GPU extra is optional; nn.Conv1d computes the same thing
    causal_conv1d_fn = None

A_UPPER_BOUND = -1e-4
"""Adapted A entries are clamped to at most this, so every mode stays strictly decaying."""


@dataclass(frozen=True)
class MambaLayerCache:
    """What one mixer carries from token to token in step mode.

    `conv` holds the last `d_conv - 1` convolution inputs `(B, d_inner, d_conv - 1)`,
    `ssm` the state `h` `(B, d_inner, d_state)`; zeros are the start of a sequence.
    """

    conv: Tensor
    ssm: Tensor


class MambaBlock(nn.Module):
    """One Mamba mixer (specs/attd.md): projections, causal conv, selective scan, gate."""

    def __init__(self, options: MambaMixerOptions) -> None:
        super().__init__()
        self.d_model = options.d_model
        self.d_inner = options.expand * options.d_model
        self.d_state = options.d_state
        self.dt_rank = options.dt_rank or math.ceil(options.d_model / 16)
        self.scan_backend = options.scan_backend
        self.scan_backend_used: str | None = None
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
        # Decaying A_log towards 0 would pull every mode to A = -1; D is a skip gain.
        self.A_log._no_weight_decay = True
        self.D._no_weight_decay = True
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

    def adapter_slots(self, prefix: str) -> dict[str, AdapterSlot]:
        """`{prefix}A` (clamped below zero), `{prefix}dt_bias` and `{prefix}D`, bases detached."""
        bases = {"A": self.base_A(), "dt_bias": self.dt_proj.bias, "D": self.D}
        return {
            f"{prefix}{name}": AdapterSlot(
                name=f"{prefix}{name}",
                base=base.detach(),
                upper_bound=A_UPPER_BOUND if name == "A" else None,
            )
            for name, base in bases.items()
        }

    def _adapted_A(self, state: AdapterState, slot: str) -> tuple[Tensor, Tensor]:
        """A plus the state's delta, clamped to `A_UPPER_BOUND`, and how many entries hit it."""
        A = self.base_A()
        delta = slot_delta(state, slot, A.shape)
        if delta is None:
            return A, torch.zeros((), dtype=torch.long, device=A.device)
        A = A + delta
        over = A > A_UPPER_BOUND
        return torch.where(over, A.new_tensor(A_UPPER_BOUND), A), over.sum()

    def _ssm(
        self,
        xs: Tensor,
        z: Tensor,
        state: AdapterState,
        prefix: str,
        mask: Tensor | None = None,
        initial_state: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """The gated selective scan over conv outputs `xs` with the state's deltas applied.

        Returns y `(B, L, d_inner)`, the last SSM state and the count of clamped A entries.
        """
        dt, B, C = self.x_proj(xs).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = F.linear(dt, self.dt_proj.weight)
        A, a_clamped = self._adapted_A(state, f"{prefix}A")
        self.scan_backend_used = resolve_backend(self.scan_backend, xs, A, initial_state)
        y, last = selective_scan(
            xs,
            dt,
            A,
            B,
            C,
            D=adapted(self.D, state, f"{prefix}D"),
            z=z,
            dt_bias=adapted(self.dt_proj.bias, state, f"{prefix}dt_bias"),
            dt_softplus=True,
            initial_state=initial_state,
            return_last_state=True,
            mask=mask,
            backend=self.scan_backend_used,
        )
        return y, last, a_clamped

    def _conv(self, xs: Tensor) -> Tensor:
        """Causal depthwise conv + SiLU over `(B, d_inner, L)`; the fused kernel on CUDA."""
        if causal_conv1d_fn is not None and xs.is_cuda:
            weight = self.conv1d.weight.squeeze(1)
            return causal_conv1d_fn(xs, weight, self.conv1d.bias, activation="silu")
        return F.silu(self.conv1d(xs)[..., : xs.shape[-1]])

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        adapter_state: AdapterState | None = None,
        prefix: str = "",
    ) -> tuple[Tensor, Tensor]:
        """Mix `(B, L, d_model)`; the state's deltas are looked up as `{prefix}A` etc.

        Masked tokens feed zeros to the convolution (as before a sequence's start) and
        leave the SSM state unchanged, so left or right padding never reaches real tokens.
        Returns the output and how many entries of the adapted A hit `A_UPPER_BOUND`.
        """
        xs, z = self.in_proj(x).chunk(2, dim=-1)
        if mask is not None:
            xs = xs * mask.unsqueeze(-1).to(xs.dtype)
        xs = self._conv(xs.transpose(1, 2)).transpose(1, 2)
        y, _, a_clamped = self._ssm(xs, z, adapter_state or {}, prefix, mask=mask)
        return self.out_proj(y), a_clamped

    def init_cache(self, batch_size: int) -> MambaLayerCache:
        like = {"device": self.A_log.device, "dtype": self.A_log.dtype}
        width = self.conv1d.kernel_size[0] - 1
        return MambaLayerCache(
            conv=torch.zeros(batch_size, self.d_inner, width, **like),
            ssm=torch.zeros(batch_size, self.d_inner, self.d_state, **like),
        )

    def step(
        self,
        x_t: Tensor,
        cache: MambaLayerCache,
        adapter_state: AdapterState | None = None,
        prefix: str = "",
    ) -> tuple[Tensor, MambaLayerCache]:
        """Mix one token `(B, d_model)` given the cache; returns its output and the new cache."""
        xs, z = self.in_proj(x_t).chunk(2, dim=-1)
        window = torch.cat([cache.conv, xs.unsqueeze(-1)], dim=-1)  # (B, d_inner, d_conv)
        xs = F.silu((window * self.conv1d.weight.squeeze(1)).sum(-1) + self.conv1d.bias)
        y, ssm, _ = self._ssm(
            xs.unsqueeze(1), z.unsqueeze(1), adapter_state or {}, prefix, initial_state=cache.ssm
        )
        return self.out_proj(y.squeeze(1)), MambaLayerCache(conv=window[..., 1:], ssm=ssm)


def _reversal_index(mask: Tensor) -> Tensor:
    """Per sample, the index that reverses the real tokens' order and leaves pads in place.

    Reversing in place (not flipping the whole row) keeps right padding on the right, so
    the reverse mixer also never lets pads reach real tokens. The map is its own inverse.
    """
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    real_first = torch.argsort((~mask).to(torch.uint8), dim=1, stable=True)
    rank = mask.cumsum(1) - 1
    mirrored = (mask.sum(1, keepdim=True) - 1 - rank).clamp(min=0)
    return torch.where(mask, real_first.gather(1, mirrored), positions)


def reverse_real_tokens(x: Tensor, mask: Tensor | None) -> Tensor:
    """`(B, L, D)` with each sample's real tokens in reverse order (an involution)."""
    if mask is None:
        return x.flip(1)
    index = _reversal_index(mask).unsqueeze(-1).expand_as(x)
    return x.gather(1, index)


class MambaLayer(nn.Module):
    """One residual layer, `x + dropout(mixer(norm(x)))`.

    In bidirectional mode a second mixer `reverse` (own parameters, as in Caduceus and
    Vision Mamba) reads each sample's real tokens back to front; its output, put back in
    order, is added to the forward mixer's, so every position sees the whole sequence.
    """

    def __init__(self, options: MambaMixerOptions) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(options.d_model)
        self.mixer = MambaBlock(options)
        self.reverse = MambaBlock(options) if options.bidirectional else None
        self.dropout = nn.Dropout(options.dropout)

    def adapter_slots(self, prefix: str) -> dict[str, AdapterSlot]:
        slots = self.mixer.adapter_slots(prefix)
        if self.reverse is not None:
            slots.update(self.reverse.adapter_slots(f"{prefix}reverse."))
        return slots

    def forward(
        self, x: Tensor, mask: Tensor | None, state: AdapterState, prefix: str
    ) -> tuple[Tensor, Tensor]:
        """Returns the new residual stream and the count of clamped A entries."""
        h = self.norm(x)
        y, a_clamped = self.mixer(h, mask, state, prefix)
        if self.reverse is not None:
            backwards, clamped = self.reverse(
                reverse_real_tokens(h, mask), mask, state, f"{prefix}reverse."
            )
            y = y + reverse_real_tokens(backwards, mask)
            a_clamped = a_clamped + clamped
        return x + self.dropout(y), a_clamped

    def step(
        self, x_t: Tensor, cache: MambaLayerCache, state: AdapterState, prefix: str
    ) -> tuple[Tensor, MambaLayerCache]:
        y, cache = self.mixer.step(self.norm(x_t), cache, state, prefix)
        return x_t + self.dropout(y), cache


def scan_backends_used(module: nn.Module) -> str | None:
    """The scan backends `module`'s Mamba blocks ran last, in layer order, joined by '+'.

    They differ only when some layers get a per-sample A that a backend cannot take.
    None before the first forward.
    """
    used = dict.fromkeys(
        block.scan_backend_used
        for block in module.modules()
        if isinstance(block, MambaBlock) and block.scan_backend_used is not None
    )
    return "+".join(used) or None


class MambaBackbone(nn.Module):
    """Pre-norm residual Mamba layers, then a final LayerNorm.

    The parallel `forward` serves training and classification; `step` runs the same
    causal model one token at a time with carried state, for generation and streaming.
    """

    def __init__(self, options: MambaOptions | None = None) -> None:
        super().__init__()
        options = options or MambaOptions()
        self.d_model = options.d_model
        self.bidirectional = options.bidirectional
        self.layers = nn.ModuleList(MambaLayer(options) for _ in range(options.n_layers))
        self.norm_f = nn.LayerNorm(options.d_model)
        self._slot_names = tuple(self.adapter_slots())

    @property
    def scan_backend_used(self) -> str | None:
        """The selective-scan backend of the last forward (recorded in run metadata)."""
        return scan_backends_used(self)

    def adapter_slots(self) -> dict[str, AdapterSlot]:
        """Per layer i: `layers.{i}.A` (clamped below zero), `layers.{i}.dt_bias`, `layers.{i}.D`.

        In bidirectional mode the reverse mixer adds `layers.{i}.reverse.A`,
        `layers.{i}.reverse.dt_bias` and `layers.{i}.reverse.D`. Bases are detached views
        of the current weights: adapters read shapes, devices and values from them and
        build their own tensors.
        """
        return stacked_slots(self.layers)

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        adapter_state: AdapterState | None = None,
        return_features: bool = False,
    ) -> Tensor | ModelOutput:
        """`(B, L, d_model)` -> `(B, L, d_model)`; `mask` (B, L) is True on real tokens.

        Padded inputs are zeroed and leave every layer's state unchanged, so padding (left
        or right, and in either direction) never changes real positions.
        """
        state = adapter_state or {}
        check_state_keys(state, self._slot_names, type(self).__name__)
        if mask is not None:
            mask = mask.bool()
            x = x * mask.unsqueeze(-1).to(x.dtype)
        a_clamped = torch.zeros((), dtype=torch.long, device=x.device)
        for i, layer in enumerate(self.layers):
            x, clamped = layer(x, mask, state, f"layers.{i}.")
            a_clamped = a_clamped + clamped
        features = self.norm_f(x)
        if not return_features:
            return features
        return ModelOutput(
            logits=features, features=features, stats={"a_clamped": float(a_clamped)}
        )

    def init_cache(self, batch_size: int) -> list[MambaLayerCache]:
        """Step-mode state for the start of a sequence: one cache per layer, all zeros."""
        return [layer.mixer.init_cache(batch_size) for layer in self.layers]

    def step(
        self,
        x_t: Tensor,
        cache: list[MambaLayerCache],
        adapter_state: AdapterState | None = None,
    ) -> tuple[Tensor, list[MambaLayerCache]]:
        """One token `(B, d_model)` -> its features `(B, d_model)` and the next cache.

        Feeding a sequence token by token gives the parallel forward's outputs. The cache
        is replaced, never mutated, so earlier caches stay valid (and differentiable).
        """
        if self.bidirectional:
            raise ValueError("step mode needs a causal backbone; this one is bidirectional")
        state = adapter_state or {}
        check_state_keys(state, self._slot_names, type(self).__name__)
        next_cache = []
        for i, (layer, layer_cache) in enumerate(zip(self.layers, cache, strict=True)):
            x_t, layer_cache = layer.step(x_t, layer_cache, state, f"layers.{i}.")
            next_cache.append(layer_cache)
        return self.norm_f(x_t), next_cache
