"""`attd eval`: one more evaluation of a finished run, added to its `summary.json`.

The helpers here (checking a run folder, parsing shifts, evaluating on a loaded run)
are shared with `attd compare`. Everything that can fail without torch (a missing
folder, an unknown shift, a summary that is not a run's, a folder it cannot write)
fails before torch loads. The result is recorded holding the run folder's lock, so
evaluations of one run may go on at once, each adding its entry.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape

from attd_core import (
    ComponentChoice,
    ConfigError,
    PluginManager,
    RunSummary,
    json_text,
    parse_component,
)

if TYPE_CHECKING:
    from attd_core import EvalResult

CLEAN = "clean"
"""The name of the unshifted evaluation in reports."""


def check_run_dir(run_dir: str | Path) -> Path:
    """`run_dir` as a Path, if it is a folder holding a run's `config.yaml`."""
    path = Path(run_dir)
    if not path.exists():
        raise ConfigError(f"run folder {str(path)!r} not found")
    if not path.is_dir():
        raise ConfigError(f"run folder {str(path)!r} is not a folder")
    if not (path / "config.yaml").is_file():
        raise ConfigError(f"{str(path)!r} is not a run folder: it has no config.yaml")
    return path


def check_writable(run_dir: Path) -> None:
    """Refuse a run folder `attd eval` could not record its result in, before it works."""
    metrics = run_dir / "metrics.jsonl"
    for path in (run_dir, *([metrics] if metrics.exists() else [])):
        if not os.access(path, os.W_OK):
            raise ConfigError(
                f"{str(path)!r} is not writable: attd eval records its result in the run folder"
            )


def parse_shifts(texts: Sequence[str], manager: PluginManager) -> list[ComponentChoice]:
    """Each `--shift` spec, validated, without repeats (by canonical spelling)."""
    choices: dict[str, ComponentChoice] = {}
    for text in texts:
        choice = parse_component(text, "shift", manager)
        choices.setdefault(choice.canonical, choice)
    return list(choices.values())


def shift_key(shift: ComponentChoice | None) -> str:
    return CLEAN if shift is None else shift.canonical


def evaluate_loaded(
    parts: Any,
    config: Any,
    device: Any,
    shifts: Sequence[ComponentChoice | None],
    progress_console: Console | None,
) -> dict[str, dict[str, EvalResult]]:
    """Every strategy of `parts` under each shift (None: clean), keyed by shift then tta.

    Each shift is tried on a batch of the task first, so one that does not fit the task
    fails before any evaluation runs.
    """
    from attd_core import check_shift, evaluate_strategies

    for choice in shifts:
        if choice is not None:
            check_shift(parts.task, choice, config.eval.split, config.task.name)
    results = {}
    for choice in shifts:
        shift = None if choice is None else choice.create()
        results[shift_key(choice)] = evaluate_strategies(
            parts, config, device, None, progress_console, shift=shift
        )
    return results


def dump_json(data: Any) -> str:
    """`data` as indented strict JSON (non-finite numbers as null), ending in a newline."""
    return json_text(data, indent=2) + "\n"


def evaluate_run(
    manager: PluginManager,
    run_dir: str | Path,
    *,
    tta: str,
    shift: str | None,
    overrides: Sequence[str],
    console: Console,
    progress_console: Console,
) -> RunSummary:
    """Evaluate `run_dir`'s model with `tta` (under `shift`), record it, print the row.

    The entry goes into `summary.json`'s `eval` mapping under the canonical spec (with
    `@SHIFT` appended when shifted), and the eval record is appended to `metrics.jsonl`.
    The entry is compared with the run's `none` entry (`none@SHIFT` when shifted) where
    that judged the same examples. Returns the new `summary.json` content.
    """
    from attd_cli.run import print_results

    path = check_run_dir(run_dir)
    RunSummary.read(path)  # fail before loading anything when there is no summary to extend
    check_writable(path)
    shift_choice = parse_shifts([shift], manager)[0] if shift is not None else None

    from attd_core import MetricsWriter, is_staging_name, load_run, lock_folder, with_paired

    resolved, parts, device = load_run(path, manager, tta=[tta], overrides=overrides)
    canonical = resolved.config.eval.tta[0] if resolved.config.eval.tta else "none"
    only = dataclasses.replace(parts, strategies={canonical: parts.strategies[canonical]})
    results = evaluate_loaded(only, resolved.config, device, [shift_choice], progress_console)
    result = results[shift_key(shift_choice)][canonical]

    key = canonical if shift_choice is None else f"{canonical}@{shift_choice.canonical}"
    record = result.record()
    if shift_choice is not None:
        record["shift"] = shift_choice.canonical
    with lock_folder(path, what="run folder", wait=True) as lock:  # one writer at a time
        lock.remove_leftovers(is_staging_name)  # what a killed writer left
        summary = RunSummary.read(path)  # again: the evaluation took a while
        summary.eval[key] = result.summary()
        summary.eval[key] = with_paired(summary.eval, key, seed=resolved.config.runtime.seed)
        with MetricsWriter(path / "metrics.jsonl") as metrics:
            metrics.write(record)
        summary.write(path)

    print_results(console, summary.task, {key: summary.eval[key]})
    console.print(f"[bold]recorded[/] {escape(key)} in {escape(str(path / 'summary.json'))}")
    return summary
