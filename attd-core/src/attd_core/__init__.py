"""attd-core: contracts, plugin system, Mamba backbone, adapters, TTA engine and runtime.

This module is the public API for plugin authors: import from here only. Contracts,
specs and the plugin manager load eagerly and import no torch; the torch-backed
components load on first attribute access, so plugin discovery stays fast.

The one submodule meant for plugins is `attd_core.testing`, for their tests: a pytest
plugin (the `attd_pm` fixture), conformance suites per component kind and tiny factories.
"""

from __future__ import annotations

import importlib
from typing import Any

from attd_core.errors import (
    AttdError,
    CheckpointError,
    ConfigError,
    PluginError,
    UnknownComponentError,
    describe_validation_error,
)
from attd_core.hookspecs import hookimpl
from attd_core.interfaces import (
    AdaptableModel,
    Adaptation,
    Adapter,
    AdapterSlot,
    AdapterState,
    Backbone,
    Batch,
    Controller,
    ControllerPlan,
    Encoder,
    InnerObjective,
    InputSpec,
    ModelOutput,
    Pooling,
    Shift,
    Task,
    TTAStrategy,
)
from attd_core.options import InnerLoopOptions
from attd_core.plugins import PluginManager, PluginRow, get_plugin_manager
from attd_core.spec_strings import ComponentChoice, parse_component
from attd_core.specs import (
    AdapterSpec,
    BackboneSpec,
    ControllerSpec,
    EncoderSpec,
    NoOptions,
    ObjectiveSpec,
    PluginSpec,
    PoolingSpec,
    ShiftSpec,
    StrategySpec,
    TaskSpec,
    filled_options,
)

__version__ = "0.1.0"

_LAZY = {
    "MambaBackbone": "attd_core.backbones.mamba",
    "TransformerBackbone": "attd_core.backbones.transformer",
    "HybridBackbone": "attd_core.backbones.hybrid",
    "load_pretrained_mamba": "attd_core.backbones.pretrained",
    "PretrainedMamba": "attd_core.backbones.pretrained",
    "selective_scan": "attd_core.backbones.scan",
    "available_backends": "attd_core.backbones.scan",
    "DeltaSSMAdapter": "attd_core.adapters.delta_ssm",
    "LoRAAdapter": "attd_core.adapters.lora",
    "StateOffsetAdapter": "attd_core.adapters.state_offset",
    "NormAffineAdapter": "attd_core.adapters.norm_affine",
    "CombinedAdapter": "attd_core.adapters.combined",
    "Entropy": "attd_core.tta.objectives",
    "EntropyKL": "attd_core.tta.objectives",
    "NextToken": "attd_core.tta.objectives",
    "MaskedReconstruction": "attd_core.tta.objectives",
    "NextStep": "attd_core.tta.objectives",
    "Consistency": "attd_core.tta.objectives",
    "FixedController": "attd_core.tta.controllers",
    "ThresholdController": "attd_core.tta.controllers",
    "GateController": "attd_core.tta.controllers",
    "HaltingController": "attd_core.tta.controllers",
    "QuantileController": "attd_core.tta.controllers",
    "IsotonicController": "attd_core.tta.controllers",
    "adapt_batch": "attd_core.tta.engine",
    "select_keys": "attd_core.tta.selector",
    "NoAdaptation": "attd_core.tta.strategies",
    "InnerLoopStrategy": "attd_core.tta.strategies",
    "FixedSteps": "attd_core.tta.strategies",
    "AdaptiveSteps": "attd_core.tta.strategies",
    "OracleSteps": "attd_core.tta.strategies",
    "masked_mean": "attd_core.pooling",
    "AttdModel": "attd_core.model",
    "BoundModel": "attd_core.model",
    "ClassificationTask": "attd_core.tasks",
    "RunConfig": "attd_core.runtime.config",
    "ComponentConfig": "attd_core.runtime.config",
    "ModelConfig": "attd_core.runtime.config",
    "TrainConfig": "attd_core.runtime.config",
    "EvalConfig": "attd_core.runtime.config",
    "RuntimeConfig": "attd_core.runtime.config",
    "ResolvedConfig": "attd_core.runtime.config",
    "load_yaml_file": "attd_core.runtime.config",
    "RUN_MARKERS": "attd_core.runtime.run",
    "resolve_run_config": "attd_core.runtime.config",
    "run_experiment": "attd_core.runtime.run",
    "load_run": "attd_core.runtime.finished_run",
    "resume_config": "attd_core.runtime.stopped_run",
    "evaluate_strategies": "attd_core.runtime.run",
    "EvalResult": "attd_core.runtime.evaluator",
    "RunSummary": "attd_core.runtime.summary",
    "EvalSummary": "attd_core.runtime.summary",
    "TrainSummary": "attd_core.runtime.summary",
    "PhaseSummary": "attd_core.runtime.summary",
    "MetricsWriter": "attd_core.runtime.metrics",
    "atomic_write_text": "attd_core.runtime.files",
    "fsync_file": "attd_core.runtime.files",
    "progress_bar": "attd_core.runtime.progress",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'attd_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "Adaptation",
    "AdaptableModel",
    "Adapter",
    "AdapterSlot",
    "AdapterSpec",
    "AdapterState",
    "AttdError",
    "Backbone",
    "BackboneSpec",
    "Batch",
    "CheckpointError",
    "ComponentChoice",
    "ConfigError",
    "Controller",
    "ControllerPlan",
    "ControllerSpec",
    "Encoder",
    "EncoderSpec",
    "InnerObjective",
    "InputSpec",
    "ModelOutput",
    "NoOptions",
    "ObjectiveSpec",
    "PluginError",
    "PluginManager",
    "PluginRow",
    "PluginSpec",
    "InnerLoopOptions",
    "Pooling",
    "PoolingSpec",
    "Shift",
    "ShiftSpec",
    "StrategySpec",
    "TTAStrategy",
    "Task",
    "TaskSpec",
    "UnknownComponentError",
    "__version__",
    "describe_validation_error",
    "filled_options",
    "get_plugin_manager",
    "hookimpl",
    "parse_component",
    *_LAZY,
]
