"""Collation of token id lists into one right-padded `Batch`.

The mask (True on real tokens) is what keeps padding out of pooling, inner losses and
the scan; `aux["lengths"]` saves recounting it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from attd_core import Batch


class TextCollator:
    """`(B, L)` long ids padded with `pad_id`, a `(B, L)` bool mask, lengths in `aux`.

    `L` is the longest sequence (at least 1), rounded up to `pad_to_multiple_of` if set.
    """

    def __init__(self, pad_id: int = 0, pad_to_multiple_of: int | None = None) -> None:
        self.pad_id = pad_id
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(
        self, sequences: Sequence[Sequence[int]], labels: Sequence[Any] | None = None
    ) -> Batch:
        lengths = torch.tensor([len(seq) for seq in sequences], dtype=torch.long)
        width = max(int(lengths.max()) if len(sequences) else 0, 1)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        inputs = torch.full((len(sequences), width), self.pad_id, dtype=torch.long)
        for row, seq in enumerate(sequences):
            if len(seq):
                inputs[row, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
        mask = torch.arange(width).unsqueeze(0) < lengths.unsqueeze(1)
        target = None if labels is None else torch.as_tensor(labels, dtype=torch.long)
        return Batch(inputs=inputs, mask=mask, labels=target, aux={"lengths": lengths})
