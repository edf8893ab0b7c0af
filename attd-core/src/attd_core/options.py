"""Option models of attd-core's built-in components.

They live apart from the components so that registering them (and listing plugins)
imports pydantic only, not torch. Floats must be finite (`lr=.inf` is refused), and
every count has an upper bound from `attd_core.limits`, stated in the error message.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from attd_core.limits import (
    MAX_CONV,
    MAX_HEADS,
    MAX_INNER_STEPS,
    MAX_LAYERS,
    MAX_RANK,
    MAX_RATIO,
    MAX_SEED,
    MAX_STATE,
    MAX_VIEWS,
    MAX_WIDTH,
)


class _Options(BaseModel):
    # Built on first use, not at import: listing plugins imports every options model.
    model_config = ConfigDict(extra="forbid", defer_build=True, allow_inf_nan=False)


class _StackOptions(_Options):
    """What every residual stack of layers has."""

    d_model: int = Field(64, ge=1, le=MAX_WIDTH, description="Width of the residual stream.")
    n_layers: int = Field(2, ge=1, le=MAX_LAYERS, description="Number of residual layers.")
    dropout: float = Field(
        0.0, ge=0, lt=1, description="Dropout on each residual branch (and attention weights)."
    )


class MambaMixerOptions(_StackOptions):
    """The Mamba mixer's fields, shared by the Mamba and the hybrid backbone."""

    d_state: int = Field(16, ge=1, le=MAX_STATE, description="SSM state size N.")
    d_conv: int = Field(
        4, ge=1, le=MAX_CONV, description="Width of the causal depthwise convolution."
    )
    expand: int = Field(2, ge=1, le=MAX_RATIO, description="d_inner = expand * d_model.")
    dt_rank: int | None = Field(None, ge=1, le=MAX_WIDTH, description="Default ceil(d_model / 16).")
    dt_min: float = Field(1e-3, gt=0, description="Smallest initial step size.")
    dt_max: float = Field(1e-1, gt=0, description="Largest initial step size.")
    scan_backend: Literal["auto", "reference", "recompute", "chunked", "numba", "mamba-ssm"] = (
        Field("auto", description="Selective-scan backend; auto picks the fastest that fits.")
    )
    bidirectional: bool = Field(
        False,
        description="Also run a second mixer over each sample's reversed real tokens and add "
        "its output (for classification).",
    )

    @model_validator(mode="after")
    def _dt_range(self) -> MambaMixerOptions:
        if self.dt_min > self.dt_max:
            raise ValueError(f"dt_min ({self.dt_min}) must not exceed dt_max ({self.dt_max})")
        return self


class AttentionOptions(_StackOptions):
    """The pre-norm attention layer's fields, shared by the transformer and the hybrid."""

    n_heads: int = Field(4, ge=1, le=MAX_HEADS, description="Attention heads; must divide d_model.")
    mlp_ratio: int = Field(
        4, ge=1, le=MAX_RATIO, description="MLP hidden width = mlp_ratio * d_model."
    )
    causal: bool = Field(False, description="Attend to earlier tokens only.")

    @model_validator(mode="after")
    def _heads_divide_width(self) -> AttentionOptions:
        if self.d_model % self.n_heads:
            raise ValueError(f"n_heads ({self.n_heads}) must divide d_model ({self.d_model})")
        return self


