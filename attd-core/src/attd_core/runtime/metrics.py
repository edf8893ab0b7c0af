"""Metrics as JSON lines: one object per line, flushed at once so a crashed run keeps its log.

With `tensorboard=True` the numeric fields of every record are also written as
TensorBoard scalars under `RUN_DIR/tensorboard` (next to `metrics.jsonl`), when the
optional `tensorboard` package is installed; without it the run warns once and goes on.
"""

from __future__ import annotations

import importlib.util
import sys
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from attd_core.strict_json import finite, json_text

TENSORBOARD_DIR = "tensorboard"
"""The folder, beside `metrics.jsonl`, that the TensorBoard mirror writes to."""


class MetricsWriter:
    """Appends records such as `{"event": "train", "step": 10, "loss": 0.7, ...}`.

    Non-finite floats, nested ones included, become null, so every line is strict
    JSON (`attd_core.json_text`). With `tensorboard`,
    each record's numeric fields are mirrored as scalars tagged `EVENT/FIELD`
    (`train/loss`, `train/lr`, `controller/mean_k`), or `eval/TTA/FIELD` for evaluations
    (`eval/TTA@SHIFT/FIELD` when shifted), at the record's `step`, or else at how many
    records that tag prefix has had before.
    """

    def __init__(self, path: str | Path, *, tensorboard: bool = False) -> None:
        self.path = Path(path)
        self._file = self.path.open("a", encoding="utf-8")
        self._board: Any = None
        self._counts: Counter[str] = Counter()
        if tensorboard:
            self._board = open_tensorboard(self.path.parent / TENSORBOARD_DIR)

    def write(self, record: Mapping[str, Any]) -> None:
        plain = finite(dict(record))
        self._file.write(json_text(plain) + "\n")
        self._file.flush()
        if self._board is not None:
            self._mirror(plain)

    def _mirror(self, record: Mapping[str, Any]) -> None:
        event = record.get("event")
        if not isinstance(event, str):
            return
        prefix = event
        if event == "eval" and isinstance(record.get("tta"), str):
            shift = record.get("shift")
            prefix = f"eval/{record['tta']}" + (f"@{shift}" if isinstance(shift, str) else "")
        step = record.get("step")
        if not isinstance(step, int) or isinstance(step, bool):
            step = self._counts[prefix]
        self._counts[prefix] += 1
        for key, value in record.items():
            if key != "step" and _is_number(value):
                self._board.add_scalar(f"{prefix}/{key}", value, step)
        self._board.flush()

    def close(self) -> None:
        self._file.close()
        if self._board is not None:
            self._board.close()
            self._board = None

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def summary_writer_class() -> Any:
    """torch's `SummaryWriter`, or None when the `tensorboard` package is not installed."""
    if importlib.util.find_spec("tensorboard") is None:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter


def open_tensorboard(log_dir: Path) -> Any:
    """A SummaryWriter on `log_dir`, or None (with one warning line) without tensorboard."""
    writer_class = summary_writer_class()
    if writer_class is None:
        sys.stderr.write(
            "attd: warning: runtime.tensorboard is set but the tensorboard package is not "
            "installed (pip install tensorboard); logging to metrics.jsonl only\n"
        )
        return None
    return writer_class(log_dir=str(log_dir))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
