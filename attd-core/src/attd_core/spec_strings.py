"""Compact component specs as users type them: `NAME[:ARGS]`.

ARGS are comma-separated, positionals first (in the order the config model lists in
its `positional` class variable), then `key=value`. `fixed:3`, `fixed:k=3,lr=0.01`
and `adaptive:5,controller=threshold` are examples; `none` switches off an optional
option (`fixed:3,grad_clip=none`). Values are validated by the component's pydantic
config model, so `fixed:x` and `fixed:-1` fail with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, get_args

from pydantic import BaseModel, ValidationError

from attd_core.errors import ConfigError, describe_validation_error
from attd_core.plugins import PluginManager
from attd_core.specs import PluginSpec


@dataclass(frozen=True)
class ComponentChoice:
    """A parsed spec string: the component, its validated options, its canonical text,
    and the manager that resolved it (which builds the component and what it needs)."""

    spec: PluginSpec
    options: BaseModel
    canonical: str
    manager: PluginManager = field(repr=False, compare=False)

    def create(self) -> Any:
        return self.spec.create(self.options, manager=self.manager)


def positional_fields(model: type[BaseModel]) -> tuple[str, ...]:
    """Fields that may be given without `key=`, in order."""
    return tuple(getattr(model, "positional", ()))


def parse_component(text: str, kind: str, manager: PluginManager) -> ComponentChoice:
    """Parse `text` into a registered component of `kind` with validated options."""
    name, _, args = text.strip().partition(":")
    spec = manager.get(kind, name.strip())
    model = spec.config
    positional = positional_fields(model)
    allowed = [*positional, *(key for key in model.model_fields if key not in positional)]
    raw: dict[str, str] = {}
    seen_keyword = False
    for index, part in enumerate(arg.strip() for arg in args.split(",") if args.strip()):
        key, has_key, value = part.partition("=")
        if has_key:
            key, seen_keyword = key.strip(), True
            if key not in model.model_fields:
                raise ConfigError(
                    f"bad {kind} spec {text!r}: unknown option {key!r} for {name!r}; "
                    f"options: {', '.join(allowed) or 'none'}"
                )
        elif seen_keyword:
            raise ConfigError(
                f"bad {kind} spec {text!r}: positional value {part!r} after key=value options"
            )
        elif index >= len(positional):
            expected = ", ".join(positional) or "no positional values"
            raise ConfigError(
                f"bad {kind} spec {text!r}: too many positional values ({part!r}); "
                f"{name!r} takes {expected}; options: {', '.join(allowed) or 'none'}"
            )
        else:
            key, value = positional[index], part
        if key in raw:
            raise ConfigError(f"bad {kind} spec {text!r}: option {key!r} given twice")
        raw[key] = _value(model, key, value.strip())
    try:
        options = model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"bad {kind} spec {text!r}: {describe_validation_error(exc)}") from None
    return ComponentChoice(spec, options, canonical_text(spec.name, options), manager)


def canonical_text(name: str, options: BaseModel) -> str:
    """The one spelling of a choice: required and non-default positionals, then changed keys."""
    model = type(options)
    positional = positional_fields(model)
    values = options.model_dump()
    defaults = _validated_defaults(model, values)

    def changed(key: str) -> bool:
        return key not in defaults or values[key] != defaults[key]

    last = max((i for i, key in enumerate(positional) if changed(key)), default=-1)
    parts = [_format(values[key]) for key in positional[: last + 1]]
    parts += [
        f"{key}={_format(values[key])}"
        for key in model.model_fields
        if key not in positional and changed(key)
    ]
    return f"{name}:{','.join(parts)}" if parts else name


def _validated_defaults(model: type[BaseModel], values: dict[str, Any]) -> dict[str, Any]:
    """The options' defaults as validation fills them (validators may complete a default,
    e.g. an encoder's options), given the required values; the raw defaults otherwise."""
    required = {
        key: values[key] for key, field in model.model_fields.items() if field.is_required()
    }
    try:
        filled = model.model_validate(required).model_dump()
    except ValidationError:
        filled = {
            key: field.get_default(call_default_factory=True)
            for key, field in model.model_fields.items()
        }
    return {
        key: filled[key] for key, field in model.model_fields.items() if not field.is_required()
    }


def _value(model: type[BaseModel], key: str, text: str) -> str | None:
    """`none` (or `null`) switches off an optional option, such as `grad_clip=none`."""
    optional = type(None) in get_args(model.model_fields[key].annotation)
    return None if optional and text.lower() in ("none", "null") else text


def _format(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value) if isinstance(value, float) else str(value)