class MambaOptions(MambaMixerOptions):
    """The Mamba backbone (specs/attd.md defaults)."""

    norm: Literal["layer", "rms"] = Field(
        "layer",
        description="The norm of each layer and the final one: layer (LayerNorm, a scale and "
        "a shift) or rms (RMSNorm, a scale only, as in mamba-ssm and transformers).",
    )
    norm_eps: float = Field(1e-5, gt=0, description="The norms' epsilon.")
    pretrained: str | None = Field(
        None,
        min_length=1,
        description="A transformers or mamba-ssm Mamba checkpoint to start from (a folder "
        "with config.json and model.safetensors): its config sets the shape options left "
        "unset, its weights load into the backbone.",
    )

    @model_validator(mode="after")
    def _pretrained_shape(self) -> MambaOptions:
        """Fill the shape from the checkpoint's config.json; refuse options that contradict it.

        Reading the shape here, while a run config resolves, makes `config.yaml` and
        `attd config show` record the real model, and stops a mismatch before anything loads.
        The path is made absolute, so a run folder's config names it from anywhere.
        """
        if self.pretrained is None:
            return self
        from attd_core.backbones.pretrained_config import read_source  # JSON only, no torch

        source = read_source(self.pretrained)
        self.pretrained = str(Path(self.pretrained).expanduser().resolve())
        if self.bidirectional:
            raise ValueError(
                f"pretrained {self.pretrained!r} is a causal model: bidirectional=true would "
                "add reverse mixers it has no weights for"
            )
        for key, value in source.options.items():
            given = getattr(self, key)
            if key in self.model_fields_set and given is not None and given != value:
                raise ValueError(
                    f"{key}={given!r} disagrees with pretrained {self.pretrained!r}, which "
                    f"has {key}={value!r}; leave {key} unset (a --preset or a config file "
                    "may set it)"
                )
            setattr(self, key, value)
        return self


class TransformerOptions(AttentionOptions):
    """A pre-norm Transformer encoder with sinusoidal positions: the attention baseline."""


class HybridOptions(MambaMixerOptions, AttentionOptions):
    """Mamba and attention layers interleaved; Mamba layers carry position, so no encoding."""

    n_layers: int = Field(3, ge=1, le=MAX_LAYERS, description="Number of residual layers.")
    pattern: str = Field(
        "MMA",
        pattern="^[MA]*M[MA]*$",
        description="Layer kinds, M (Mamba) or A (attention), repeated or cut to n_layers; "
        "at least one M, since attention layers here get no positional encoding.",
    )


class _AdapterOptions(_Options):
    per_sample: bool = Field(True, description="One adapter per sample (leading batch dim).")


class DeltaSSMOptions(_AdapterOptions):
    """Low-rank delta on each layer's state matrix (plus dt bias and D).

    `space=log` (the default): `A = A0 * exp(U V)`, a delta on `A_log`, so a step changes
    every decay rate by a share of itself, whatever the size of A0, and A stays negative.
    `space=linear`: the original script's `A = A0 + U V` with an absolute cap, whose 0.5
    is ~0.1 % of ||A0|| at d_inner 128, d_state 16: too small to move a prediction.
    """

    rank: int = Field(
        4, ge=1, le=MAX_RANK, description="Rank r of U (d_inner x r) and V (r x d_state)."
    )
    space: Literal["log", "linear"] = Field(
        "log",
        description="log: A = A0 * exp(U V) (relative, always stable); linear: A = A0 + U V "
        "(the original script's, absolute).",
    )
    max_delta_norm: float = Field(
        0.5,
        gt=0,
        description="Cap on U V: log, its root-mean-square entry (the typical log-ratio "
        "of A's entries, 0.5 = within a factor e^0.5); linear, its Frobenius norm.",
    )
    init_scale: float | None = Field(
        None,
        gt=0,
        description="Std of V's random initialisation; None: 1/sqrt(d_state) in log "
        "space (a step on U moves log A as much as U), 0.01 in linear space (the original).",
    )
    dt_bias: bool = Field(False, description="Also adapt each layer's dt bias (dense delta).")
    D: bool = Field(False, description="Also adapt each layer's skip gain D (dense delta).")
    keep_a_negative: bool = Field(
        True,
        description="linear space: shrink U V where A0 + U V would reach the slot's upper "
        "bound (A < 0); counted as a_projected. Log space keeps A negative by itself.",
    )


class LoRAOptions(_AdapterOptions):
    """Low-rank deltas on linear weights, W + (alpha / rank) U V, U zero so nothing changes."""

    rank: int = Field(4, ge=1, le=MAX_RANK, description="Rank r: U is (out x r), V is (r x in).")
    alpha: float = Field(8.0, gt=0, description="Scale alpha / rank of the product U V.")
    targets: list[str] = Field(
        default_factory=lambda: ["in_proj", "x_proj", "dt_proj", "out_proj", "q", "k", "v", "out"],
        min_length=1,
        description="Weight slots to adapt: a slot's last name part (in_proj) or a glob "
        "over full slot names (layers.1.*).",
    )


