"""Pydantic specs that plugins hand to the `register` callback.

A spec describes a component without importing it: `factory` is a `"module:attr"`
string resolved on first use, so listing plugins imports no torch. `config` is the
pydantic model that validates the component's options (CLI `--set`, YAML, spec strings).

A component that builds other components (a strategy its controller, a task its encoder)
declares a keyword-only `manager` parameter in its factory and receives the manager
that creates it: the registry is always passed in, never looked up from inside.
"""

from __future__ import annotations

import importlib
import inspect
import re
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from attd_core.errors import PluginError, describe_validation_error

if TYPE_CHECKING:
    from attd_core.plugins import PluginManager

_NAME_PATTERN = r"^[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*$"
_FACTORY_PATTERN = r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$"


class NoOptions(BaseModel):
    """The config model of a component that takes no options."""

    model_config = ConfigDict(extra="forbid")


class PluginSpec(BaseModel):
    """Common fields of every registered component; subclasses fix `kind`."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    kind: ClassVar[str] = "component"

    name: str = Field(pattern=_NAME_PATTERN, description="The name users type.")
    summary: str = Field(min_length=1, description="One line for `attd list-plugins`.")
    factory: str = Field(
        pattern=_FACTORY_PATTERN,
        description='"module:attr" of a callable taking the validated config.',
    )
    config: type[BaseModel] = Field(default=NoOptions, description="Options model.")

    @field_validator("config")
    @classmethod
    def _config_forbids_unknown_keys(cls, model: type[BaseModel]) -> type[BaseModel]:
        if model.model_config.get("extra") != "forbid":
            raise ValueError(
                f"config model {model.__name__} must set extra='forbid' so that "
                "misspelled options are reported instead of ignored"
            )
        return model

    def load(self) -> Any:
        """Import and return the factory; errors name the plugin and the factory."""
        module_name, _, attr_path = self.factory.partition(":")
        try:
            target: Any = importlib.import_module(module_name)
            for attr in attr_path.split("."):
                target = getattr(target, attr)
        except Exception as exc:  # any import-time failure is the plugin's, not ours
            raise PluginError(
                f"{self.kind} {self.name!r}: cannot load factory {self.factory!r}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        return target

    def create(
        self,
        options: BaseModel | dict[str, Any] | None = None,
        *,
        manager: PluginManager | None = None,
    ) -> Any:
        """Validate `options` against `config` and call the factory with the result.

        A factory that takes a keyword-only `manager` gets `manager` (what
        `PluginManager.create` passes: itself); creating one without a manager is an error.
        """
        if not isinstance(options, self.config):
            options = self.config.model_validate(options or {})
        factory = self.load()
        if not _takes_manager(factory):
            return factory(options)
        if manager is None:
            raise PluginError(
                f"{self.kind} {self.name!r} builds other components: create it through a "
                "PluginManager (manager.create), which passes itself to the factory"
            )
        return factory(options, manager=manager)


def _takes_manager(factory: Any) -> bool:
    """Whether `factory` declares a keyword-only `manager` parameter (it builds other
    components, so it needs the registry they come from)."""
    try:
        parameter = inspect.signature(factory).parameters.get("manager")
    except (TypeError, ValueError):  # a callable without a signature takes no manager
        return False
    return parameter is not None and parameter.kind is inspect.Parameter.KEYWORD_ONLY


def filled_options(
    model: type[BaseModel], value: dict[str, Any], owner: str, *, exclude_none: bool = False
) -> dict[str, Any]:
    """`value` validated by `model` and dumped with every default filled in.

    For components that take another component's options as a dict (a task's encoder
    options): checking them while the config resolves reports a bad option before the
    run starts, and the filled dict shows every default in `config.yaml`. Raises
    `ValueError` (pydantic reports it with the field's path) naming `owner`, the problem
    and the allowed options.
    """
    try:
        validated = model.model_validate(value)
    except ValidationError as exc:
        allowed = ", ".join(model.model_fields)
        raise ValueError(
            f"for {owner}: {describe_validation_error(exc)} (options: {allowed})"
        ) from None
    return validated.model_dump(mode="json", exclude_none=exclude_none)


class BackboneSpec(PluginSpec):
    """A sequence model mapping `(B, L, D)` to `(B, L, D)`."""

    kind: ClassVar[str] = "backbone"


class TaskSpec(PluginSpec):
    """A dataset with labels, metrics and its head.

    `run_defaults` are dotted run-config overrides (e.g. `{"train.epochs": 2}`) applied
    before user files, so that `attd run --task NAME` works well with no flags.
    `presets` are named sets of such overrides (e.g. `paper`: the published settings),
    chosen with `--preset NAME` and applied on top of `run_defaults`. Their
    `model.backbone.*` settings (the shape) are for whichever backbone the run uses, the
    user's choice included; one that backbone does not take is refused, naming the
    preset, rather than dropped.
    """

    kind: ClassVar[str] = "task"
    run_defaults: dict[str, Any] = Field(default_factory=dict)
    presets: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @field_validator("presets")
    @classmethod
    def _preset_names(cls, presets: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        bad = [name for name in presets if not re.fullmatch(_NAME_PATTERN, name)]
        if bad:
            raise ValueError(f"preset names must match {_NAME_PATTERN}, got {bad}")
        return presets


class StrategySpec(PluginSpec):
    """A test-time adaptation strategy (`none`, `fixed:k`, ...)."""

    kind: ClassVar[str] = "strategy"


class AdapterSpec(PluginSpec):
    """An adapter: the adapted part of a backbone and its constraints."""

    kind: ClassVar[str] = "adapter"


class ControllerSpec(PluginSpec):
    """A map from difficulty to number of inner steps."""

    kind: ClassVar[str] = "controller"


class ObjectiveSpec(PluginSpec):
    """An inner (self-supervised) objective, one loss per sample."""

    kind: ClassVar[str] = "objective"


class EncoderSpec(PluginSpec):
    """A modality encoder turning raw inputs into tokens and masks."""

    kind: ClassVar[str] = "encoder"


class PoolingSpec(PluginSpec):
    """A pooling of `(B, L, D)` features into `(B, D)`."""

    kind: ClassVar[str] = "pooling"


class ShiftSpec(PluginSpec):
    """A test-time distribution shift applied at evaluation only.

    Which tasks it suits is not declared here: it is tried on a batch of the task before
    training (see `attd_core.Shift`), and its `ConfigError` says what it needs.
    """

    kind: ClassVar[str] = "shift"


SPEC_TYPES: tuple[type[PluginSpec], ...] = (
    BackboneSpec,
    TaskSpec,
    StrategySpec,
    AdapterSpec,
    ControllerSpec,
    ObjectiveSpec,
    EncoderSpec,
    PoolingSpec,
    ShiftSpec,
)
KINDS: tuple[str, ...] = tuple(spec.kind for spec in SPEC_TYPES)
