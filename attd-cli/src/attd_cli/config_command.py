"""`attd config show|validate|schema`: the run config, without running anything.

`show` resolves the config exactly as `attd run` does (the same function, the same
sources in the same order) and prints it with every default filled in. `validate` checks
config files one by one, each as `attd run --config FILE` would take it (a finished
run's `config.yaml` included). `schema` prints the JSON Schema of the run config, where
each component (task, backbone, adapter, objective) is a choice, by `name`, among the
installed plugins' components, each with its own options. Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, create_model

import attd_core
from attd_core import (
    AttdError,
    ComponentConfig,
    ConfigError,
    EvalConfig,
    ModelConfig,
    PluginManager,
    RunConfig,
    TrainConfig,
)

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
FORMATS = ("yaml", "json")


def show_config(
    manager: PluginManager,
    *,
    task: str | None = None,
    preset: str | None = None,
    config_files: Sequence[str] = (),
    overrides: Sequence[str] = (),
    tta: Sequence[str] = (),
    fmt: str = "yaml",
) -> str:
    """The config `attd run` would use with these options, as YAML or JSON text."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format: unknown format {fmt!r}; use {' or '.join(FORMATS)}")
    resolved = attd_core.resolve_run_config(
        manager,
        task=task,
        preset=preset,
        tta=tta,
        config_files=config_files,
        overrides=overrides,
    )
    data = resolved.to_yaml_dict()
    if fmt == "json":
        return attd_core.json_text(data, indent=2) + "\n"
    return yaml.safe_dump(data, sort_keys=False)


@dataclass(frozen=True)
class FileCheck:
    """One file's verdict: the task it resolved to, or why it is invalid."""

    path: str
    task: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def line(self) -> str:
        """`FILE: ok (task NAME)` or `FILE: the problem`."""
        return f"{self.path}: ok (task {self.task})" if self.ok else f"{self.path}: {self.error}"


def validate_files(
    manager: PluginManager, files: Sequence[str], *, task: str | None = None
) -> list[FileCheck]:
    """Resolve each file alone, as `attd run --config FILE [--task NAME]` would."""
    return [_check_file(manager, path, task) for path in files]


def _check_file(manager: PluginManager, path: str, task: str | None) -> FileCheck:
    try:
        resolved = attd_core.resolve_run_config(manager, task=task, config_files=[path])
    except AttdError as exc:
        return FileCheck(path, error=str(exc).removeprefix(f"config file {path!r}: "))
    return FileCheck(path, task=resolved.task.spec.name)


# -- schema ------------------------------------------------------------------------------


def config_schema(manager: PluginManager, tasks: Sequence[str] = ()) -> dict[str, Any]:
    """The JSON Schema of the run config, with the installed components' options.

    `task`, `model.backbone`, `model.adapter` (one, or a list) and `eval.objective` are
    each one of the registered components of their kind, told apart by `name` (`oneOf`
    with a `discriminator`); each choice holds `name` (a `const`) and that component's
    options, and takes no other key. A bare name (`task: listops`) is accepted too, as
    the config files accept it. `eval.tta`, `eval.shift` and `train.strategy` are spec
    strings whose pattern names the registered strategies or shifts; `model.pooling` is
    one of the registered poolings. `tasks` limits the task choices to those named.
    """
    task_names = sorted(dict.fromkeys(tasks)) or manager.names("task")
    for name in task_names:
        manager.get("task", name)  # an unknown task: the error lists the available ones
    strategy_spec = _spec_string("strategy", manager.names("strategy"))
    model = create_model(
        "ModelConfig",
        __base__=ModelConfig,
        __doc__="The backbone, its adapters and the pooling of features.",
        backbone=(_component(manager, "backbone"), _default(ModelConfig, "backbone")),
        adapter=(
            _component(manager, "adapter", listed=True),
            _default(ModelConfig, "adapter"),
        ),
        pooling=(
            _one_of_names(manager.names("pooling")),
            _default(ModelConfig, "pooling"),
        ),
    )
    train = create_model(
        "TrainConfig",
        __base__=TrainConfig,
        __doc__=TrainConfig.__doc__,
        strategy=(
            strategy_spec | None,
            _default(TrainConfig, "strategy"),
        ),
    )
    evaluation = create_model(
        "EvalConfig",
        __base__=EvalConfig,
        __doc__=EvalConfig.__doc__,
        tta=(
            list[strategy_spec] | strategy_spec,
            Field(
                default_factory=list,
                description="Strategies compared with `none` (always evaluated), as spec "
                "strings; one string is a list of one.",
            ),
        ),
        objective=(_component(manager, "objective"), _default(EvalConfig, "objective")),
        shift=(
            _spec_string("shift", manager.names("shift")) | None,
            _default(EvalConfig, "shift"),
        ),
    )
    run = create_model(
        "RunConfig",
        __base__=RunConfig,
        task=(_component(manager, "task", names=task_names), ...),
        model=(model, Field(default_factory=model)),
        train=(train, Field(default_factory=train)),
        eval=(evaluation, Field(default_factory=evaluation)),
    )
    schema = run.model_json_schema()
    for definition in schema.get("$defs", {}).values():
        _name_first(definition)
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "title": "attd run config",
        "description": "What `attd run --config FILE` takes and what a run's config.yaml "
        "holds; every section and option is optional except the task.",
        **{key: value for key, value in schema.items() if key != "title"},
    }


