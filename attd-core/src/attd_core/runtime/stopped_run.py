"""A stopped run: the config it finishes with, and the point its training goes on from.

`attd run --resume RUN_DIR` finishes a run folder that has `config.yaml` but no
`summary.json`. Training goes on from the last resumable checkpoint (the state that
`resume.py` saves), from the start when none was written yet, or not at all when
training had finished (its recorded time is kept); records of the lost work leave
`metrics.jsonl`; evaluation runs again.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from attd_core.errors import CheckpointError, ConfigError
from attd_core.interfaces import TTAStrategy
from attd_core.plugins import PluginManager
from attd_core.runtime.checkpoint import (
    METADATA_FILE,
    checkpoint_dir,
    load_checkpoint,
    load_extra,
    load_tensors,
)
from attd_core.runtime.checkpoint_metadata import first_difference
from attd_core.runtime.config import ResolvedConfig, resolve_run_config
from attd_core.runtime.files import atomic_write_text
from attd_core.runtime.resume import OPTIMIZER_FILE, RNG_FILE, TrainingState
from attd_core.runtime.summary import SUMMARY_FILE
from attd_core.runtime.trainer import TrainResult


def resume_config(run_dir: str | Path, manager: PluginManager) -> ResolvedConfig:
    """The config of a stopped run, for `run_experiment(..., resume=True)` to finish it.

    Training goes on to the same weights as a run never stopped.
    """
    run_dir = Path(run_dir)
    check_unfinished(run_dir)
    return resolve_run_config(manager, config_files=[run_dir / "config.yaml"], output_dir=run_dir)


def check_unfinished(run_dir: Path) -> None:
    """Refuse a folder that is not a stopped run: checked when the resume is asked for,
    and again once the run holds the folder's lock (another process may have finished
    it meanwhile)."""
    if not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"{str(run_dir)!r} is not a run folder: it has no config.yaml")
    if (run_dir / SUMMARY_FILE).exists():
        raise ConfigError(
            f"run {str(run_dir)!r} has finished (it has {SUMMARY_FILE}): nothing to resume"
        )


def restart_point(
    run_dir: Path,
    model: nn.Module,
    training: TTAStrategy | None,
    resolved: ResolvedConfig,
) -> TrainingState | TrainResult | None:
    """What a resumed run goes on from: a training state, a finished training, or nothing.

    The checkpoint's weights are loaded into `model` (and its trained controller into
    `training`, the strategy the controller regime trains), its config must be the
    run's, and `metrics.jsonl` keeps only the records of the work the checkpoint holds.
    """
    if not (checkpoint_dir(run_dir) / METADATA_FILE).is_file():
        _trim_metrics(run_dir, lambda record: False)
        return None
    metadata = load_checkpoint(run_dir, model)
    recorded = _without_output_dir(metadata.get("config"))
    current = _without_output_dir(resolved.to_yaml_dict())
    difference = first_difference(recorded, current, "config")
    if difference is not None:
        key, saved, wanted = difference
        raise CheckpointError(
            f"{checkpoint_dir(run_dir)}: its config differs from {run_dir / 'config.yaml'} "
            f"at {key} ({saved!r} in the checkpoint, {wanted!r} in config.yaml); "
            "a run resumes only with the config it started with"
        )
    step = int(metadata["step"])
    if "training" not in metadata:  # training had finished; evaluation had not
        if training is not None:
            load_extra(run_dir, "strategy", training)
        _trim_metrics(run_dir, lambda record: record.get("event") != "eval")
        seconds = metadata.get("seconds", 0.0)  # absent before attd recorded it
        return TrainResult(step, metadata.get("epochs", 0), metadata.get("loss"), seconds)
    tensors = {name: load_tensors(run_dir, name) for name in (OPTIMIZER_FILE, RNG_FILE)}
    state = TrainingState.from_files(metadata["training"], tensors)
    _trim_metrics(run_dir, lambda record: _done_by(record, step))
    return state


def _done_by(record: dict[str, Any], step: int) -> bool:
    """Whether `record` is of training work up to `step`, which a checkpoint of that step
    holds: a training or validation record (validation runs before a checkpoint)."""
    return record.get("event") in ("train", "val") and record["step"] <= step


def _without_output_dir(config: Any) -> Any:
    """A config as data, minus where the run lives (a resumed run names its folder)."""
    if not isinstance(config, dict) or not isinstance(config.get("runtime"), dict):
        return config
    return {**config, "runtime": {**config["runtime"], "output_dir": None}}


def _trim_metrics(run_dir: Path, keep: Callable[[dict[str, Any]], bool]) -> None:
    """Rewrite `metrics.jsonl` with the records `keep` accepts (a torn last line goes)."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and keep(record):
            kept.append(line + "\n")
    atomic_write_text(path, "".join(kept))
