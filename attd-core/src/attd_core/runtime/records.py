"""Typed `metrics.jsonl` records, for the records that programs read back.

`metrics.jsonl` holds one JSON object per line (`MetricsWriter`). A validation record
(`"event": "val"`) is written by the trainer from `ValidationRecord` and read back
through it by `attd report`, so that writer and reader agree on its fields, as
`RunSummary` makes them agree on `summary.json`. Imports no torch: `attd report` reads a
run without loading it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError


class ValidationRecord(BaseModel):
    """One validation while training, after optimiser step `step` of epoch `epoch`.

    The task's metrics sit beside these fields, flat (`"accuracy": 0.75`; null when
    not finite), on the first `n` examples of `split`. `seconds` is the training time
    so far, validation not counted (summed over a resumed run's sessions);
    `validation_seconds` is what this validation took.
    """

    model_config = ConfigDict(extra="allow")

    event: Literal["val"] = "val"
    step: int
    epoch: int
    split: str
    n: int
    seconds: float
    validation_seconds: float

    @classmethod
    def of(cls, metrics: Mapping[str, float], **fields: Any) -> ValidationRecord:
        """The record of `metrics` with `fields`; a metric named like a field loses."""
        return cls.model_validate({**metrics, **fields})

    @property
    def metrics(self) -> dict[str, float | None]:
        """The task's metrics, in the order the task reported them."""
        return {
            key: value
            for key, value in (self.model_extra or {}).items()
            if value is None or (isinstance(value, int | float) and not isinstance(value, bool))
        }

    @classmethod
    def read(cls, records: Iterable[Mapping[str, Any]]) -> list[ValidationRecord]:
        """The validation records among `records` (the objects of `metrics.jsonl`, in
        order); one missing a field (edited by hand) is left out, as `attd report` leaves
        out other records that lack what it draws."""
        found = []
        for record in records:
            if record.get("event") != "val":
                continue
            try:
                found.append(cls.model_validate(record))
            except ValidationError:
                continue
        return found
