"""The run configuration: layered sources merged in a fixed order, then validated.

Precedence, lowest first: built-in defaults, the task's `run_defaults`, the task's
preset chosen with `--preset` (if any), YAML files in the order given, `--set
key.path=value` overrides, explicit CLI flags. A section (`train`, `model`, ...) takes
only a mapping, a component (`task`, `model.backbone`, ...) its name or a mapping.

A component's options given without its name (a preset's 6 x 256 backbone, `--set
model.backbone.d_model=128`) are for whichever component the config names, even one
chosen later; one that component does not take is an error naming where it came from,
never dropped. Options given together with a name belong to that component: naming
another one later drops them. Every error is a `ConfigError` that names the key path
(or file), the bad value and what is allowed.
This module imports no torch: the CLI resolves (and rejects) a config before loading it.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from attd_core.errors import ConfigError, describe_validation_error
from attd_core.limits import (
    MAX_BATCH,
    MAX_EPOCHS,
    MAX_EXAMPLES,
    MAX_OPTIMIZER_STEPS,
    MAX_SEED,
    MAX_THREADS,
)
from attd_core.plugins import PluginManager
from attd_core.spec_strings import ComponentChoice, canonical_text, parse_component
from attd_core.specs import TaskSpec

COMPONENT_PATHS: dict[tuple[str, ...], str] = {
    ("task",): "task",
    ("model", "backbone"): "backbone",
    ("model", "adapter"): "adapter",
    ("eval", "objective"): "objective",
}
"""Where the config names a plugin component, and that component's kind."""


