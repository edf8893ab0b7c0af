"""The `harder` shift: test examples drawn from a harder generator config, severity 1-5.

Corruption shifts change each batch; this one changes which examples are drawn, so it
supplies the test split itself (`load_split`, see attd-core's `Shift`). Each generated
task knows what "harder" means for it (deeper and longer ListOps trees, longer contours
and more distractors for Pathfinder) through its `harder_split(split, severity)`.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from attd_core import Batch, ConfigError


class HarderOptions(BaseModel):
    # Built on first use, not at import: listing plugins imports every options model.
    model_config = ConfigDict(extra="forbid", defer_build=True, allow_inf_nan=False)

    positional: ClassVar[tuple[str, ...]] = ("severity",)

    severity: int = Field(3, ge=1, le=5, description="1 (a little harder) to 5 (much harder).")


class HarderInstances:
    """Evaluates on the task's harder instances; batches pass through unchanged."""

    def __init__(self, options: HarderOptions) -> None:
        self.severity = options.severity

    def load_split(self, task: Any, split: str) -> Any:
        harder_split = getattr(task, "harder_split", None)
        if harder_split is None:
            raise ConfigError(
                f"shift 'harder' needs a generated task that can make harder instances "
                f"(listops, pathfinder, pathx); {type(task).__name__} cannot"
            )
        return harder_split(split, self.severity)

    def apply(self, batch: Batch, generator: Any) -> Batch:
        return batch