class StateOffsetOptions(_AdapterOptions):
    """A learned initial SSM state per layer: the state-space counterpart of a prefix."""


class NormAffineOptions(_AdapterOptions):
    """Deltas on the norm layers' scales and biases (what TENT adapts)."""

    targets: list[str] = Field(
        default_factory=lambda: ["*"],
        min_length=1,
        description="Norm slots to adapt: globs over slot names (layers.0.norm.*).",
    )


class NoneOptions(_Options):
    """No adaptation."""


class InnerLoopOptions(_Options):
    """The inner loop and its guards, shared by every strategy that adapts."""

    lr: float = Field(1e-3, gt=0, description="Inner learning rate.")
    optimizer: Literal["sgd", "adam"] = Field("sgd", description="Inner optimiser.")
    momentum: float = Field(0.0, ge=0, lt=1, description="SGD momentum.")
    grad_clip: float | None = Field(1.0, gt=0, description="Per-sample gradient norm cap.")
    trust_region: float | None = Field(
        None, gt=0, description="Project each sample's ||state - initial|| back to <= this."
    )
    damping: float = Field(
        1.0, gt=0, le=1, description="gamma of psi <- (1-gamma) psi + gamma (psi - lr grad)."
    )
    learned_damping: bool = Field(
        False, description="gamma from a learned gate fed with the inner loss (controller regime)."
    )
    rollback: bool = Field(
        False, description="Undo a sample's step when it raised that sample's inner loss."
    )
    nonfinite_guard: bool = Field(
        True, description="Revert and flag a sample whose loss or gradient is not finite."
    )
    entropy_filter: float | None = Field(
        None, gt=0, description="Skip samples whose prediction entropy exceeds c * ln C."
    )
    reset: Literal["episodic", "continual"] = Field(
        "episodic", description="Fresh state per batch, or one shared state carried along."
    )
    collapse_entropy: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="Continual only: reset when a batch's mean entropy falls below c * ln C.",
    )
    adapt: str = Field(
        "all",
        min_length=1,
        description="What is adapted: all, or adapter names and key globs joined by + "
        "(delta-ssm+norm-affine, lora+layers.0.*).",
    )

    @model_validator(mode="after")
    def _continual_settings(self) -> InnerLoopOptions:
        if self.collapse_entropy is not None and self.reset != "continual":
            raise ValueError("collapse_entropy needs reset=continual")
        return self


class FixedOptions(InnerLoopOptions):
    """The same number of inner steps for every sample."""

    positional: ClassVar[tuple[str, ...]] = ("k",)

    k: int = Field(ge=0, le=MAX_INNER_STEPS, description="Inner steps per sample.")


class AdaptiveOptions(InnerLoopOptions):
    """Steps per sample from a controller fed with the inner loss before adaptation."""

    positional: ClassVar[tuple[str, ...]] = ("k_max",)

    k_max: int = Field(ge=1, le=MAX_INNER_STEPS, description="Most inner steps any sample takes.")
    controller: str = Field("threshold", min_length=1, description="Controller plugin name.")
    target_k: float | None = Field(
        None,
        ge=0,
        description="Mean k a calibrated controller aims at (default k_max / 4).",
    )
    tau: float = Field(0.1, gt=0, description="Temperature of soft gates.")

    @model_validator(mode="after")
    def _target_within_range(self) -> AdaptiveOptions:
        if self.target_k is not None and self.target_k > self.k_max:
            raise ValueError(f"target_k ({self.target_k}) must not exceed k_max ({self.k_max})")
        return self


class GateOptions(AdaptiveOptions):
    """Ponder or not: 0 or k_max steps, by one threshold on the difficulty."""

    controller: Literal["gate"] = Field("gate", description="Always the gate controller.")


class OracleOptions(InnerLoopOptions):
    """Each sample's best step count in 0..k_max, chosen with labels: evaluation only."""

    positional: ClassVar[tuple[str, ...]] = ("k_max",)

    k_max: int = Field(ge=1, le=MAX_INNER_STEPS, description="Most inner steps any sample takes.")