class _Section(BaseModel):
    """A config section: unknown keys and non-finite floats (`lr=.inf`) are errors, and
    every count has an upper bound from `attd_core.limits`."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class ComponentConfig(BaseModel):
    """A plugin component by name; the other keys are its options.

    The options are checked against the component's own config model during
    resolution, because only the plugin knows which options it takes.
    """

    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1)

    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


def _component(name: str) -> Any:
    return Field(default_factory=lambda: ComponentConfig(name=name))


class ModelConfig(_Section):
    backbone: ComponentConfig = _component("mamba")
    adapter: ComponentConfig | list[ComponentConfig] = Field(
        default_factory=lambda: ComponentConfig(name="delta-ssm"),
        description="One adapter, or a list whose states combine (delta-ssm + norm-affine).",
    )
    pooling: str = Field(
        "masked-mean",
        min_length=1,
        description="How features are summarised, by `pooling` plugin name: masked-mean "
        "(real tokens only), mean (every position), last, cls, or a plugin's.",
    )


class TrainConfig(_Section):
    """The base regime: AdamW, linear warm-up then cosine decay, gradient clipping."""

    epochs: int = Field(1, ge=1, le=MAX_EPOCHS)
    max_steps: int | None = Field(
        None, ge=1, le=MAX_OPTIMIZER_STEPS, description="If set, overrides epochs."
    )
    batch_size: int = Field(32, ge=1, le=MAX_BATCH)
    lr: float = Field(1e-3, gt=0)
    ssm_lr: float | None = Field(
        None,
        gt=0,
        description="Learning rate of the SSM parameters (a Mamba layer's A_log, D and dt "
        "projection), which are never weight-decayed; none: train.lr. Same schedule.",
    )
    weight_decay: float = Field(
        0.01,
        ge=0,
        description="AdamW's decoupled weight decay, on weight matrices only: biases, norm "
        "gains, embeddings and SSM parameters are not decayed.",
    )
    warmup_ratio: float = Field(0.1, ge=0, le=1)
    grad_clip: float | None = Field(1.0, gt=0)
    log_every: int = Field(10, ge=1, le=MAX_OPTIMIZER_STEPS)
    checkpoint_every: int | None = Field(
        200,
        ge=1,
        le=MAX_OPTIMIZER_STEPS,
        description="Save a resumable checkpoint (optimizer, schedule, RNG) every N steps; "
        "none: only at the end.",
    )
    eval_batch_size: int = Field(64, ge=1, le=MAX_BATCH)
    eval_split: str | None = Field(
        "validation",
        min_length=1,
        description="The split validated on while training (the task's metrics, no "
        "adaptation), for learning curves; none: no validation while training.",
    )
    eval_every: int | None = Field(
        None,
        ge=1,
        le=MAX_OPTIMIZER_STEPS,
        description="Validate every N optimiser steps and at the end of training; none: at "
        "the end of every epoch (and of training).",
    )
    eval_limit: int | None = Field(
        1000,
        ge=1,
        le=MAX_EXAMPLES,
        description="Validate on the first N examples of train.eval_split (none: all).",
    )
    group_by_length: bool = Field(
        True, description="Batch examples of similar length (if the task can measure them)."
    )
    regime: Literal["base", "aligned", "controller", "meta"] = Field(
        "base",
        description="base: task loss only; aligned: task loss + train.aligned_weight * the "
        "inner objective (TTT), training its head; controller: then train the strategy's "
        "controller with the backbone frozen; meta: simulate the inner loop while training.",
    )
    aligned_weight: float = Field(
        1.0, gt=0, description="lambda of the aligned regime: task loss + lambda * inner loss."
    )
    strategy: str | None = Field(
        None,
        description="The TTA strategy the controller or meta regime trains with "
        "(default adaptive:5 for controller, fixed:1 for meta).",
    )
    lambda_cost: float = Field(1e-3, ge=0, description="Weight of E[K] (compute cost).")
    beta_step: float = Field(1e-3, ge=0, description="Weight of sum_k ||psi_{k+1} - psi_k||^2.")
    meta_order: Literal["first", "second"] = Field(
        "first", description="Differentiate through the inner loop to first or second order."
    )
    controller_steps: int = Field(
        100, ge=1, le=MAX_OPTIMIZER_STEPS, description="Optimiser steps of the controller phase."
    )
    controller_lr: float = Field(1e-2, gt=0, description="Learning rate of the controller phase.")


class EvalConfig(_Section):
    """`none` is always evaluated; `tta` lists the strategies compared against it."""

    tta: list[str] = Field(default_factory=list)
    objective: ComponentConfig = _component("entropy-kl")
    split: str = "test"
    limit: int | None = Field(
        None, ge=1, le=MAX_EXAMPLES, description="Evaluate on the first N examples."
    )
    calibration_split: str = Field(
        "validation", description="Split that calibrates untrained controllers."
    )
    calibration_limit: int = Field(
        256, ge=1, le=MAX_EXAMPLES, description="Calibration examples used."
    )
    shift: str | None = Field(
        None, description="Evaluate under this test-time shift, e.g. token-deletion:3."
    )

    @field_validator("tta", mode="before")
    @classmethod
    def _one_spec_is_a_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class RuntimeConfig(_Section):
    seed: int = Field(0, ge=0, le=MAX_SEED)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = Field(None, ge=1, le=MAX_THREADS)
    output_dir: str | None = None
    tensorboard: bool = Field(
        False,
        description="Also log to RUN_DIR/tensorboard when the tensorboard package is installed.",
    )

    @field_validator("output_dir")
    @classmethod
    def _names_a_folder(cls, value: str | None) -> str | None:
        """An empty name would put the run's files in the current folder."""
        if value is not None and not value.strip():
            raise ValueError("must name a folder (an empty name means the current folder)")
        return value


class RunConfig(_Section):
    task: ComponentConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)


@dataclass(frozen=True)
class ResolvedConfig:
    """A validated run: the config with every option filled, and the chosen components.

    `tta` holds the strategies to evaluate: `none` first, then the requested ones,
    each once (by canonical spec string).
    """

    config: RunConfig
    task: ComponentChoice
    backbone: ComponentChoice
    adapters: tuple[ComponentChoice, ...]
    objective: ComponentChoice
    tta: tuple[ComponentChoice, ...]
    training_strategy: ComponentChoice | None = None
    shift: ComponentChoice | None = None

    @property
    def adapter_text(self) -> str:
        """The adapters as one line: their canonical specs joined by `+`."""
        return "+".join(choice.canonical for choice in self.adapters)

    def to_yaml_dict(self) -> dict[str, Any]:
        """Plain data that resolves to this same config when read back as a YAML file."""
        return self.config.model_dump(mode="json")


