"""Errors that mean "the user asked for something wrong", as opposed to bugs.

The CLI prints these as one message and exits with code 2, without a traceback.
"""

from __future__ import annotations

from typing import Any


class AttdError(Exception):
    """Base of every user-facing attd error."""


class PluginError(AttdError):
    """A plugin could not be loaded, registered or resolved."""


class UnknownComponentError(PluginError):
    """A name that no registered plugin provides; the message lists what exists."""

    def __init__(self, kind: str, name: str, available: list[str]) -> None:
        self.kind, self.name, self.available = kind, name, available
        listed = ", ".join(sorted(available)) or "none installed"
        super().__init__(f"unknown {kind} {name!r}; available: {listed}")


class ConfigError(AttdError):
    """A configuration value, file or spec string that does not validate."""


class CheckpointError(AttdError):
    """A checkpoint that is missing, truncated, pickled or does not match the model."""


class TrainingDivergedError(AttdError):
    """Training reached a non-finite loss (or weights): the run stops, rather than save
    a model of NaNs and report its evaluation as a result.

    `phase` is `training` or `controller training`, `step` the 1-based optimiser step
    whose loss (or update) went non-finite, `value` that loss (None when the loss was
    finite and the weights were not).
    """

    def __init__(self, phase: str, step: int, value: float | None, hint: str) -> None:
        self.phase, self.step, self.value = phase, step, value
        what = f"the loss is {value}" if value is not None else "the weights are not finite"
        super().__init__(f"{phase} diverged at step {step}: {what}; {hint}")


def describe_validation_error(exc: Any, prefix: str = "") -> str:
    """One line per problem of a pydantic `ValidationError`: key path, message, bad value."""
    lines = []
    for error in exc.errors():
        path = ".".join(str(part) for part in (prefix, *error["loc"]) if part != "")
        got = (
            f" (got {_shortened(error['input'])})"
            if "input" in error and error["type"] != "missing"
            else ""
        )
        lines.append(f"{path or '(root)'}: {error['msg']}{got}")
    return "; ".join(lines)


def _shortened(value: Any, limit: int = 100) -> str:
    """`repr(value)`, cut to `limit` characters: a bad value may be a long list."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."
