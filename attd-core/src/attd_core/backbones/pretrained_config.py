"""What a published Mamba checkpoint's folder holds, read without torch: its layout
(transformers or mamba-ssm), the attd Mamba options that rebuild it, and its weight files.

`MambaOptions` reads this while a run config resolves, so a checkpoint's shape fills the
options a user left unset, and a checkpoint attd cannot rebuild is refused before anything
loads. Only safetensors files are read: a pickled `.bin` could run code when loaded.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attd_core.errors import CheckpointError, ConfigError

TRANSFORMERS = "transformers"
MAMBA_SSM = "mamba-ssm"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")

TRANSFORMERS_DEFAULTS: dict[str, Any] = {
    "hidden_size": 768,
    "num_hidden_layers": 32,
    "state_size": 16,
    "conv_kernel": 4,
    "expand": 2,
    "time_step_rank": "auto",
    "layer_norm_epsilon": 1e-5,
    "hidden_act": "silu",
    "use_bias": False,
    "use_conv_bias": True,
    "vocab_size": 50280,
}
"""transformers' `MambaConfig` defaults, for keys a config.json leaves out."""

MAMBA_SSM_DEFAULTS: dict[str, Any] = {
    "d_model": 2560,
    "d_intermediate": 0,
    "n_layer": 64,
    "vocab_size": 50277,
    "ssm_cfg": {},
    "attn_layer_idx": [],
    "attn_cfg": {},
    "rms_norm": True,
    "residual_in_fp32": True,
    "fused_add_norm": True,
    "pad_vocab_size_multiple": 8,
    "tie_embeddings": True,
}
"""mamba-ssm's `MambaConfig`: every key it has (others are refused), with its defaults."""

MAMBA_SSM_MIXER_DEFAULTS: dict[str, Any] = {
    "layer": "Mamba1",
    "d_state": 16,
    "d_conv": 4,
    "expand": 2,
    "dt_rank": "auto",
    "bias": False,
    "conv_bias": True,
}
"""mamba-ssm's `ssm_cfg` keys that shape the mixer, with `Mamba`'s defaults."""

MAMBA_SSM_INIT_KEYS = ("dt_min", "dt_max", "dt_init", "dt_scale", "dt_init_floor", "use_fast_path")
"""`ssm_cfg` keys that only initialise weights or pick a kernel: loaded weights make them moot."""

MAMBA_SSM_NORM_EPS = 1e-5
"""mamba-ssm's norm epsilon (its `create_block` default; its config has no key for it)."""

REQUIRED: dict[str, tuple[Any, str]] = {
    "hidden_act": ("silu", "attd's mixer gates with SiLU"),
    "use_bias": (False, "attd's in_proj and out_proj have no bias"),
    "bias": (False, "attd's in_proj and out_proj have no bias"),
    "use_conv_bias": (True, "attd's convolution has a bias"),
    "conv_bias": (True, "attd's convolution has a bias"),
    "layer": ("Mamba1", "attd's mixer is Mamba-1"),
    "d_intermediate": (0, "attd's Mamba layers have no MLP"),
    "attn_layer_idx": ([], "attd's mamba backbone has no attention layers"),
}
"""Config values attd can rebuild only at one setting, and what attd lacks otherwise."""


@dataclass(frozen=True)
class PretrainedSource:
    """A checkpoint folder, understood: enough to build its backbone and read its weights.

    `options` are `MambaOptions` fields; `vocab_rows` is how many rows the token embedding
    has (mamba-ssm pads the vocabulary to a multiple of `pad_vocab_size_multiple`).
    """

    folder: Path
    layout: str
    options: dict[str, Any]
    vocab_rows: int
    weight_files: tuple[Path, ...]


def read_source(path: str | Path) -> PretrainedSource:
    """Read the checkpoint at `path`: a folder, or a `.safetensors` file beside config.json.

    Raises `CheckpointError` for missing or pickled weight files, `ConfigError` for a
    config.json attd cannot rebuild, each naming the file and the value.
    """
    folder, weight_files = _locate(Path(path).expanduser())
    config_path = folder / CONFIG_FILE
    config = _read_json(config_path)
    if "model_type" in config:
        layout, options, rows = TRANSFORMERS, *_transformers(config, config_path)
    elif "d_model" in config and "n_layer" in config:
        layout, options, rows = MAMBA_SSM, *_mamba_ssm(config, config_path)
    else:
        raise ConfigError(
            f"{config_path}: neither a transformers Mamba config (model_type) nor a mamba-ssm "
            "one (d_model, n_layer)"
        )
    return PretrainedSource(folder, layout, options, rows, weight_files)