def resolve_run_config(
    manager: PluginManager,
    *,
    task: str | None = None,
    backbone: str | None = None,
    tta: Sequence[str] = (),
    config_files: Iterable[str | Path] = (),
    overrides: Iterable[str] = (),
    seed: int | None = None,
    output_dir: str | Path | None = None,
    shift: str | None = None,
    preset: str | None = None,
) -> ResolvedConfig:
    """Merge every source in precedence order and validate the result against the plugins."""
    user_layers = [(f"config file {str(path)!r}", load_yaml_file(path)) for path in config_files]
    user_layers += [(f"--set {text!r}", parse_override(text)) for text in overrides]
    flags = _flag_layer(task, backbone, tta, seed, output_dir, shift)
    user_layers.append(("the command-line flags", flags))
    user_layers = [(source, _normalise_components(layer)) for source, layer in user_layers]
    for source, layer in user_layers:
        _check_sections(layer, source)

    task_spec = manager.get("task", _task_name([layer for _, layer in user_layers], manager))
    task_layers = {
        f"the run_defaults of task {task_spec.name!r}": task_spec.run_defaults,
        f"preset {preset!r} of task {task_spec.name!r}": task_preset(task_spec, preset),
    }
    layers = _LayerMerge(manager)
    for source, flat in task_layers.items():
        layer = _normalise_components(nest_dotted(flat))
        _check_sections(layer, source)
        layers.add(source, layer)
    for source, layer in user_layers:
        layers.add(source, layer)
    merged = layers.result()

    try:
        config = RunConfig.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(f"invalid config: {explain_validation_error(exc, RunConfig)}") from None

    task_choice = _resolve_component(manager, "task", config.task)
    backbone_choice = _resolve_component(manager, "model.backbone", config.model.backbone)
    adapter_choices = _resolve_adapters(manager, config.model.adapter)
    objective_choice = _resolve_component(manager, "eval.objective", config.eval.objective)
    _check_pooling(manager, config.model.pooling)
    requested = _unique(parse_component(text, "strategy", manager) for text in config.eval.tta)
    strategies = _unique([parse_component("none", "strategy", manager), *requested])
    training = _training_strategy(manager, config.train)
    _check_validation(config.train)
    shift_choice = None
    if config.eval.shift is not None:
        shift_choice = parse_component(config.eval.shift, "shift", manager)

    filled = config.model_copy(
        update={
            "task": _filled(task_choice),
            "model": config.model.model_copy(
                update={
                    "backbone": _filled(backbone_choice),
                    "adapter": _filled_adapters(adapter_choices),
                }
            ),
            "eval": config.eval.model_copy(
                update={
                    "objective": _filled(objective_choice),
                    "tta": [choice.canonical for choice in requested],
                    "shift": None if shift_choice is None else shift_choice.canonical,
                }
            ),
        }
    )
    if training is not None:
        filled = filled.model_copy(
            update={"train": filled.train.model_copy(update={"strategy": training.canonical})}
        )
    return ResolvedConfig(
        filled,
        task_choice,
        backbone_choice,
        adapter_choices,
        objective_choice,
        tuple(strategies),
        training,
        shift_choice,
    )


# -- sources -----------------------------------------------------------------------------


