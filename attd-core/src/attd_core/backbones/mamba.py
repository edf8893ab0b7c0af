"""The Mamba backbone, with adapter slots on each layer's A, dt bias, D, projections,
initial SSM state and norms.

Adapters never wrap or mutate modules: the backbone receives an adapter state (a flat
dict of tensors, see `attd_core.AdapterState`) on every call and adds the deltas to its
parameters inside each block, so one set of base weights serves any number of states
and fused kernels, which read weights directly, see the adapted values.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attd_core.backbones.pretrained import load_pretrained_weights
from attd_core.backbones.scan import resolve_backend, selective_scan
from attd_core.backbones.slots import (
    Norm,
    adapted,
    check_state_keys,
    delta_layer_norm,
    delta_linear,
    norm_slots,
    slot_delta,
    stacked_slots,
    weight_slot,
)
from attd_core.interfaces import AdapterSlot, AdapterState
from attd_core.options import MambaMixerOptions, MambaOptions

try:
    from causal_conv1d import causal_conv1d_fn
except ImportError:  # the GPU extra is optional; nn.Conv1d computes the same thing
    causal_conv1d_fn = None

A_UPPER_BOUND = -1e-4
"""Adapted A entries are clamped to at most this, so every mode stays strictly decaying."""

WEIGHT_SLOTS = ("in_proj", "x_proj", "dt_proj", "out_proj")
"""The mixer's linear maps an adapter state may change (dt_proj's bias is the dt_bias slot)."""


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
        # The SSM's own parameters: the trainer gives them train.ssm_lr and no decay.
        for param in (self.A_log, self.D, self.dt_proj.weight, self.dt_proj.bias):
            param._ssm_parameter = True
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
        """`{prefix}A` (kind A, clamped below zero), `A_log` (A = -exp(A_log): a delta
        there scales A's entries), `dt_bias`, `D`, `h0` (the scan's initial state, base
        zeros `(d_inner, d_state)`) and the `weight` slots of `WEIGHT_SLOTS`.

        Bases are detached; each slot's kind is its name, except `h0` (`initial_state`)
        and the projections (`weight`).
        """
        slots = {
            f"{prefix}A": AdapterSlot(
                name=f"{prefix}A", base=self.base_A().detach(), kind="A", upper_bound=A_UPPER_BOUND
            ),
            f"{prefix}A_log": AdapterSlot(
                name=f"{prefix}A_log", base=self.A_log.detach(), kind="A_log"
            ),
            f"{prefix}dt_bias": AdapterSlot(
                name=f"{prefix}dt_bias", base=self.dt_proj.bias.detach(), kind="dt_bias"
            ),
            f"{prefix}D": AdapterSlot(name=f"{prefix}D", base=self.D.detach(), kind="D"),
            f"{prefix}h0": AdapterSlot(
                name=f"{prefix}h0", base=torch.zeros_like(self.A_log), kind="initial_state"
            ),
        }
        for name in WEIGHT_SLOTS:
            slots.update(weight_slot(f"{prefix}{name}", getattr(self, name)))
        return slots

    def initial_state(self, state: AdapterState, prefix: str, batch_size: int) -> Tensor | None:
        """The scan's start `(batch_size, d_inner, d_state)` from the state's `{prefix}h0`.

        None (the scan starts from zeros) when the state has nothing for it.
        """
        delta = slot_delta(state, f"{prefix}h0", self.A_log.shape)
        return None if delta is None else delta.expand(batch_size, self.d_inner, self.d_state)

    def _linear(self, name: str, x: Tensor, state: AdapterState, prefix: str) -> Tensor:
        layer = getattr(self, name)
        bias = None if name == "dt_proj" else layer.bias  # dt bias is added inside the scan
        return delta_linear(x, layer.weight, bias, state, f"{prefix}{name}")

    def _adapted_A(self, state: AdapterState, slot: str) -> Tensor:
        """`-exp(A_log + delta on A_log) + delta on A`, clamped to `A_UPPER_BOUND`."""
        log_delta = slot_delta(state, f"{slot}_log", self.A_log.shape)
        A = self.base_A() if log_delta is None else -torch.exp(self.A_log + log_delta)
        delta = slot_delta(state, slot, A.shape)
        if delta is None:
            return A
        A = A + delta
        return torch.where(A > A_UPPER_BOUND, A.new_tensor(A_UPPER_BOUND), A)

    def _ssm(
        self,
        xs: Tensor,
        z: Tensor,
        state: AdapterState,
        prefix: str,
        mask: Tensor | None = None,
        initial_state: Tensor | None = None,
    ) -> Tensor:
        """The gated selective scan over conv outputs `xs` with the state's deltas applied:
        y `(B, L, d_inner)`."""
        dt, B, C = self._linear("x_proj", xs, state, prefix).split(
            [self.dt_rank, self.d_state, self.d_state], dim=-1
        )
        dt = self._linear("dt_proj", dt, state, prefix)
        A = self._adapted_A(state, f"{prefix}A")
        self.scan_backend_used = resolve_backend(self.scan_backend, xs, A, initial_state)
        return selective_scan(
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
            mask=mask,
            backend=self.scan_backend_used,
        )

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
    ) -> Tensor:
        """Mix `(B, L, d_model)`; the state's deltas are looked up as `{prefix}A` etc.

        Masked tokens feed zeros to the convolution (as before a sequence's start) and
        leave the SSM state unchanged, so left or right padding never reaches real tokens.
        A state holding `{prefix}h0` starts the scan there instead of at zeros.
        """
        state = adapter_state or {}
        xs, z = self._linear("in_proj", x, state, prefix).chunk(2, dim=-1)
        if mask is not None:
            xs = xs * mask.unsqueeze(-1).to(xs.dtype)
        xs = self._conv(xs.transpose(1, 2)).transpose(1, 2)
        if not xs.is_cuda:
            # x_proj's matmul and the CPU scans read (B, L, d_inner) rows: one copy here
            # instead of one in each. mamba-ssm reads the conv's (B, d_inner, L) layout.
            xs = xs.contiguous()
        start = self.initial_state(state, prefix, x.shape[0])
        y = self._ssm(xs, z, state, prefix, mask=mask, initial_state=start)
        return self._linear("out_proj", y, state, prefix)


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


def make_norm(options: MambaOptions) -> Norm:
    """The backbone's norm: LayerNorm, or the RMSNorm that mamba-ssm and transformers use,
    whose checkpoints' `norm.weight` is a scale of `x / rms(x)`, not of `x - mean(x)`."""
    if options.norm == "rms":
        return nn.RMSNorm(options.d_model, eps=options.norm_eps)
    return nn.LayerNorm(options.d_model, eps=options.norm_eps)


class MambaLayer(nn.Module):
    """One residual layer, `x + dropout(mixer(norm(x)))`; `norm` defaults to a LayerNorm.

    In bidirectional mode a second mixer `reverse` (own parameters, as in Caduceus and
    Vision Mamba) reads each sample's real tokens back to front; its output, put back in
    order, is added to the forward mixer's, so every position sees the whole sequence.
    """

    def __init__(self, options: MambaMixerOptions, norm: Norm | None = None) -> None:
        super().__init__()
        self.norm = norm if norm is not None else nn.LayerNorm(options.d_model)
        self.mixer = MambaBlock(options)
        self.reverse = MambaBlock(options) if options.bidirectional else None
        self.dropout = nn.Dropout(options.dropout)

    def adapter_slots(self, prefix: str) -> dict[str, AdapterSlot]:
        slots = self.mixer.adapter_slots(prefix)
        if self.reverse is not None:
            slots.update(self.reverse.adapter_slots(f"{prefix}reverse."))
        slots.update(norm_slots(f"{prefix}norm", self.norm))
        return slots

    def forward(self, x: Tensor, mask: Tensor | None, state: AdapterState, prefix: str) -> Tensor:
        h = delta_layer_norm(x, self.norm, state, f"{prefix}norm")
        y = self.mixer(h, mask, state, prefix)
        if self.reverse is not None:
            backwards = self.reverse(reverse_real_tokens(h, mask), mask, state, f"{prefix}reverse.")
            y = y + reverse_real_tokens(backwards, mask)
        return x + self.dropout(y)


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
    """Pre-norm residual Mamba layers, then a final norm (LayerNorm, or RMSNorm: `norm`).

    With `pretrained` set, the weights come from that transformers or mamba-ssm checkpoint,
    and `pretrained_embedding` holds its token embedding `(rows, d_model)` (None without),
    which `AttdModel` starts its embedding from when the task's vocabulary has as many rows.
    """

    def __init__(self, options: MambaOptions | None = None) -> None:
        super().__init__()
        options = options or MambaOptions()
        self.d_model = options.d_model
        self.layers = nn.ModuleList(
            MambaLayer(options, make_norm(options)) for _ in range(options.n_layers)
        )
        self.norm_f = make_norm(options)
        self._slot_names = tuple(self.adapter_slots())
        self.pretrained_embedding: Tensor | None = None
        if options.pretrained is not None:
            self.pretrained_embedding = load_pretrained_weights(self, options.pretrained)

    @property
    def scan_backend_used(self) -> str | None:
        """The selective-scan backend of the last forward (recorded in run metadata)."""
        return scan_backends_used(self)

    def adapter_slots(self) -> dict[str, AdapterSlot]:
        """Per layer i the mixer's slots `layers.{i}.A`, `.dt_bias`, `.D`, `.h0`, `.in_proj`,
        `.x_proj`, `.dt_proj`, `.out_proj` (see `MambaBlock.adapter_slots`) and the norm's
        `layers.{i}.norm.weight` / `.bias`; then the final norm's `norm_f.weight` / `.bias`.
        With `norm=rms` there are no `.bias` slots: an RMSNorm only scales.

        In bidirectional mode the reverse mixer adds the same slots as
        `layers.{i}.reverse.*`. Bases are detached views of the current weights: adapters
        read shapes, devices and values from them and build their own tensors.
        """
        return stacked_slots(self.layers) | norm_slots("norm_f", self.norm_f)

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        adapter_state: AdapterState | None = None,
    ) -> Tensor:
        """`(B, L, d_model)` -> `(B, L, d_model)`; `mask` (B, L) is True on real tokens.

        Padded inputs are zeroed and leave every layer's state unchanged, so padding (left
        or right, and in either direction) never changes real positions.
        """
        state = adapter_state or {}
        check_state_keys(state, self._slot_names, type(self).__name__)
        if mask is not None:
            mask = mask.bool()
            x = x * mask.unsqueeze(-1).to(x.dtype)
        for i, layer in enumerate(self.layers):
            x = layer(x, mask, state, f"layers.{i}.")
        return delta_layer_norm(x, self.norm_f, state, "norm_f")
