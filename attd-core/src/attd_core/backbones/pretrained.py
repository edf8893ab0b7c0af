"""Load a transformers or mamba-ssm Mamba checkpoint into attd's Mamba backbone.

Below their models' top level attd, transformers and mamba-ssm share parameter names
(`layers.{i}.mixer.A_log`, `layers.{i}.norm.weight`, `norm_f.weight`), so mapping a state
dict strips the `backbone.` prefix, takes the token embedding out (`embeddings.weight` in
transformers, `embedding.weight` in mamba-ssm) and drops `lm_head.weight` (attd's heads
belong to the tasks). The norms' meaning is carried by `norm` (rms, or layer for a
mamba-ssm model built with `rms_norm=false`), set from the checkpoint's config. Anything
else is refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

from attd_core.backbones.pretrained_config import (
    MAMBA_SSM,
    TRANSFORMERS,
    PretrainedSource,
    read_source,
)
from attd_core.errors import CheckpointError
from attd_core.options import MambaOptions

if TYPE_CHECKING:
    from attd_core.backbones.mamba import MambaBackbone

PREFIX = "backbone."
EMBEDDING_KEYS = {
    MAMBA_SSM: ("embedding.weight",),
    # transformers itself renames the older `embedding.weight` on load, so both are its.
    TRANSFORMERS: ("embeddings.weight", "embedding.weight"),
}
IGNORED_KEYS = ("lm_head.weight",)


@dataclass(frozen=True)
class PretrainedMamba:
    """A loaded checkpoint: the backbone, and its token embedding `(rows, d_model)`.

    Start a model's embedding from `embedding` when its token ids are the checkpoint's
    tokenizer's (`AttdModel` does so itself when its vocabulary has `rows` entries).
    """

    backbone: MambaBackbone
    embedding: Tensor


def load_pretrained_mamba(path: str | Path, **options: Any) -> PretrainedMamba:
    """A `MambaBackbone` with the weights of the checkpoint at `path`, and its embedding.

    `path` is a folder with config.json and model.safetensors (or a sharded index), as
    transformers' `save_pretrained` writes for `MambaModel` / `MambaForCausalLM`, or a
    mamba-ssm `MambaLMHeadModel`'s config.json with its state dict as safetensors.
    `options` are other `MambaOptions` (`scan_backend`, `dropout`); shape options must
    agree with the checkpoint. Raises `CheckpointError` / `ConfigError` naming the file
    and key attd cannot map.
    """
    from attd_core.backbones.mamba import MambaBackbone  # mamba.py imports this module

    backbone = MambaBackbone(MambaOptions(pretrained=str(path), **options))
    return PretrainedMamba(backbone, backbone.pretrained_embedding)


def load_pretrained_weights(backbone: MambaBackbone, path: str | Path) -> Tensor:
    """Load the checkpoint at `path` into `backbone`, built to its config; its embedding.

    Every backbone parameter must come from the checkpoint with its shape, and every
    checkpoint tensor must find a place: otherwise `CheckpointError` names the key.
    """
    source = read_source(path)
    weights, embedding = split_state_dict(source, read_tensors(source.weight_files))
    expected = backbone.state_dict()
    _check_keys(source, weights, expected)
    if embedding.shape != (source.vocab_rows, backbone.d_model):
        raise CheckpointError(
            f"{source.folder}: token embedding has shape {tuple(embedding.shape)}; its config "
            f"says {(source.vocab_rows, backbone.d_model)}"
        )
    backbone.load_state_dict(weights)
    return embedding.to(torch.float32)


def read_tensors(files: tuple[Path, ...]) -> dict[str, Tensor]:
    """Every tensor of the safetensors `files` by name (a name in two shards is refused)."""
    tensors: dict[str, Tensor] = {}
    for file in files:
        try:
            shard = load_file(str(file))
        except (OSError, SafetensorError) as exc:
            raise CheckpointError(f"{file}: unreadable safetensors file ({exc})") from None
        repeated = sorted(set(shard) & set(tensors))
        if repeated:
            raise CheckpointError(f"{file}: tensor {repeated[0]!r} is also in another shard")
        tensors.update(shard)
    return tensors


def split_state_dict(
    source: PretrainedSource, tensors: Mapping[str, Tensor]
) -> tuple[dict[str, Tensor], Tensor]:
    """The checkpoint's tensors under attd's backbone names, and its token embedding."""
    weights, embeddings = {}, []
    for key, tensor in tensors.items():
        name = key.removeprefix(PREFIX)
        if name in EMBEDDING_KEYS[source.layout]:
            embeddings.append(tensor)
        elif name not in IGNORED_KEYS:
            weights[name] = tensor
    if len(embeddings) != 1:
        names = " or ".join(PREFIX + key for key in EMBEDDING_KEYS[source.layout])
        found = "no" if not embeddings else "more than one"
        raise CheckpointError(f"{source.folder}: {found} token embedding ({names})")
    return weights, embeddings[0]


def _check_keys(
    source: PretrainedSource, weights: Mapping[str, Tensor], expected: Mapping[str, Tensor]
) -> None:
    where = f"{source.folder} ({source.layout} layout)"
    unknown = sorted(set(weights) - set(expected))
    if unknown:
        raise CheckpointError(
            f"{where}: tensor {unknown[0]!r} has no place in attd's Mamba backbone "
            f"({len(unknown)} such)"
        )
    missing = sorted(set(expected) - set(weights))
    if missing:
        raise CheckpointError(
            f"{where}: no tensor for {missing[0]!r} ({len(missing)} of the backbone's "
            f"{len(expected)} missing)"
        )
    for key, tensor in weights.items():
        if tensor.shape != expected[key].shape:
            raise CheckpointError(
                f"{where}: {key!r} has shape {tuple(tensor.shape)}, while its config.json "
                f"makes it {tuple(expected[key].shape)}"
            )