def load_yaml_file(path: str | Path) -> dict[str, Any]:
    """Read one config file; an empty file is an empty layer."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r}: not found") from None
    except OSError as exc:
        raise ConfigError(f"config file {str(path)!r}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {str(path)!r}: not UTF-8 text") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        problem = _yaml_problem(exc)
        raise ConfigError(f"config file {str(path)!r}: invalid YAML: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {str(path)!r}: expected a mapping of sections "
            f"({', '.join(RunConfig.model_fields)}), got a {type(data).__name__}"
        )
    return data


def parse_override(text: str) -> dict[str, Any]:
    """`a.b=c` as a nested layer; the value is YAML, so `3` is an int and `true` a bool."""
    key, has_value, raw = text.partition("=")
    parts = key.strip().split(".")
    if not has_value or not all(part.strip() for part in parts):
        raise ConfigError(f"bad --set {text!r}: expected KEY=VALUE, e.g. train.lr=0.01")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        problem = _yaml_problem(exc)
        raise ConfigError(f"bad --set {text!r}: value is not valid YAML: {problem}") from None
    return nest_dotted({".".join(part.strip() for part in parts): value})


def nest_dotted(flat: Mapping[str, Any]) -> dict[str, Any]:
    """`{"train.lr": 0.1}` -> `{"train": {"lr": 0.1}}`."""
    nested: dict[str, Any] = {}
    for dotted, value in flat.items():
        *parents, leaf = dotted.split(".")
        node = nested
        for part in parents:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[leaf] = copy.deepcopy(value)
    return nested


def flatten_dotted(nested: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"train": {"lr": 0.1}}` -> `{"train.lr": 0.1}`, the inverse of `nest_dotted`; an
    empty mapping stays a value, so two configs compare key by key."""
    flat: dict[str, Any] = {}
    for key, value in nested.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten_dotted(value, f"{path}."))
        else:
            flat[path] = value
    return flat


def _flag_layer(
    task: str | None,
    backbone: str | None,
    tta: Sequence[str],
    seed: int | None,
    output_dir: str | Path | None,
    shift: str | None,
) -> dict[str, Any]:
    flat: dict[str, Any] = {
        "eval.shift": shift,
        "task.name": task,
        "model.backbone.name": backbone,
        "eval.tta": list(tta) or None,
        "runtime.seed": seed,
        "runtime.output_dir": None if output_dir is None else str(output_dir),
    }
    return nest_dotted({key: value for key, value in flat.items() if value is not None})


def _default_layer() -> dict[str, Any]:
    return {
        "model": ModelConfig().model_dump(),
        "train": TrainConfig().model_dump(),
        "eval": EvalConfig().model_dump(),
        "runtime": RuntimeConfig().model_dump(),
    }


# -- merging -----------------------------------------------------------------------------


_ABSENT = object()


def _check_sections(layer: Mapping[str, Any], source: str) -> None:
    """Refuse a scalar where a section or a component belongs, naming it and `source`.

    Merged as it was, `--set train=5` (or `train: 5` in a file) replaced the whole
    section, so a later `--set train.epochs=2` silently reset every earlier setting of
    `train` (a task's lr included). Run after `_normalise_components`, so a component
    given by its bare name is already a mapping.
    """
    for key in RunConfig.model_fields:
        value = layer.get(key, _ABSENT)
        section = (key,) not in COMPONENT_PATHS
        if section and value is not _ABSENT and not isinstance(value, Mapping):
            raise ConfigError(
                f"{source}: {key} is a section and takes a mapping of settings "
                f"({key}.NAME=VALUE), not {value!r}"
            )
    for path, kind in COMPONENT_PATHS.items():
        node: Any = layer
        for part in path:
            node = node.get(part, _ABSENT) if isinstance(node, Mapping) else _ABSENT
        allowed = (Mapping, list) if path == ("model", "adapter") else Mapping
        if node is not _ABSENT and not isinstance(node, allowed):
            raise ConfigError(
                f"{source}: {'.'.join(path)} takes the {kind}'s name or a mapping of its "
                f"name and options, not {node!r}"
            )


