"""`summary.json`, the record a finished run leaves, as one typed model for every reader.

`attd run` writes it last (so its presence means the run finished), `attd eval` adds
entries to its `eval` mapping, and the CLI's tables, `attd report` and `attd sweep` read
it back through `RunSummary.read`. Folders written by older versions load too: fields
added since then are optional, and an entry from before `metrics` was recorded holds only
its accuracy. Fields this version does not know are kept, so that rewriting the summary
of a run from a newer version loses nothing.

Imports no torch: `attd report` reads a run without loading it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
    model_validator,
)

from attd_core.errors import ConfigError, describe_validation_error
from attd_core.runtime.files import atomic_write_text

SUMMARY_FILE = "summary.json"


class PairedComparison(BaseModel):
    """A strategy against the baseline (`none`) on the same examples, pair by pair.

    `difference` is accuracy(strategy) - accuracy(baseline), with a paired bootstrap
    `confidence` interval `ci_low`..`ci_high`; `mcnemar_p` is the exact two-sided
    McNemar p-value; the flips count the examples the strategy turned wrong->right and
    right->wrong. Over several runs (seeds), `difference` is the mean of the runs'
    differences, `std` their standard deviation, and the interval, p-value and flips
    pool every run's pairs (see `attd_core.runtime.paired`).
    """

    model_config = ConfigDict(frozen=True, extra="allow")

    baseline: str = "none"
    n: int
    difference: float
    ci_low: float
    ci_high: float
    confidence: float
    mcnemar_p: float
    wrong_to_right: int
    right_to_wrong: int
    runs: int = 1
    std: float | None = None
    resamples: int
    seed: int


class EvalSummary(BaseModel):
    """One evaluation (a strategy, under a shift or not): the task's metrics and the cost.

    `accuracy` repeats `metrics["accuracy"]` (None for tasks without one) for readers
    that want the headline number alone. `p50_k`, `p90_k` and `seconds_per_sample` are
    None in runs from before they were recorded.

    `correct` holds, for tasks that judge each example (`example_correct`), one
    character per example in evaluation order: `1` right, `0` wrong; `split` names the
    examples. Evaluations of one split pair up through them, and `paired` is this
    strategy against `none` on those pairs. All three are None where the task judges no
    example alone, where no `none` evaluation of the same examples exists, and in runs
    from before they were recorded.
    """

    model_config = ConfigDict(extra="allow")

    accuracy: float | None = None
    metrics: dict[str, float | None]
    mean_k: float
    p50_k: float | None = None
    p90_k: float | None = None
    seconds: float
    seconds_per_sample: float | None = None
    n: int
    uses_labels: bool = False
    adapter_parameters: int | None = None
    split: str | None = None
    correct: str | None = None
    paired: PairedComparison | None = None

    @model_validator(mode="before")
    @classmethod
    def _headline(cls, data: Any) -> Any:
        """Fill `metrics` for entries that hold accuracy alone; take `accuracy` from it."""
        if not isinstance(data, dict):
            return data
        metrics = data.get("metrics") or {"accuracy": data.get("accuracy")}
        accuracy = metrics.get("accuracy") if isinstance(metrics, dict) else None
        return {**data, "metrics": metrics, "accuracy": accuracy}


class PhaseSummary(BaseModel):
    """A training phase after the first (the controller's): its steps, last loss, time."""

    model_config = ConfigDict(extra="allow")

    steps: int
    loss: float | None
    seconds: float


class TrainSummary(BaseModel):
    """Training: the regime, its steps and epochs, the last logged loss and the time.

    `controller` is the controller regime's second phase; absent for other regimes.
    """

    model_config = ConfigDict(extra="allow")

    regime: str = "base"
    steps: int
    epochs: int
    loss: float | None
    seconds: float
    controller: PhaseSummary | None = None

    @model_serializer(mode="wrap")
    def _without_absent_phase(self, handler: SerializerFunctionWrapHandler) -> Any:
        """Leave `controller` out, not null, for the regimes that have no such phase."""
        data = handler(self)
        if self.controller is None and isinstance(data, dict):
            data.pop("controller", None)
        return data


class RunSummary(BaseModel):
    """What a finished run reports: what ran, how it trained, and every evaluation.

    `eval` maps each canonical TTA spec (`none` first) to its result; `attd eval` adds
    `SPEC@SHIFT` keys for evaluations under a shift.
    """

    model_config = ConfigDict(extra="allow")

    task: str
    shift: str | None = None
    eval: dict[str, EvalSummary]
    backbone: str
    adapter: str | None = None
    scan_backend: str | None = None
    train: TrainSummary
    seed: int
    device: str
    output_dir: str

    @classmethod
    def read(cls, run_dir: str | Path) -> RunSummary:
        """The summary of the run in `run_dir`; a missing or malformed file is a one-line
        `ConfigError` that names it."""
        path = Path(run_dir) / SUMMARY_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(
                f"{str(path)!r} not found: the run did not finish (or is still running)"
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{str(path)!r}: unreadable: {exc}") from None
        except ValueError as exc:
            raise ConfigError(f"{str(path)!r}: not valid JSON: {exc}") from None
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            problems = describe_validation_error(exc)
            raise ConfigError(f"{str(path)!r} is not a run summary: {problems}") from None

    def write(self, run_dir: str | Path) -> None:
        """Write `run_dir/summary.json` atomically (non-finite numbers become null)."""
        atomic_write_text(Path(run_dir) / SUMMARY_FILE, self.model_dump_json(indent=2) + "\n")
