"""`attd data export` and `attd data info`: look at a task's data without training.

Both resolve the task as `attd run` would (run defaults, `--preset`, `--set`), so the
data seen here are the data a run trains on; a generated task generates (and caches)
its splits on first use. Overrides name task options: `max_depth=8` and
`task.max_depth=8` are the same.
"""

from __future__ import annotations

import json
import os
import statistics
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

import attd_core
from attd_core import ConfigError, PluginManager

SPLITS = ("train", "validation", "test")
INFO_BATCH = 256


def build_task(
    manager: PluginManager, task: str, preset: str | None, overrides: Sequence[str]
) -> Any:
    """The task as a run with these settings would build it."""
    task_overrides = [text if text.startswith("task.") else f"task.{text}" for text in overrides]
    resolved = attd_core.resolve_run_config(
        manager, task=task, preset=preset, overrides=task_overrides
    )
    return manager.create("task", task, resolved.task.options)


def export_data(
    manager: PluginManager,
    *,
    task: str,
    preset: str | None,
    split: str,
    limit: int | None,
    overrides: Sequence[str],
    out: Path,
) -> int:
    """Write `split`'s examples as JSON lines to `out` (atomically); returns how many."""
    built = build_task(manager, task, preset, overrides)
    attd_core.check_destination(out, "--out")  # before generating; creates missing folders
    examples = built.load_split(split)
    count = len(examples) if limit is None else min(limit, len(examples))
    staging = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        with staging.open("w", encoding="utf-8") as handle:
            for index in range(count):
                handle.write(record(built, examples[index], index) + "\n")
        attd_core.fsync_file(staging)
        os.replace(staging, out)
    finally:
        staging.unlink(missing_ok=True)
    return count


def record(task: Any, example: Any, index: int) -> str:
    """One JSON line: the task's own form of an example (`export_record`), else its plain
    fields; a field JSON cannot hold is named. A non-finite number (a missing value in
    a numeric column) is written as null: strict JSON has no NaN."""
    export = getattr(task, "export_record", None)
    row = export(example) if export is not None else dict(example)
    try:
        return attd_core.json_text(row)
    except TypeError:
        bad = next(key for key, value in row.items() if not _is_json(value))
        raise ConfigError(
            f"example {index}: field {bad!r} holds a {type(row[bad]).__name__}, which is not "
            f"JSON; the task needs an export_record method to export it"
        ) from None


def _is_json(value: Any) -> bool:
    try:
        json.dumps(value)
    except TypeError:
        return False
    return True


def data_info(
    manager: PluginManager,
    *,
    task: str,
    preset: str | None,
    splits: Sequence[str],
    limit: int | None,
    overrides: Sequence[str],
) -> dict[str, dict[str, Any]]:
    """Per split: size, token-length statistics and label counts, from collated batches."""
    built = build_task(manager, task, preset, overrides)
    return {split: split_info(built, split, limit) for split in splits or SPLITS}


def split_info(task: Any, split: str, limit: int | None) -> dict[str, Any]:
    examples = task.load_split(split)
    lengths: list[int] = []
    labels: Counter[int] = Counter()
    per_token = False
    for batch in _batches(task, examples, limit):
        mask = (
            batch.mask if batch.mask is not None else batch.inputs.new_ones(batch.inputs.shape[:2])
        )
        lengths += mask.sum(dim=1).tolist()
        if batch.labels is not None and batch.labels.dim() == 1:
            labels.update(batch.labels.tolist())
        per_token |= batch.labels is not None and batch.labels.dim() > 1
    return {
        "size": len(examples),
        "measured": len(lengths),
        "length": _length_stats(lengths),
        "labels": None if per_token else {str(k): labels[k] for k in sorted(labels)},
    }


def _batches(task: Any, examples: Any, limit: int | None) -> Iterator[Any]:
    count = len(examples) if limit is None else min(limit, len(examples))
    for start in range(0, count, INFO_BATCH):
        rows = [examples[i] for i in range(start, min(start + INFO_BATCH, count))]
        yield task.preprocess(rows)


def _length_stats(lengths: list[int]) -> dict[str, float] | None:
    if not lengths:
        return None
    return {
        "min": min(lengths),
        "mean": statistics.fmean(lengths),
        "median": statistics.median(lengths),
        "max": max(lengths),
    }


def info_table(task: str, info: dict[str, dict[str, Any]]) -> Table:
    """One row per split: size, token lengths and label shares."""
    table = Table("split", "examples", "tokens min/mean/max", "labels", title=escape(task))
    for split, entry in info.items():
        stats = entry["length"]
        lengths = "-" if stats is None else f"{stats['min']}/{stats['mean']:.1f}/{stats['max']}"
        table.add_row(split, _size(entry), lengths, escape(_balance(entry["labels"])))
    return table


def _size(entry: dict[str, Any]) -> str:
    measured = entry["measured"]
    return str(entry["size"]) + ("" if measured == entry["size"] else f" ({measured} measured)")


def _balance(labels: dict[str, int] | None) -> str:
    if labels is None:
        return "per-token labels"
    total = sum(labels.values())
    if not total:
        return "-"
    return ", ".join(f"{label}: {100 * count / total:.1f}%" for label, count in labels.items())
