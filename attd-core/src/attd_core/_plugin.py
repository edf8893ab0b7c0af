"""attd-core's built-in components, registered through the same hook as any plugin."""

from __future__ import annotations

from collections.abc import Callable

from attd_core import options
from attd_core.hookspecs import hookimpl
from attd_core.specs import AdapterSpec, BackboneSpec, ObjectiveSpec, PluginSpec, StrategySpec


@hookimpl
def attd_register(register: Callable[[PluginSpec], None]) -> None:
    register(
        BackboneSpec(
            name="mamba",
            summary="Mamba selective state-space blocks (scan backend chosen per call)",
            factory="attd_core.backbones.mamba:MambaBackbone",
            config=options.MambaOptions,
        )
    )
    register(
        BackboneSpec(
            name="transformer",
            summary="Pre-norm Transformer encoder with LoRA slots on every projection",
            factory="attd_core.backbones.transformer:TransformerBackbone",
            config=options.TransformerOptions,
        )
    )
    register(
        BackboneSpec(
            name="hybrid",
            summary="Mamba and attention layers interleaved by a pattern such as MMA",
            factory="attd_core.backbones.hybrid:HybridBackbone",
            config=options.HybridOptions,
        )
    )
    register(
        AdapterSpec(
            name="delta-ssm",
            summary="Low-rank delta on each layer's state matrix, A = A0 + U V",
            factory="attd_core.adapters.delta_ssm:DeltaSSMAdapter",
            config=options.DeltaSSMOptions,
        )
    )
    register(
        ObjectiveSpec(
            name="entropy-kl",
            summary="Prediction entropy plus KL to the unadapted prediction",
            factory="attd_core.tta.objectives:EntropyKL",
            config=options.EntropyKLOptions,
        )
    )
    register(
        StrategySpec(
            name="none",
            summary="No test-time adaptation",
            factory="attd_core.tta.strategies:NoAdaptation",
            config=options.NoneOptions,
        )
    )
    register(
        StrategySpec(
            name="fixed",
            summary="k inner SGD steps on the adapter state for every sample",
            factory="attd_core.tta.strategies:FixedSteps",
            config=options.FixedOptions,
        )
    )
