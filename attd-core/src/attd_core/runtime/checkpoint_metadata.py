"""`metadata.json`, a checkpoint's record, as one typed model for its writer and readers.

`save_checkpoint` passes its record through `parse_metadata` and writes what comes back,
so what it writes always reads back, and as strict JSON (a non-finite `loss` becomes
null). Every loader (`attd run --resume`, `attd eval`, `attd compare`) reads through the
same function, so a damaged or hand-edited field is a `CheckpointError` naming it before
any weight is loaded, instead of a TypeError deep inside a resume.

Values must have the JSON types attd writes: nothing is coerced (`"6"` is not a step).
The top level and the config keep keys they do not know (a newer version's, a caller's
own): nothing reads them. The training state is attd's own and takes only its keys; its
optimiser groups and schedule are torch's `state_dict()`s, which differ between torch
versions, so they keep other keys here and `resume.py` matches them against the live
objects before restoring them.

Imports no torch.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from attd_core.errors import CheckpointError, describe_validation_error

FORMAT = "attd-checkpoint-v1"
MT_WORDS = 624
"""Words of a Mersenne Twister state (Python's and NumPy's global generators)."""

Count = Annotated[int, Field(ge=0)]
Rate = Annotated[float, Field(ge=0)]
Word = Annotated[int, Field(ge=0, lt=2**32)]
Beta = Annotated[float, Field(ge=0, lt=1)]


class _Record(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)


class _Open(_Record):
    """A record that keeps keys it does not declare (see the module's docstring)."""

    model_config = ConfigDict(extra="allow", serialize_by_alias=True)


class PositionRecord(_Record):
    """`resume.TrainingPosition`: steps done, the epoch in progress, its batches used,
    the losses not yet logged, the training seconds (absent before attd recorded them)."""

    step: Count
    epoch: Count
    batches: Count
    window: list[float]
    seconds: Rate = 0.0


class OptimizerGroupRecord(_Open):
    """One of AdamW's parameter groups; `params` index its state. The flags torch added
    over the versions are optional (torch fills in their defaults when it loads)."""

    params: list[Count]
    lr: Rate
    initial_lr: Rate
    betas: Annotated[list[Beta], Field(min_length=2, max_length=2)]
    eps: Rate
    weight_decay: Rate
    amsgrad: bool = False
    maximize: bool = False
    foreach: bool | None = None
    capturable: bool = False
    differentiable: bool = False
    fused: bool | None = None
    decoupled_weight_decay: bool = True


class SchedulerRecord(_Open):
    """LambdaLR's state: each group's peak rate and last rate, and the steps taken.

    `lr_lambdas` is null per group: the schedule is a plain function, which has no
    state (a non-null entry would be written into the function's attributes).
    """

    base_lrs: list[Rate]
    last_epoch: Count
    step_count: Count = Field(alias="_step_count")
    last_lr: list[Rate] = Field(alias="_last_lr")
    lr_lambdas: list[None]
    is_initial: bool = Field(False, alias="_is_initial")
    get_lr_called_within_step: bool = Field(False, alias="_get_lr_called_within_step")


PythonRng = tuple[
    Literal[3],
    Annotated[list[Word], Field(min_length=MT_WORDS + 1, max_length=MT_WORDS + 1)],
    float | None,
]
"""`random.getstate()`: version, the state words then the position, the cached gauss."""
NumpyRng = tuple[
    Literal["MT19937"],
    Annotated[list[Word], Field(min_length=MT_WORDS, max_length=MT_WORDS)],
    Annotated[int, Field(ge=0, le=MT_WORDS)],
    Literal[0, 1],
    float,
]
"""`np.random.get_state()`: kind, state words, position, has-gauss flag, cached gauss."""


class TrainingRecord(_Record):
    """The JSON part of a resumable training state (`TrainingState.to_files`)."""

    position: PositionRecord
    optimizer_groups: Annotated[list[OptimizerGroupRecord], Field(min_length=1)]
    scheduler: SchedulerRecord
    python_rng: PythonRng
    numpy_rng: NumpyRng
    cuda_devices: Count

    @field_validator("python_rng", "numpy_rng", mode="before")
    @classmethod
    def _as_tuple(cls, value: Any) -> Any:
        """The generators' states are tuples, which JSON and `to_files` write as lists."""
        return tuple(value) if isinstance(value, list) else value

    def inconsistency(self) -> str | None:
        """What disagrees between the parts (each valid alone), for hand-edited files."""
        groups = len(self.optimizer_groups)
        lists = {
            "base_lrs": self.scheduler.base_lrs,
            "_last_lr": self.scheduler.last_lr,
            "lr_lambdas": self.scheduler.lr_lambdas,
        }
        for key, values in lists.items():
            if len(values) != groups:
                return (
                    f"training.scheduler.{key}: {len(values)} entries for {groups} optimizer groups"
                )
        if self.scheduler.last_epoch != self.position.step:
            return (
                f"training.scheduler.last_epoch: {self.scheduler.last_epoch} is not "
                f"training.position.step ({self.position.step})"
            )
        position = self.python_rng[1][-1]
        if position > MT_WORDS:
            return f"training.python_rng.1: position {position} is past the {MT_WORDS} words"
        return None


class ComponentRecord(_Open):
    name: str


class ModelRecord(_Open):
    backbone: ComponentRecord
    pooling: str | None = None


class ConfigRecord(_Open):
    """The run's resolved config (`ResolvedConfig.to_yaml_dict`), typed where read."""

    task: ComponentRecord
    model: ModelRecord


class CheckpointMetadata(_Open):
    """`metadata.json`. `save_checkpoint` adds `format`, the versions and the sizes of
    the tensor files to its caller's record; a run records what it trained (`task`,
    `backbone`, `pooling`, `config`, ...), and a resumable checkpoint its `training`.
    """

    format: Literal["attd-checkpoint-v1"]
    attd_core: str
    torch: str
    weights_bytes: Count
    extra: dict[str, Count] = Field(default_factory=dict)
    step: Count
    epochs: Count = 0
    loss: float | None = Field(None, allow_inf_nan=True)
    seconds: Rate = Field(0.0, description="Training wall time; absent before attd recorded it.")
    task: str | None = None
    backbone: str | None = None
    scan_backend: str | None = None
    pooling: str | None = None
    trained_strategy: str | None = None
    config: ConfigRecord | None = None
    training: TrainingRecord | None = None

    @field_validator("loss")
    @classmethod
    def _finite_loss(cls, value: float | None) -> float | None:
        """A diverged loss is recorded as null (strict JSON has no NaN)."""
        return value if value is None or math.isfinite(value) else None

    def inconsistency(self) -> str | None:
        """A field that contradicts another (both valid alone), or None."""
        if self.training is not None:
            if self.step != self.training.position.step:
                return (
                    f"step: {self.step} is not training.position.step "
                    f"({self.training.position.step})"
                )
            problem = self.training.inconsistency()
            if problem is not None:
                return problem
        if self.config is not None:
            recorded = {
                "task": (self.task, self.config.task.name, "config.task.name"),
                "backbone": (
                    self.backbone,
                    self.config.model.backbone.name,
                    "config.model.backbone.name",
                ),
                "pooling": (self.pooling, self.config.model.pooling, "config.model.pooling"),
            }
            for key, (value, configured, where) in recorded.items():
                if value is not None and value != configured:
                    return f"{key}: {value!r} is not {where} ({configured!r})"
        return None

    def record(self) -> dict[str, Any]:
        """The metadata as plain data: the keys the file has, with their values."""
        return self.model_dump(exclude_unset=True)

    def to_json(self) -> str:
        """The file's text: strict JSON, the keys given and no others."""
        return self.model_dump_json(indent=2, exclude_unset=True) + "\n"


def parse_metadata(text: str | bytes, path: Path) -> CheckpointMetadata:
    """The metadata in `text` (the contents of `path`), checked field by field and for
    fields that contradict each other; anything wrong is a `CheckpointError` naming it."""
    try:
        metadata = CheckpointMetadata.model_validate_json(text)
    except ValidationError as exc:
        invalid = [error for error in exc.errors() if error["type"] == "json_invalid"]
        if invalid:
            raise CheckpointError(f"{path}: unreadable: {invalid[0]['msg']}") from None
        problems = describe_validation_error(exc)
        raise CheckpointError(f"{path}: not valid checkpoint metadata: {problems}") from None
    problem = metadata.inconsistency()
    if problem is not None:
        raise CheckpointError(f"{path}: not valid checkpoint metadata: {problem}")
    return metadata


class _Absent:
    def __repr__(self) -> str:
        return "absent"


ABSENT = _Absent()
"""The value `first_difference` reports for a key one side lacks."""


def first_difference(recorded: Any, current: Any, path: str = "") -> tuple[str, Any, Any] | None:
    """The first key path (`train.lr`) where two configs differ, with each side's value
    (`ABSENT` for a missing key); None when they are equal."""
    if isinstance(recorded, dict) and isinstance(current, dict):
        for key in [*recorded, *(key for key in current if key not in recorded)]:
            found = first_difference(
                recorded.get(key, ABSENT),
                current.get(key, ABSENT),
                f"{path}.{key}" if path else str(key),
            )
            if found is not None:
                return found
        return None
    return None if recorded == current else (path, recorded, current)
