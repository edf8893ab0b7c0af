"""Encoded images to one `Batch`.

Images of one size give sequences of one length: they are stacked with no padding and
an all-True mask (the mask is always a tensor, so every consumer sees real-token
positions the same way). Sequences of different lengths are right-padded with the
encoder's pad value (the pad id for integer tokens, 0.0 for floats), masked False.

When every item's metadata holds `image_size` (the `pixels` encoder: one token per
pixel), the batch carries `aux["image_size"]`, a `(B, 2)` long tensor of each sample's
`(height, width)`: what the pixel shifts need to see a sequence as an image.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from attd_core import Batch, Encoder
from attd_vision.options import IMAGE_SIZE_KEY


def collate_encoded(
    encoded: Sequence[tuple[Tensor, Tensor | None, dict[str, Any]]],
    labels: Sequence[int] | None = None,
    *,
    pad_value: int | float = 0,
) -> Batch:
    """Stack (or right-pad) `encode` outputs: `(B, L)` tokens or `(B, L, C)` floats.

    If every item's metadata has `image_size` = `(height, width)`, which an encoder
    gives only when each token is one pixel (integer RGB: one channel value of a pixel),
    `aux[IMAGE_SIZE_KEY]` holds them as a `(B, 2)` long tensor.
    """
    if not encoded:
        raise ValueError("cannot collate an empty batch")
    tokens = [item[0] for item in encoded]
    masks = [
        item[1] if item[1] is not None else torch.ones(item[0].shape[0], dtype=torch.bool)
        for item in encoded
    ]
    lengths = [seq.shape[0] for seq in tokens]
    if len(set(lengths)) == 1 and len({seq.shape[1:] for seq in tokens}) == 1:
        inputs, mask = torch.stack(tokens), torch.stack(masks).bool()
    else:
        longest = max(lengths)
        inputs = tokens[0].new_full((len(tokens), longest, *tokens[0].shape[1:]), pad_value)
        mask = torch.zeros(len(tokens), longest, dtype=torch.bool)
        for row, (seq, seq_mask) in enumerate(zip(tokens, masks, strict=True)):
            inputs[row, : seq.shape[0]] = seq
            mask[row, : seq.shape[0]] = seq_mask.bool()
    target = None if labels is None else torch.as_tensor(list(labels), dtype=torch.long)
    infos = [item[2] if len(item) > 2 and item[2] else {} for item in encoded]
    sizes = [info.get(IMAGE_SIZE_KEY) for info in infos]
    aux: dict[str, Any] = {}
    if all(size is not None for size in sizes):
        aux[IMAGE_SIZE_KEY] = torch.tensor([tuple(size) for size in sizes], dtype=torch.long)
        if aux[IMAGE_SIZE_KEY].shape != (len(tokens), 2):
            raise ValueError(f"{IMAGE_SIZE_KEY} must be (height, width) per image: {sizes}")
    return Batch(inputs=inputs, mask=mask, labels=target, aux=aux)


class ImageCollator:
    """Encodes raw images with `encoder` and collates them (with labels) into a `Batch`."""

    def __init__(self, encoder: Encoder) -> None:
        self.encoder = encoder
        self.pad_value = getattr(encoder, "pad_value", 0)

    def __call__(self, images: Sequence[Any], labels: Sequence[int] | None = None) -> Batch:
        encoded = [self.encoder.encode(image) for image in images]
        return collate_encoded(encoded, labels, pad_value=self.pad_value)
