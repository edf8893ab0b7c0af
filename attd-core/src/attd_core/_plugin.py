"""attd-core's built-in components, registered through the same hook as any plugin."""

from __future__ import annotations

from collections.abc import Callable

from attd_core import options
from attd_core.hookspecs import hookimpl
from attd_core.specs import (
    AdapterSpec,
    BackboneSpec,
    ControllerSpec,
    ObjectiveSpec,
    PluginSpec,
    PoolingSpec,
    ShiftSpec,
    StrategySpec,
)

_BACKBONES = "attd_core.backbones"
_ADAPTERS = "attd_core.adapters"
_CONTROLLERS = "attd_core.tta.controllers"
_OBJECTIVES = "attd_core.tta.objectives"
_STRATEGIES = "attd_core.tta.strategies"
_POOLING = "attd_core.pooling"

BUILT_INS: tuple[PluginSpec, ...] = (
    BackboneSpec(
        name="mamba",
        summary="Mamba selective state-space blocks (scan backend chosen per call)",
        factory=f"{_BACKBONES}.mamba:MambaBackbone",
        config=options.MambaOptions,
    ),
    BackboneSpec(
        name="transformer",
        summary="Pre-norm Transformer encoder with LoRA slots on every projection",
        factory=f"{_BACKBONES}.transformer:TransformerBackbone",
        config=options.TransformerOptions,
    ),
    BackboneSpec(
        name="hybrid",
        summary="Mamba and attention layers interleaved by a pattern such as MMA",
        factory=f"{_BACKBONES}.hybrid:HybridBackbone",
        config=options.HybridOptions,
    ),
    AdapterSpec(
        name="delta-ssm",
        summary="Low-rank delta on each layer's state matrix, A = A0 * exp(U V)",
        factory=f"{_ADAPTERS}.delta_ssm:DeltaSSMAdapter",
        config=options.DeltaSSMOptions,
    ),
    AdapterSpec(
        name="lora",
        summary="LoRA on linear weights (Mamba projections, attention and MLP maps)",
        factory=f"{_ADAPTERS}.lora:LoRAAdapter",
        config=options.LoRAOptions,
    ),
    AdapterSpec(
        name="state-offset",
        summary="A learned initial SSM state per layer (the SSM counterpart of a prefix)",
        factory=f"{_ADAPTERS}.state_offset:StateOffsetAdapter",
        config=options.StateOffsetOptions,
    ),
    AdapterSpec(
        name="norm-affine",
        summary="Deltas on norm-layer scales and biases (TENT-style)",
        factory=f"{_ADAPTERS}.norm_affine:NormAffineAdapter",
        config=options.NormAffineOptions,
    ),
    ControllerSpec(
        name="fixed",
        summary="k_max steps for every sample",
        factory=f"{_CONTROLLERS}:FixedController",
        config=options.FixedControllerOptions,
    ),
    ControllerSpec(
        name="threshold",
        summary="Monotone learned thresholds on the difficulty (straight-through)",
        factory=f"{_CONTROLLERS}:ThresholdController",
        config=options.ThresholdControllerOptions,
    ),
    ControllerSpec(
        name="gate",
        summary="One threshold: 0 or k_max steps",
        factory=f"{_CONTROLLERS}:GateController",
        config=options.GateControllerOptions,
    ),
    ControllerSpec(
        name="halting",
        summary="Halting hazard falling with difficulty; expected k is the cost",
        factory=f"{_CONTROLLERS}:HaltingController",
        config=options.HaltingControllerOptions,
    ),
    ControllerSpec(
        name="quantile",
        summary="Thresholds at calibration quantiles, to hit a target mean k",
        factory=f"{_CONTROLLERS}:QuantileController",
        config=options.QuantileControllerOptions,
    ),
    ControllerSpec(
        name="isotonic",
        summary="Isotonic fit of the best step per sample on a labelled calibration split",
        factory=f"{_CONTROLLERS}:IsotonicController",
        config=options.IsotonicControllerOptions,
    ),
    ObjectiveSpec(
        name="entropy",
        summary="Prediction entropy, optionally on confident samples only",
        factory=f"{_OBJECTIVES}:Entropy",
        config=options.EntropyOptions,
    ),
    ObjectiveSpec(
        name="entropy-kl",
        summary="Prediction entropy plus KL to the unadapted prediction",
        factory=f"{_OBJECTIVES}:EntropyKL",
        config=options.EntropyKLOptions,
    ),
    ObjectiveSpec(
        name="next-token",
        summary="Next-token loss on the input itself (language modelling)",
        factory=f"{_OBJECTIVES}:NextToken",
        config=options.NextTokenOptions,
    ),
    ObjectiveSpec(
        name="masked-reconstruction",
        summary="Reconstruct the unadapted features of blanked tokens",
        factory=f"{_OBJECTIVES}:MaskedReconstruction",
        config=options.MaskedReconstructionOptions,
    ),
    ObjectiveSpec(
        name="next-step",
        summary="Predict the next input embedding from each position's features",
        factory=f"{_OBJECTIVES}:NextStep",
        config=options.NextStepOptions,
    ),
    ObjectiveSpec(
        name="consistency",
        summary="Agreement between predictions on two token-dropped views",
        factory=f"{_OBJECTIVES}:Consistency",
        config=options.ConsistencyOptions,
    ),
    ObjectiveSpec(
        name="memo",
        summary="Entropy of the prediction averaged over augmented views (MEMO)",
        factory=f"{_OBJECTIVES}:Memo",
        config=options.MemoOptions,
    ),
    PoolingSpec(
        name="masked-mean",
        summary="Mean over real tokens only (padding excluded); the default",
        factory=f"{_POOLING}:create_masked_mean",
    ),
    PoolingSpec(
        name="mean",
        summary="Plain mean over every position, padding included",
        factory=f"{_POOLING}:create_mean",
    ),
    PoolingSpec(
        name="last",
        summary="The last real token (what a causal model has seen everything at)",
        factory=f"{_POOLING}:create_last",
    ),
    PoolingSpec(
        name="cls",
        summary="The first real token, where a task puts its CLS token",
        factory=f"{_POOLING}:create_cls",
    ),
    ShiftSpec(
        name="token-substitution",
        summary="Replace a share of each input's tokens by others of its tokens",
        factory="attd_core.shifts:TokenSubstitution",
        config=options.TokenShiftOptions,
    ),
    ShiftSpec(
        name="token-deletion",
        summary="Drop a share of each input's tokens",
        factory="attd_core.shifts:TokenDeletion",
        config=options.TokenShiftOptions,
    ),
    ShiftSpec(
        name="token-insertion",
        summary="Insert extra copies of an input's tokens at random places",
        factory="attd_core.shifts:TokenInsertion",
        config=options.TokenShiftOptions,
    ),
    StrategySpec(
        name="none",
        summary="No test-time adaptation",
        factory=f"{_STRATEGIES}:NoAdaptation",
        config=options.NoneOptions,
    ),
    StrategySpec(
        name="fixed",
        summary="k inner steps on the adapter state for every sample",
        factory=f"{_STRATEGIES}:FixedSteps",
        config=options.FixedOptions,
    ),
    StrategySpec(
        name="gate",
        summary="Ponder or not: 0 or k_max steps by one difficulty threshold",
        factory=f"{_STRATEGIES}:AdaptiveSteps",
        config=options.GateOptions,
    ),
    StrategySpec(
        name="adaptive",
        summary="Steps per sample from a controller fed with the inner loss",
        factory=f"{_STRATEGIES}:AdaptiveSteps",
        config=options.AdaptiveOptions,
    ),
    StrategySpec(
        name="oracle",
        summary="Best step count per sample, chosen with labels (evaluation only)",
        factory=f"{_STRATEGIES}:OracleSteps",
        config=options.OracleOptions,
    ),
)


@hookimpl
def attd_register(register: Callable[[PluginSpec], None]) -> None:
    for spec in BUILT_INS:
        register(spec)
