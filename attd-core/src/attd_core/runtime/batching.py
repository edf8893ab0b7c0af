"""Batches of similar lengths: padding to the longest example is pure waste for a scan.

Training draws shuffled mega-batches (`GROUP_FACTOR` batches' worth), sorts each by
length and cuts it into batches, then shuffles the batch order: batches stay random
while their members have similar lengths. Evaluation just batches in length order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

GROUP_FACTOR = 50


class LengthGroupedBatches:
    """A batch sampler; with a generator it reshuffles on every pass, without it is sorted."""

    def __init__(
        self, lengths: Sequence[int], batch_size: int, generator: torch.Generator | None = None
    ) -> None:
        self.lengths = torch.as_tensor(list(lengths))
        self.batch_size = batch_size
        self.generator = generator

    def __len__(self) -> int:
        return -(-len(self.lengths) // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        if self.generator is None:
            order = torch.argsort(self.lengths, descending=True, stable=True)
            yield from (chunk.tolist() for chunk in order.split(self.batch_size))
            return
        order = torch.randperm(len(self.lengths), generator=self.generator)
        batches = []
        for group in order.split(self.batch_size * GROUP_FACTOR):
            by_length = group[torch.argsort(self.lengths[group], descending=True, stable=True)]
            batches += by_length.split(self.batch_size)
        for index in torch.randperm(len(batches), generator=self.generator).tolist():
            yield batches[index].tolist()


def example_lengths(task: Any, examples: Sequence[Any]) -> list[int] | None:
    """Each example's length, if the task can tell (`task.sequence_length(example)`)."""
    measure: Callable[[Any], int] | None = getattr(task, "sequence_length", None)
    if measure is None:
        return None
    return [measure(examples[i]) for i in range(len(examples))]
