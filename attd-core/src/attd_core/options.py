"""Option models of attd-core's built-in components.

They live apart from the components so that registering them (and listing plugins)
imports pydantic only, not torch.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _StackOptions(_Options):
    """What every residual stack of layers has."""

    d_model: int = Field(64, ge=1, description="Width of the residual stream.")
    n_layers: int = Field(2, ge=1, description="Number of residual layers.")
    dropout: float = Field(
        0.0, ge=0, lt=1, description="Dropout on each residual branch (and attention weights)."
    )


class MambaMixerOptions(_StackOptions):
    """The Mamba mixer's fields, shared by the Mamba and the hybrid backbone."""

    d_state: int = Field(16, ge=1, description="SSM state size N.")
    d_conv: int = Field(4, ge=1, description="Width of the causal depthwise convolution.")
    expand: int = Field(2, ge=1, description="d_inner = expand * d_model.")
    dt_rank: int | None = Field(None, ge=1, description="Default ceil(d_model / 16).")
    dt_min: float = Field(1e-3, gt=0, description="Smallest initial step size.")
    dt_max: float = Field(1e-1, gt=0, description="Largest initial step size.")
    scan_backend: Literal["auto", "reference", "recompute", "chunked", "numba", "mamba-ssm"] = (
        Field("auto", description="Selective-scan backend; auto picks the fastest that fits.")
    )
    bidirectional: bool = Field(
        False,
        description="Also run a second mixer over each sample's reversed real tokens and add "
        "its output (for classification; no step mode).",
    )

    @model_validator(mode="after")
    def _dt_range(self) -> MambaMixerOptions:
        if self.dt_min > self.dt_max:
            raise ValueError(f"dt_min ({self.dt_min}) must not exceed dt_max ({self.dt_max})")
        return self


class AttentionOptions(_StackOptions):
    """The pre-norm attention layer's fields, shared by the transformer and the hybrid."""

    n_heads: int = Field(4, ge=1, description="Attention heads; must divide d_model.")
    mlp_ratio: int = Field(4, ge=1, description="MLP hidden width = mlp_ratio * d_model.")
    causal: bool = Field(False, description="Attend to earlier tokens only.")

    @model_validator(mode="after")
    def _heads_divide_width(self) -> AttentionOptions:
        if self.d_model % self.n_heads:
            raise ValueError(f"n_heads ({self.n_heads}) must divide d_model ({self.d_model})")
        return self


class MambaOptions(MambaMixerOptions):
    """The Mamba backbone (specs/attd.md defaults)."""


class TransformerOptions(AttentionOptions):
    """A pre-norm Transformer encoder with sinusoidal positions: the attention baseline."""


class HybridOptions(MambaMixerOptions, AttentionOptions):
    """Mamba and attention layers interleaved; Mamba layers carry position, so no encoding."""

    n_layers: int = Field(3, ge=1, description="Number of residual layers.")
    pattern: str = Field(
        "MMA",
        pattern="^[MA]*M[MA]*$",
        description="Layer kinds, M (Mamba) or A (attention), repeated or cut to n_layers; "
        "at least one M, since attention layers here get no positional encoding.",
    )


class DeltaSSMOptions(_Options):
    """Low-rank delta on each layer's state matrix: A = A0 + U V."""

    rank: int = Field(4, ge=1, description="Rank r of U (d_inner x r) and V (r x d_state).")
    max_delta_norm: float = Field(0.5, gt=0, description="Cap on the Frobenius norm of U V.")
    init_scale: float = Field(0.01, gt=0, description="Std of V's random initialisation.")
    per_sample: bool = Field(True, description="One adapter per sample (leading batch dim).")


class NoneOptions(_Options):
    """No adaptation."""


class FixedOptions(_Options):
    """The same number of inner steps for every sample."""

    positional: ClassVar[tuple[str, ...]] = ("k",)

    k: int = Field(ge=0, description="Inner steps per sample.")
    lr: float = Field(1e-3, gt=0, description="Inner SGD learning rate.")
    grad_clip: float | None = Field(1.0, gt=0, description="Per-sample gradient norm cap.")


class EntropyKLOptions(_Options):
    """Prediction entropy plus a KL anchor to the unadapted prediction."""

    kl_weight: float = Field(1.0, ge=0, description="Weight of KL(p_adapted || p_reference).")
    confidence_threshold: float | None = Field(
        None, gt=0, le=1, description="Only samples this confident contribute entropy."
    )
