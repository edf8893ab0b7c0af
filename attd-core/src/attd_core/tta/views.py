"""Augmented views of each sample, drawn from that sample alone.

A shift's `apply` draws from one generator across a whole batch, so the corruption of a
sample would depend on its batch, its position and its padding. Objectives that forward
augmented copies (MEMO) need each sample's loss to depend on the sample only, and the
same views at every inner step (the engine compares losses across steps): here each
sample's real tokens are cut out on their own, and each view is made with a generator
seeded from (seed, view index, a hash of the sample's real inputs).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch
from torch import Tensor

from attd_core.interfaces import Batch, Shift


def sample_views(
    batch: Batch, shifts: Sequence[Shift], views: int, seed: int, fill_id: int
) -> Batch:
    """The `(B * views)` batch of augmented views, sample-major (rows `i * views` to
    `i * views + views - 1` are sample i's), right-padded with `fill_id` (0.0 for float
    inputs), without labels.

    Each view applies `shifts` in order to the sample's real tokens, all drawing from the
    view's own generator. Tensors in `aux` are taken per sample as they are (image
    sizes, a second tower), so they must not be per position of `inputs`.
    """
    rows = []
    for index in range(len(batch)):
        sample = _alone(batch, index)
        digest = _content_digest(sample.inputs)
        for view in range(views):
            generator = torch.Generator().manual_seed(_view_seed(seed, view, digest))
            augmented = sample
            for shift in shifts:
                augmented = shift.apply(augmented, generator)
            rows.append(augmented)
    return _stack(rows, fill_id).to(batch.inputs.device)


def _alone(batch: Batch, index: int) -> Batch:
    """Sample `index` as a batch of one on the CPU: its real tokens only, all marked real."""
    one = batch.select(torch.tensor([index], device=batch.inputs.device)).to("cpu")
    inputs = one.inputs if one.mask is None else one.inputs[:, one.mask[0].bool()]
    return Batch(inputs=inputs, mask=torch.ones(inputs.shape[:2], dtype=torch.bool), aux=one.aux)


def _content_digest(inputs: Tensor) -> bytes:
    """A digest of a sample's real inputs: their dtype, shape and bytes."""
    raw = inputs.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
    header = f"{inputs.dtype}:{tuple(inputs.shape)}:".encode()
    return hashlib.blake2b(header + raw, digest_size=16).digest()


def _view_seed(seed: int, view: int, digest: bytes) -> int:
    """A 63-bit generator seed from the objective's seed, the view and the sample."""
    mixed = hashlib.blake2b(f"{seed}:{view}:".encode() + digest, digest_size=8).digest()
    return int.from_bytes(mixed, "little") >> 1


def _stack(rows: list[Batch], fill_id: int) -> Batch:
    """Right-pad batches of one into one batch; `aux` tensors are concatenated."""
    first = rows[0]
    length = max(row.inputs.shape[1] for row in rows)
    fill = 0.0 if first.inputs.is_floating_point() else fill_id
    shape = (len(rows), length, *first.inputs.shape[2:])
    inputs = torch.full(shape, fill, dtype=first.inputs.dtype)
    mask = torch.zeros((len(rows), length), dtype=torch.bool)
    for i, row in enumerate(rows):
        width = row.inputs.shape[1]
        inputs[i, :width] = row.inputs[0]
        mask[i, :width] = True if row.mask is None else row.mask[0].bool()
    aux = {
        key: torch.cat([row.aux[key] for row in rows]) if isinstance(value, Tensor) else value
        for key, value in first.aux.items()
    }
    return Batch(inputs=inputs, mask=mask, aux=aux)
