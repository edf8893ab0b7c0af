"""attd-core: contracts, plugin system, Mamba backbone, adapters, TTA engine and runtime.

This module is the public API for plugin authors: import from here only. Contracts,
specs and the plugin manager load eagerly and import no torch; the torch-backed
components load on first attribute access (`lazy_exports`, which plugin packages may
use too), so plugin discovery stays fast. Type checkers and editors see those names
through the `TYPE_CHECKING` imports below.

The one submodule meant for plugins is `attd_core.testing`, for their tests: a pytest
plugin (the `attd_pm` fixture), conformance suites per component kind and tiny factories.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from attd_core.errors import (
    AttdError,
    CheckpointError,
    ConfigError,
    PluginError,
    TrainingDivergedError,
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
from attd_core.lazy import lazy_exports
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
from attd_core.strict_json import json_text

__version__ = "0.1.0"

if TYPE_CHECKING:
    from attd_core.adapters.combined import CombinedAdapter as CombinedAdapter
    from attd_core.adapters.delta_ssm import DeltaSSMAdapter as DeltaSSMAdapter
    from attd_core.adapters.lora import LoRAAdapter as LoRAAdapter
    from attd_core.adapters.norm_affine import NormAffineAdapter as NormAffineAdapter
    from attd_core.adapters.state_offset import StateOffsetAdapter as StateOffsetAdapter
    from attd_core.backbones.hybrid import HybridBackbone as HybridBackbone
    from attd_core.backbones.mamba import MambaBackbone as MambaBackbone
    from attd_core.backbones.pretrained import PretrainedMamba as PretrainedMamba
    from attd_core.backbones.pretrained import load_pretrained_mamba as load_pretrained_mamba
    from attd_core.backbones.scan import available_backends as available_backends
    from attd_core.backbones.scan import selective_scan as selective_scan
    from attd_core.backbones.transformer import TransformerBackbone as TransformerBackbone
    from attd_core.model import AttdModel as AttdModel
    from attd_core.model import BoundModel as BoundModel
    from attd_core.pooling import masked_mean as masked_mean
    from attd_core.runtime.config import ComponentConfig as ComponentConfig
    from attd_core.runtime.config import EvalConfig as EvalConfig
    from attd_core.runtime.config import ModelConfig as ModelConfig
    from attd_core.runtime.config import ResolvedConfig as ResolvedConfig
    from attd_core.runtime.config import RunConfig as RunConfig
    from attd_core.runtime.config import RuntimeConfig as RuntimeConfig
    from attd_core.runtime.config import TrainConfig as TrainConfig
    from attd_core.runtime.config import flatten_dotted as flatten_dotted
    from attd_core.runtime.config import load_yaml_file as load_yaml_file
    from attd_core.runtime.config import resolve_run_config as resolve_run_config
    from attd_core.runtime.evaluator import EvalResult as EvalResult
    from attd_core.runtime.files import atomic_write_text as atomic_write_text
    from attd_core.runtime.files import check_destination as check_destination
    from attd_core.runtime.files import fsync_file as fsync_file
    from attd_core.runtime.files import is_staging_name as is_staging_name
    from attd_core.runtime.finished_run import load_run as load_run
    from attd_core.runtime.metrics import MetricsWriter as MetricsWriter
    from attd_core.runtime.paired import compare_paired as compare_paired
    from attd_core.runtime.paired import compare_runs as compare_runs
    from attd_core.runtime.paired import paired_summaries as paired_summaries
    from attd_core.runtime.paired import with_paired as with_paired
    from attd_core.runtime.progress import progress_bar as progress_bar
    from attd_core.runtime.records import ValidationRecord as ValidationRecord
    from attd_core.runtime.run import check_shift as check_shift
    from attd_core.runtime.run import evaluate_strategies as evaluate_strategies
    from attd_core.runtime.run import run_experiment as run_experiment
    from attd_core.runtime.run_folder import RUN_MARKERS as RUN_MARKERS
    from attd_core.runtime.run_lock import FolderLock as FolderLock
    from attd_core.runtime.run_lock import lock_folder as lock_folder
    from attd_core.runtime.stopped_run import resume_config as resume_config
    from attd_core.runtime.summary import EvalSummary as EvalSummary
    from attd_core.runtime.summary import PairedComparison as PairedComparison
    from attd_core.runtime.summary import PhaseSummary as PhaseSummary
    from attd_core.runtime.summary import RunSummary as RunSummary
    from attd_core.runtime.summary import TrainSummary as TrainSummary
    from attd_core.tasks import ClassificationTask as ClassificationTask
    from attd_core.tta.controllers import FixedController as FixedController
    from attd_core.tta.controllers import GateController as GateController
    from attd_core.tta.controllers import HaltingController as HaltingController
    from attd_core.tta.controllers import IsotonicController as IsotonicController
    from attd_core.tta.controllers import QuantileController as QuantileController
    from attd_core.tta.controllers import ThresholdController as ThresholdController
    from attd_core.tta.engine import adapt_batch as adapt_batch
    from attd_core.tta.objectives import Consistency as Consistency
    from attd_core.tta.objectives import Entropy as Entropy
    from attd_core.tta.objectives import EntropyKL as EntropyKL
    from attd_core.tta.objectives import MaskedReconstruction as MaskedReconstruction
    from attd_core.tta.objectives import Memo as Memo
    from attd_core.tta.objectives import NextStep as NextStep
    from attd_core.tta.objectives import NextToken as NextToken
    from attd_core.tta.selector import select_keys as select_keys
    from attd_core.tta.strategies import AdaptiveSteps as AdaptiveSteps
    from attd_core.tta.strategies import FixedSteps as FixedSteps
    from attd_core.tta.strategies import InnerLoopStrategy as InnerLoopStrategy
    from attd_core.tta.strategies import NoAdaptation as NoAdaptation
    from attd_core.tta.strategies import OracleSteps as OracleSteps
    from attd_core.tta.views import sample_views as sample_views


_LAZY_NAMES = lazy_exports(
    globals(),
    {
        "attd_core.adapters.combined": ("CombinedAdapter",),
        "attd_core.adapters.delta_ssm": ("DeltaSSMAdapter",),
        "attd_core.adapters.lora": ("LoRAAdapter",),
        "attd_core.adapters.norm_affine": ("NormAffineAdapter",),
        "attd_core.adapters.state_offset": ("StateOffsetAdapter",),
        "attd_core.backbones.hybrid": ("HybridBackbone",),
        "attd_core.backbones.mamba": ("MambaBackbone",),
        "attd_core.backbones.pretrained": ("PretrainedMamba", "load_pretrained_mamba"),
        "attd_core.backbones.scan": ("available_backends", "selective_scan"),
        "attd_core.backbones.transformer": ("TransformerBackbone",),
        "attd_core.model": ("AttdModel", "BoundModel"),
        "attd_core.pooling": ("masked_mean",),
        "attd_core.runtime.config": (
            "ComponentConfig",
            "EvalConfig",
            "ModelConfig",
            "ResolvedConfig",
            "RunConfig",
            "RuntimeConfig",
            "TrainConfig",
            "flatten_dotted",
            "load_yaml_file",
            "resolve_run_config",
        ),
        "attd_core.runtime.evaluator": ("EvalResult",),
        "attd_core.runtime.files": (
            "atomic_write_text",
            "check_destination",
            "fsync_file",
            "is_staging_name",
        ),
        "attd_core.runtime.finished_run": ("load_run",),
        "attd_core.runtime.metrics": ("MetricsWriter",),
        "attd_core.runtime.paired": (
            "compare_paired",
            "compare_runs",
            "paired_summaries",
            "with_paired",
        ),
        "attd_core.runtime.progress": ("progress_bar",),
        "attd_core.runtime.records": ("ValidationRecord",),
        "attd_core.runtime.run": ("check_shift", "evaluate_strategies", "run_experiment"),
        "attd_core.runtime.run_folder": ("RUN_MARKERS",),
        "attd_core.runtime.run_lock": ("FolderLock", "lock_folder"),
        "attd_core.runtime.stopped_run": ("resume_config",),
        "attd_core.runtime.summary": (
            "EvalSummary",
            "PairedComparison",
            "PhaseSummary",
            "RunSummary",
            "TrainSummary",
        ),
        "attd_core.tasks": ("ClassificationTask",),
        "attd_core.tta.controllers": (
            "FixedController",
            "GateController",
            "HaltingController",
            "IsotonicController",
            "QuantileController",
            "ThresholdController",
        ),
        "attd_core.tta.engine": ("adapt_batch",),
        "attd_core.tta.objectives": (
            "Consistency",
            "Entropy",
            "EntropyKL",
            "MaskedReconstruction",
            "Memo",
            "NextStep",
            "NextToken",
        ),
        "attd_core.tta.selector": ("select_keys",),
        "attd_core.tta.views": ("sample_views",),
        "attd_core.tta.strategies": (
            "AdaptiveSteps",
            "FixedSteps",
            "InnerLoopStrategy",
            "NoAdaptation",
            "OracleSteps",
        ),
    },
)


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
    "TrainingDivergedError",
    "UnknownComponentError",
    "__version__",
    "describe_validation_error",
    "filled_options",
    "get_plugin_manager",
    "hookimpl",
    "json_text",
    "lazy_exports",
    "parse_component",
    *_LAZY_NAMES,
]
