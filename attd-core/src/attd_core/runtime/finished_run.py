"""A finished run, rebuilt from its folder for more evaluations (`attd eval`, `attd compare`).

Its `config.yaml` is resolved again, reading settings whose meaning has changed since
the run was written as they were meant then, and the checkpoint's weights are loaded. As
`--resume` does, it refuses a checkpoint whose recorded task or model is not the one
`config.yaml` describes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from attd_core.errors import CheckpointError, ConfigError
from attd_core.plugins import PluginManager
from attd_core.runtime.checkpoint import (
    METADATA_FILE,
    checkpoint_dir,
    load_checkpoint,
    load_extra,
    read_metadata,
)
from attd_core.runtime.checkpoint_metadata import first_difference
from attd_core.runtime.config import ResolvedConfig, load_yaml_file, resolve_run_config
from attd_core.runtime.environment import configure_threads, seed_everything, select_device
from attd_core.runtime.run import Components, build_components


def load_run(
    run_dir: str | Path,
    manager: PluginManager,
    *,
    tta: Sequence[str],
    overrides: Sequence[str] = (),
) -> tuple[ResolvedConfig, Components, torch.device]:
    """Rebuild a finished run from its folder for more evaluations.

    The run's `config.yaml` is resolved again with `tta` as the strategies (and any
    `overrides`, e.g. `eval.limit=100`), the checkpoint's weights are loaded, and a
    strategy trained by the controller regime gets its trained controller back. An
    objective head trained by the aligned regime is loaded when the evaluation's
    objective has a head (the one it trained), and left out when it has none.
    """
    run_dir = Path(run_dir)
    config_file = run_dir / "config.yaml"
    if not config_file.is_file():
        raise ConfigError(f"{str(run_dir)!r} is not a run folder: it has no config.yaml")
    metadata = read_metadata(run_dir)
    _check_architecture(config_file, metadata)
    overrides = [*_legacy_overrides(config_file, metadata), *overrides]
    resolved = resolve_run_config(manager, config_files=[config_file], overrides=overrides, tta=tta)
    config = resolved.config
    seed_everything(config.runtime.seed)
    configure_threads(config.runtime.threads)
    device = select_device(config.runtime.device)
    parts = build_components(resolved, manager, device)
    # a run trained with a headed objective may be evaluated with another objective
    unused = ("objective_head.",) if parts.model.objective_head is None else ()
    load_checkpoint(run_dir, parts.model, unused=unused)
    trained = parts.strategies.get(metadata.get("trained_strategy") or "")
    if trained is not None:
        load_extra(run_dir, "strategy", trained)
    return resolved, parts, device


def _check_architecture(config_file: Path, metadata: dict[str, Any]) -> None:
    """Refuse a checkpoint whose config records another task or model than `config_file`:
    the weights are of the model the checkpoint records (the other sections may differ,
    as evaluating changes nothing they set)."""
    recorded = metadata.get("config") or {}
    written = load_yaml_file(config_file)
    sections = ("task", "model")
    difference = first_difference(
        {section: recorded.get(section) for section in sections},
        {section: written.get(section) for section in sections},
        "config",
    )
    if difference is not None:
        key, saved, wanted = difference
        raise CheckpointError(
            f"{checkpoint_dir(config_file.parent) / METADATA_FILE}: {key} is {saved!r}, but "
            f"{wanted!r} in {config_file}: the weights are not of the model config.yaml "
            "describes"
        )


def _legacy_overrides(config_file: Path, metadata: dict[str, Any]) -> list[str]:
    """Overrides that keep a run from before a change of meaning evaluating as it trained.

    Runs whose checkpoint does not record its pooling predate the `pooling` plugins,
    when `mean` meant the mean over real tokens, now called `masked-mean`.
    """
    if "pooling" in metadata:
        return []
    model = load_yaml_file(config_file).get("model")
    if isinstance(model, dict) and model.get("pooling") == "mean":
        return ["model.pooling=masked-mean"]
    return []