def _locate(path: Path) -> tuple[Path, tuple[Path, ...]]:
    """The folder holding config.json, and the safetensors files that hold the weights."""
    if path.suffix in PICKLE_SUFFIXES:
        raise _pickled(path)
    if path.is_file():
        if path.suffix != ".safetensors":
            raise CheckpointError(f"{path}: not a .safetensors file")
        return path.parent, (path,)
    if not path.is_dir():
        raise CheckpointError(f"pretrained checkpoint {path}: no such file or folder")
    if (path / WEIGHTS_FILE).is_file():
        return path, (path / WEIGHTS_FILE,)
    if (path / INDEX_FILE).is_file():
        shards = _read_json(path / INDEX_FILE).get("weight_map")
        if not isinstance(shards, dict) or not shards:
            raise CheckpointError(f"{path / INDEX_FILE}: no weight_map")
        return path, tuple(path / name for name in sorted(set(shards.values())))
    pickled = sorted(p for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickled:
        raise _pickled(pickled[0])
    raise CheckpointError(f"{path}: no {WEIGHTS_FILE} (or {INDEX_FILE}) in this folder")


def _pickled(path: Path) -> CheckpointError:
    return CheckpointError(
        f"{path}: a pickled checkpoint; attd loads safetensors only, since unpickling can run "
        "code (convert it where you trust it, e.g. with safetensors.torch.save_file)"
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: missing; a pretrained checkpoint needs its config") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: unreadable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    return data


def _transformers(config: dict[str, Any], where: Path) -> tuple[dict[str, Any], int]:
    """attd options and embedding rows of a transformers `MambaConfig` (model_type mamba).

    Keys that only initialise weights, pick kernels or set precision are not read.
    """
    if config["model_type"] != "mamba":
        raise ConfigError(
            f"{where}: model_type {config['model_type']!r}; attd loads Mamba-1 "
            "checkpoints (model_type 'mamba') only"
        )
    values = {**TRANSFORMERS_DEFAULTS, **config}
    _check_required(values, ("hidden_act", "use_bias", "use_conv_bias"), where)
    d_model, expand = _int(values, "hidden_size", where), _int(values, "expand", where)
    intermediate = values.get("intermediate_size")
    if intermediate is not None and intermediate != expand * d_model:
        raise ConfigError(
            f"{where}: intermediate_size {intermediate} is not expand * hidden_size "
            f"({expand * d_model}); attd's mixer width is expand * d_model"
        )
    options = {
        "d_model": d_model,
        "n_layers": _int(values, "num_hidden_layers", where),
        "d_state": _int(values, "state_size", where),
        "d_conv": _int(values, "conv_kernel", where),
        "expand": expand,
        "dt_rank": _rank(values, "time_step_rank", d_model, where),
        "norm": "rms",
        "norm_eps": _positive(values, "layer_norm_epsilon", where),
    }
    return options, _int(values, "vocab_size", where)


def _mamba_ssm(config: dict[str, Any], where: Path) -> tuple[dict[str, Any], int]:
    """attd options and embedding rows of a mamba-ssm `MambaConfig` (a `MambaLMHeadModel`)."""
    _check_known(config, MAMBA_SSM_DEFAULTS, (), where)
    values = {**MAMBA_SSM_DEFAULTS, **config}
    mixer_config = values["ssm_cfg"]
    if not isinstance(mixer_config, dict):
        raise ConfigError(f"{where}: ssm_cfg must be an object, got {mixer_config!r}")
    _check_known(mixer_config, MAMBA_SSM_MIXER_DEFAULTS, MAMBA_SSM_INIT_KEYS, where, "ssm_cfg.")
    mixer = {**MAMBA_SSM_MIXER_DEFAULTS, **mixer_config}
    _check_required(values, ("d_intermediate", "attn_layer_idx"), where)
    _check_required(mixer, ("layer", "bias", "conv_bias"), where, "ssm_cfg.")
    d_model = _int(values, "d_model", where)
    options = {
        "d_model": d_model,
        "n_layers": _int(values, "n_layer", where),
        "d_state": _int(mixer, "d_state", where),
        "d_conv": _int(mixer, "d_conv", where),
        "expand": _int(mixer, "expand", where),
        "dt_rank": _rank(mixer, "dt_rank", d_model, where),
        "norm": "rms" if values["rms_norm"] else "layer",
        "norm_eps": MAMBA_SSM_NORM_EPS,
    }
    vocab = _int(values, "vocab_size", where)
    multiple = _int(values, "pad_vocab_size_multiple", where)
    return options, math.ceil(vocab / multiple) * multiple


def _check_known(
    config: dict[str, Any],
    known: dict[str, Any],
    ignored: tuple[str, ...],
    where: Path,
    at: str = "",
) -> None:
    unknown = sorted(set(config) - set(known) - set(ignored))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key {at}{unknown[0]}; attd cannot tell whether it changes "
            f"the model (known: {', '.join([*known, *ignored])})"
        )


def _check_required(
    values: dict[str, Any], keys: tuple[str, ...], where: Path, at: str = ""
) -> None:
    for key in keys:
        needed, reason = REQUIRED[key]
        if values[key] != needed:
            raise ConfigError(
                f"{where}: {at}{key}={values[key]!r} is not supported ({reason}; needs {needed!r})"
            )


def _int(values: dict[str, Any], key: str, where: Path) -> int:
    value = values[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{where}: {key} must be a positive integer, got {value!r}")
    return value


def _positive(values: dict[str, Any], key: str, where: Path) -> float:
    value = values[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigError(f"{where}: {key} must be a positive number, got {value!r}")
    return float(value)


def _rank(values: dict[str, Any], key: str, d_model: int, where: Path) -> int:
    """A dt rank: "auto" means ceil(d_model / 16) in all three libraries."""
    return math.ceil(d_model / 16) if values[key] == "auto" else _int(values, key, where)