class ControllerOptions(_Options):
    """What every controller takes: the step budget, set by the strategy."""

    k_max: int = Field(5, ge=1, le=MAX_INNER_STEPS, description="Most inner steps.")


class CalibratedControllerOptions(ControllerOptions):
    target_k: float | None = Field(
        None, ge=0, description="Mean k to aim at when calibrated (default k_max / 4)."
    )


class FixedControllerOptions(ControllerOptions):
    """k_max steps for every sample."""


class ThresholdControllerOptions(CalibratedControllerOptions):
    """k = #{i: s > t_i}, thresholds t_i = t0 + cumsum(softplus(delta_i)), learned."""

    tau: float = Field(0.1, gt=0, description="Temperature of the soft gates.")


class GateControllerOptions(CalibratedControllerOptions):
    """0 or k_max steps by one threshold."""

    tau: float = Field(0.1, gt=0, description="Temperature of the soft gate.")


class HaltingControllerOptions(CalibratedControllerOptions):
    """A per-step halting hazard that falls as difficulty rises; expected k is the cost."""


class QuantileControllerOptions(CalibratedControllerOptions):
    """Thresholds at quantiles of calibration difficulties, to hit a target mean k."""


class IsotonicControllerOptions(ControllerOptions):
    """Isotonic regression of each calibration sample's best step on its difficulty."""


class EntropyOptions(_Options):
    """Mean prediction entropy (TENT), optionally on confident samples only."""

    confidence_threshold: float | None = Field(
        None, gt=0, le=1, description="Only samples this confident contribute entropy."
    )


class EntropyKLOptions(EntropyOptions):
    """Prediction entropy plus a KL anchor to the unadapted prediction."""

    kl_weight: float = Field(1.0, ge=0, description="Weight of KL(p_adapted || p_reference).")


class NextTokenOptions(_Options):
    """Next-token cross-entropy on the input itself (language-modelling tasks)."""


class MaskedReconstructionOptions(_Options):
    """Blank a fraction of tokens; reconstruct the unadapted features (or the inputs) there."""

    target: Literal["features", "inputs"] = Field(
        "features",
        description="features: the unadapted model's, no head; inputs: the blanked tokens "
        "or pixels, through a head the aligned regime trains.",
    )
    mask_ratio: float = Field(0.15, gt=0, lt=1, description="Fraction of real tokens blanked.")
    seed: int = Field(
        0, ge=0, le=MAX_SEED, description="Seed of the masks (the same for every batch)."
    )


class NextStepOptions(_Options):
    """MSE between the features at t and the input (or its embedding) at t + 1."""

    target: Literal["embedded", "inputs"] = Field(
        "embedded",
        description="embedded: the input embedding, no head; inputs: the raw float input, "
        "through a head the aligned regime trains.",
    )


class ConsistencyOptions(_Options):
    """Symmetric KL between predictions on two views with tokens dropped at random."""

    drop_ratio: float = Field(0.1, gt=0, lt=1, description="Fraction of tokens dropped per view.")
    seed: int = Field(
        0, ge=0, le=MAX_SEED, description="Seed of the views (the same for every batch)."
    )


class MemoOptions(_Options):
    """Entropy of the prediction averaged over augmented views of each sample (MEMO)."""

    views: int = Field(8, ge=1, le=MAX_VIEWS, description="Augmented views per sample.")
    augmentations: list[Annotated[str, Field(min_length=1)]] | None = Field(
        None,
        min_length=1,
        description="Shift specs applied in order to make each view (token-substitution:1, "
        "random-crop:2); None takes the task's own (Task.augmentations).",
    )
    seed: int = Field(
        0, ge=0, le=MAX_SEED, description="Seed of the views (the same for every batch)."
    )


class TokenShiftOptions(_Options):
    """A token-level corruption of the test inputs."""

    positional: ClassVar[tuple[str, ...]] = ("severity",)

    severity: int = Field(3, ge=1, le=5, description="1 (5 % of tokens) to 5 (25 %).")