class _LayerMerge:
    """Deep-merges layers in precedence order, following each component's options.

    Options a layer gives a component without naming it are loose: they are kept when a
    later layer names another component, and one that component does not take is an
    error naming the layer. Options given with a name are dropped by such a switch: they
    were meant for that component (a run's `config.yaml` names its objective with every
    option filled, and `--set eval.objective=entropy` must not inherit `kl_weight`).
    """

    def __init__(self, manager: PluginManager) -> None:
        self.manager = manager
        self.merged: dict[str, Any] = _default_layer()
        self.loose: dict[tuple[str, ...], dict[str, tuple[Any, str]]] = {}
        self.switched: set[tuple[str, ...]] = set()

    def add(self, source: str, layer: Mapping[str, Any]) -> None:
        """Merge `layer` (checked by `_check_sections`) over the layers added before."""
        self.merged = self._merge(self.merged, layer, ())
        for path in COMPONENT_PATHS:
            node: Any = layer
            for part in path:
                node = node.get(part) if isinstance(node, Mapping) else None
            if isinstance(node, Mapping) and "name" not in node:
                loose = self.loose.setdefault(path, {})
                loose.update({key: (copy.deepcopy(value), source) for key, value in node.items()})

    def result(self) -> dict[str, Any]:
        """The merged config; loose options carried to a component that lacks them fail."""
        for path in self.switched:
            self._check_carried(path)
        return self.merged

    def _merge(self, base: Mapping[str, Any], override: Mapping[str, Any], path: tuple) -> dict:
        merged = copy.deepcopy(dict(base))
        for key, value in override.items():
            here = (*path, key)
            current = merged.get(key)
            if isinstance(current, dict) and isinstance(value, Mapping):
                if _switches_component(here, current, value):
                    self.switched.add(here)
                    loose = self.loose.get(here, {})
                    current = {name: copy.deepcopy(item) for name, (item, _) in loose.items()}
                merged[key] = self._merge(current, value, here)
            else:
                merged[key] = copy.deepcopy(value)
        return merged

    def _check_carried(self, path: tuple[str, ...]) -> None:
        node: Any = self.merged
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        kind = COMPONENT_PATHS[path]
        name = node.get("name") if isinstance(node, dict) else None
        if not isinstance(name, str) or name not in self.manager.names(kind):
            return  # validation reports a malformed or unknown component
        accepted = self.manager.get(kind, name).config.model_fields
        for key, (_, source) in self.loose.get(path, {}).items():
            if key in accepted:
                continue
            takers = [
                other
                for other in self.manager.names(kind)
                if key in self.manager.get(kind, other).config.model_fields
            ]
            article = "an" if kind[0] in "aeiou" else "a"
            hint = (
                f"choose {article} {kind} that has it ({', '.join(takers)})"
                if takers
                else f"no installed {kind} has it ({name!r} takes: {', '.join(accepted)})"
            )
            raise ConfigError(
                f"{source} sets {'.'.join(path)}.{key}, which {kind} {name!r} does not take: {hint}"
            )


def _switches_component(
    path: tuple[str, ...], current: Mapping[str, Any], value: Mapping[str, Any]
) -> bool:
    return (
        path in COMPONENT_PATHS
        and "name" in current
        and "name" in value
        and current["name"] != value["name"]
    )


def _normalise_components(layer: Mapping[str, Any]) -> dict[str, Any]:
    """Let a component be written as its bare name: `task: listops`."""
    result = copy.deepcopy(dict(layer))
    for path in COMPONENT_PATHS:
        *parents, leaf = path
        node: Any = result
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and isinstance(node.get(leaf), str):
            node[leaf] = {"name": node[leaf]}
        elif isinstance(node, dict) and isinstance(node.get(leaf), list):
            node[leaf] = [{"name": item} if isinstance(item, str) else item for item in node[leaf]]
    return result


def task_preset(spec: TaskSpec, preset: str | None) -> dict[str, Any]:
    """The dotted overrides of the task's preset `preset` (none: no overrides)."""
    if preset is None:
        return {}
    if preset not in spec.presets:
        known = ", ".join(spec.presets) or "none"
        raise ConfigError(f"task {spec.name!r} has no preset {preset!r} (presets: {known})")
    return spec.presets[preset]


def _task_name(layers: Sequence[Mapping[str, Any]], manager: PluginManager) -> str:
    name = None
    for layer in layers:
        section = layer.get("task")
        if isinstance(section, dict) and "name" in section:
            name = section["name"]
    if name is None:
        available = ", ".join(manager.names("task")) or "none installed"
        raise ConfigError(f"no task: pass --task NAME (available: {available})")
    if not isinstance(name, str):
        raise ConfigError(f"task.name: expected a task name, got {name!r}")
    return name


# -- validation --------------------------------------------------------------------------