def schema_text(schema: dict[str, Any]) -> str:
    return attd_core.json_text(schema, indent=2) + "\n"


def write_schema(schema: dict[str, Any], output: str) -> Path:
    path = attd_core.check_destination(output, "--output")
    try:
        attd_core.atomic_write_text(path, schema_text(schema))
    except OSError as exc:
        raise ConfigError(f"--output {output!r}: cannot write: {exc.strerror}") from None
    return path


def _default(section: type[BaseModel], key: str) -> Any:
    """The field's default (as plain data) and description, for a field given a new type."""
    field = section.model_fields[key]
    value = field.get_default(call_default_factory=True)
    plain = value.model_dump(mode="json") if isinstance(value, BaseModel) else value
    return Field(plain, description=field.description)


def _component(
    manager: PluginManager, kind: str, *, names: Sequence[str] | None = None, listed: bool = False
) -> Any:
    """A discriminated union of `kind`'s components, or their bare names."""
    names = manager.names(kind) if names is None else list(names)
    if not names:  # nothing of this kind installed: any component, as RunConfig has it
        return ComponentConfig | list[ComponentConfig] if listed else ComponentConfig
    choices = [_choice_model(manager, kind, name) for name in names]
    one = Annotated[Union[tuple(choices)], Field(discriminator="name")]  # noqa: UP007
    either = _one_of_names(names) | one
    return either | list[either] if listed else either


def _choice_model(manager: PluginManager, kind: str, name: str) -> type[BaseModel]:
    """`name` (a const) and the component's options; no other key."""
    spec = manager.get(kind, name)
    field = (Literal[name], Field(description=f"The {kind}: {spec.summary}"))
    title = f"{kind}-{name}"
    try:
        model = create_model(title, __base__=spec.config, __doc__=spec.summary, name=field)
        model.model_json_schema()
    except Exception:  # options a JSON Schema cannot describe: the name, then any options
        model = create_model(title, __base__=_UndescribedOptions, __doc__=spec.summary, name=field)
    return model


class _UndescribedOptions(BaseModel):
    model_config = ConfigDict(extra="allow")


def _one_of_names(names: Sequence[str]) -> Any:
    return Literal[tuple(names)] if names else str


def _spec_string(kind: str, names: Sequence[str]) -> Any:
    """A `NAME[:ARGS]` string whose NAME is a registered `kind`."""
    available = ", ".join(names) or "none installed"
    return Annotated[
        str,
        Field(
            pattern=rf"^\s*({'|'.join(names)})\s*(:.*)?$",
            description=f"A {kind} spec NAME[:ARGS] (positional values first, then "
            f"key=value); available: {available}.",
        ),
    ]


def _name_first(definition: dict[str, Any]) -> None:
    """List `name` first in a component's properties, where readers look for it."""
    properties = definition.get("properties")
    if isinstance(properties, dict) and "name" in properties:
        definition["properties"] = {"name": properties.pop("name"), **properties}
        if "name" in definition.get("required", []):
            definition["required"] = ["name", *(r for r in definition["required"] if r != "name")]
