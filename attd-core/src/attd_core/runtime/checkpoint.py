"""Checkpoints: safetensors weights plus a JSON metadata file, in `RUN_DIR/checkpoint/`.

safetensors never unpickles, so loading a checkpoint cannot run code. The folder is
built under a hidden temporary name and renamed into place only when complete: an
interrupted save leaves no `checkpoint/` that looks finished. The metadata is written and
read through `checkpoint_metadata.py`'s model, so every loader refuses a malformed field
before it loads a weight.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from attd_core import __version__
from attd_core.errors import CheckpointError
from attd_core.runtime.checkpoint_metadata import FORMAT, CheckpointMetadata, parse_metadata
from attd_core.runtime.files import apply_umask, fsync_file

CHECKPOINT_DIR = "checkpoint"
WEIGHTS_FILE = "model.safetensors"
METADATA_FILE = "metadata.json"
STAGING_PREFIX = f".{CHECKPOINT_DIR}-"
"""Hidden folders a save builds in (and retires the old checkpoint to); a killed save
leaves one, which the next run of the folder removes (`run_folder.remove_leftovers`)."""


def save_checkpoint(
    run_dir: str | Path,
    model: nn.Module,
    metadata: Mapping[str, Any],
    extra: Mapping[str, nn.Module] | None = None,
    tensors: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
) -> Path:
    """Write `model`'s weights and `metadata` (config, step, task, ...) atomically.

    `extra` modules (a trained TTA strategy's controller and gate) and `tensors` (named
    groups of plain tensors: a training state's optimiser and RNG) go to
    `<name>.safetensors` beside the weights, recorded with their sizes in `extra`.
    A record that would not read back (a field of the wrong type, a NaN where a number
    must be finite) is a `CheckpointError`, and nothing is written.
    """
    run_dir = Path(run_dir)
    target = run_dir / CHECKPOINT_DIR
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=run_dir))
    try:
        files = {
            WEIGHTS_FILE: model.state_dict(),
            **{f"{name}.safetensors": m.state_dict() for name, m in (extra or {}).items()},
            **{f"{name}.safetensors": group for name, group in (tensors or {}).items()},
        }
        sizes = {name: _write_tensors(staging / name, group) for name, group in files.items()}
        record = {
            **metadata,
            "format": FORMAT,
            "attd_core": __version__,
            "torch": torch.__version__,
            "weights_bytes": sizes.pop(WEIGHTS_FILE),
            "extra": sizes,
        }
        text = _checked_record(record, target / METADATA_FILE).to_json()
        (staging / METADATA_FILE).write_text(text, encoding="utf-8")
        fsync_file(staging / METADATA_FILE)
        for path in (staging, *(staging / name for name in files)):
            apply_umask(path)
        _swap_in(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _checked_record(record: Mapping[str, Any], path: Path) -> CheckpointMetadata:
    """`record` as the readers will see it: through JSON (which knows no tuples) and the
    metadata model."""
    try:
        return parse_metadata(json.dumps(record), path)
    except CheckpointError as exc:
        raise CheckpointError(f"not saving the checkpoint: {exc}") from None


def _write_tensors(path: Path, group: Mapping[str, torch.Tensor]) -> int:
    tensors = {key: value.detach().cpu().contiguous() for key, value in group.items()}
    save_file(tensors, str(path), metadata={"format": "pt"})
    fsync_file(path)
    return path.stat().st_size


def _swap_in(staging: Path, target: Path) -> None:
    """Rename `staging` to `target`, replacing an older checkpoint only once it is complete."""
    if not target.exists():
        os.replace(staging, target)
        return
    retired = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}old-", dir=target.parent))
    os.replace(target, retired / CHECKPOINT_DIR)
    os.replace(staging, target)
    shutil.rmtree(retired, ignore_errors=True)


def checkpoint_dir(path: str | Path) -> Path:
    """The checkpoint folder of `path`, a checkpoint folder or a run folder holding one."""
    directory = Path(path)
    return directory / CHECKPOINT_DIR if (directory / CHECKPOINT_DIR).is_dir() else directory


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata of the checkpoint at `path` (see `checkpoint_dir`), without weights."""
    return _read_metadata(checkpoint_dir(path) / METADATA_FILE).record()


def load_checkpoint(
    path: str | Path, model: nn.Module, *, unused: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Load weights into `model` and return the metadata.

    `path` is a checkpoint folder or a run folder holding one. Missing or truncated
    files and keys or shapes that do not match the model raise `CheckpointError`.
    Tensors whose key starts with one of `unused` are left out (an objective head the
    evaluation's objective does not use).
    """
    directory = checkpoint_dir(path)
    metadata = _read_metadata(directory / METADATA_FILE)
    _load_weights(directory / WEIGHTS_FILE, model, metadata.weights_bytes, unused)
    return metadata.record()


def load_extra(path: str | Path, name: str, module: nn.Module) -> bool:
    """Load the extra module `name` saved with the checkpoint; False when there is none."""
    directory = checkpoint_dir(path)
    metadata = _read_metadata(directory / METADATA_FILE)
    file_name = f"{name}.safetensors"
    if file_name not in metadata.extra:
        return False
    _load_weights(directory / file_name, module, metadata.extra[file_name])
    return True


def load_tensors(path: str | Path, name: str) -> dict[str, torch.Tensor]:
    """The tensor group `name` saved with the checkpoint (see `save_checkpoint`)."""
    directory = checkpoint_dir(path)
    metadata = _read_metadata(directory / METADATA_FILE)
    file_name = f"{name}.safetensors"
    if file_name not in metadata.extra:
        raise CheckpointError(f"{directory}: holds no {file_name}")
    return _read_tensors(directory / file_name, metadata.extra[file_name])


def _load_weights(
    weights: Path, module: nn.Module, expected: int, unused: tuple[str, ...] = ()
) -> None:
    tensors = _read_tensors(weights, expected)
    tensors = {key: value for key, value in tensors.items() if not key.startswith(unused)}
    _check_matches(weights, tensors, module.state_dict())
    module.load_state_dict(tensors)


def _read_tensors(path: Path, expected: int) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"{path}: missing")
    size = path.stat().st_size
    if size != expected:
        raise CheckpointError(
            f"{path}: truncated or modified ({size} bytes; {METADATA_FILE} says {expected})"
        )
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors reports corrupt headers with its own types
        raise CheckpointError(f"{path}: not a readable safetensors file: {exc}") from None


def _read_metadata(path: Path) -> CheckpointMetadata:
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing; not a complete checkpoint") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: unreadable: {exc}") from None
    return parse_metadata(text, path)


def _check_matches(
    weights: Path, tensors: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]
) -> None:
    missing = sorted(set(expected) - set(tensors))
    if missing:
        raise CheckpointError(f"{weights}: no tensor for model key {missing[0]!r}{_more(missing)}")
    unexpected = sorted(set(tensors) - set(expected))
    if unexpected:
        raise CheckpointError(
            f"{weights}: key {unexpected[0]!r}{_more(unexpected)} is not in the model"
        )
    for key, wanted in expected.items():
        if tensors[key].shape != wanted.shape:
            raise CheckpointError(
                f"{weights}: key {key!r} has shape {tuple(tensors[key].shape)} in the file "
                f"but {tuple(wanted.shape)} in the model"
            )


def _more(keys: list[str]) -> str:
    return f" (and {len(keys) - 1} more)" if len(keys) > 1 else ""