def _resolve_component(
    manager: PluginManager, path: str, component: ComponentConfig, kind: str | None = None
) -> ComponentChoice:
    kind = kind or COMPONENT_PATHS[tuple(path.split("."))]
    spec = manager.get(kind, component.name)
    try:
        options = spec.config.model_validate(component.options())
    except ValidationError as exc:
        detail = explain_validation_error(exc, spec.config, prefix=path)
        raise ConfigError(f"invalid options for {kind} {spec.name!r}: {detail}") from None
    return ComponentChoice(spec, options, canonical_text(spec.name, options), manager)


def _check_pooling(manager: PluginManager, name: str) -> None:
    if name not in manager.names("pooling"):
        available = ", ".join(manager.names("pooling")) or "none installed"
        raise ConfigError(f"model.pooling: unknown pooling {name!r}; available: {available}")


DEFAULT_TRAINING_STRATEGY = {"controller": "adaptive:5", "meta": "fixed:1"}


def _training_strategy(manager: PluginManager, train: TrainConfig) -> ComponentChoice | None:
    """The strategy the controller or meta regime trains with; None for the others."""
    if train.regime not in DEFAULT_TRAINING_STRATEGY:
        if train.strategy is not None:
            raise ConfigError(
                f"train.strategy ({train.strategy!r}) is used by the controller and meta "
                "regimes only; set train.regime or drop it"
            )
        return None
    text = train.strategy or DEFAULT_TRAINING_STRATEGY[train.regime]
    choice = parse_component(text, "strategy", manager)
    if train.regime == "controller" and "controller" not in type(choice.options).model_fields:
        raise ConfigError(
            f"train.strategy {text!r}: the controller regime trains a controller; "
            "use adaptive:K or gate:K"
        )
    return choice


def _check_validation(train: TrainConfig) -> None:
    """Refuse a validation interval for a run that does not validate, rather than drop it."""
    if train.eval_split is None and train.eval_every is not None:
        raise ConfigError(
            f"train.eval_every ({train.eval_every}) sets how often to validate, but "
            "train.eval_split is null (no validation); name a split or drop train.eval_every"
        )


def _resolve_adapters(
    manager: PluginManager, adapter: ComponentConfig | list[ComponentConfig]
) -> tuple[ComponentChoice, ...]:
    listed = adapter if isinstance(adapter, list) else [adapter]
    if not listed:
        raise ConfigError("model.adapter: name at least one adapter")
    choices = []
    for index, component in enumerate(listed):
        path = "model.adapter" if isinstance(adapter, ComponentConfig) else f"model.adapter.{index}"
        choices.append(_resolve_component(manager, path, component, kind="adapter"))
    names = [choice.spec.name for choice in choices]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ConfigError(f"model.adapter: adapter {repeated[0]!r} is listed twice")
    return tuple(choices)


def _filled_adapters(
    choices: tuple[ComponentChoice, ...],
) -> ComponentConfig | list[ComponentConfig]:
    filled = [_filled(choice) for choice in choices]
    return filled[0] if len(filled) == 1 else filled


def _filled(choice: ComponentChoice) -> ComponentConfig:
    return ComponentConfig(name=choice.spec.name, **choice.options.model_dump(mode="json"))


def _unique(choices: Iterable[ComponentChoice]) -> list[ComponentChoice]:
    seen: dict[str, ComponentChoice] = {}
    for choice in choices:
        seen.setdefault(choice.canonical, choice)
    return list(seen.values())


def explain_validation_error(exc: ValidationError, model: type[BaseModel], prefix: str = "") -> str:
    """`describe_validation_error`, plus the allowed keys wherever an unknown key was given."""
    hints: list[str] = []
    for error in exc.errors():
        if error["type"] != "extra_forbidden":
            continue
        owner = _model_at(model, error["loc"][:-1])
        if owner is None:
            continue
        where = ".".join(str(part) for part in (prefix, *error["loc"][:-1]) if part != "")
        hint = f"allowed in {where or 'the top level'}: {', '.join(owner.model_fields) or 'none'}"
        if hint not in hints:
            hints.append(hint)
    return "; ".join([describe_validation_error(exc, prefix), *hints])


def _model_at(model: type[BaseModel], loc: Sequence[Any]) -> type[BaseModel] | None:
    for part in loc:
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field is not None else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or " ".join(str(exc).split())
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark else problem
