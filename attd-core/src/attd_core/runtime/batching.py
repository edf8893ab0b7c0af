"""Batches of similar lengths: padding to the longest example is pure waste for a scan.

Training draws shuffled mega-batches (`GROUP_FACTOR` batches' worth), sorts each by
length and cuts it into batches, then shuffles the batch order: batches stay random
while their members have similar lengths. Evaluation just batches in length order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler

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


def task_loader(
    task: Any,
    examples: Sequence[Any],
    batch_size: int,
    *,
    generator: torch.Generator | None = None,
    group_by_length: bool = True,
    shard: tuple[int, int] = (0, 1),
) -> DataLoader:
    """`examples` in batches collated by the task: shuffled by `generator` (training) or in
    order without one (evaluation), of similar lengths when the task can measure them.

    `shard=(rank, world)` gives this process its share of every batch (see
    `ShardedBatches`); every process must draw from a generator in the same state.
    """
    lengths = example_lengths(task, examples) if group_by_length and len(examples) else None
    batches: Iterable[list[int]]
    if lengths is not None:
        batches = LengthGroupedBatches(lengths, batch_size, generator)
    else:
        order = SequentialSampler(examples) if generator is None else None
        order = order or RandomSampler(examples, generator=generator)
        batches = BatchSampler(order, batch_size, drop_last=False)
    rank, world = shard
    if world > 1:
        batches = ShardedBatches(batches, rank, world)
    # Each pass also draws a worker seed from the loader's generator (the global RNG when
    # it has none): a private one keeps passes from moving the global RNG, which a
    # resumed run restores mid-epoch.
    private = generator if generator is not None else torch.Generator()
    return DataLoader(
        examples, batch_sampler=batches, collate_fn=task.preprocess, generator=private
    )


class ShardedBatches:
    """One process's share of each batch: indices `rank`, `rank + world`, ...

    Processes that split every batch this way and weigh their gradients by their share
    take the step one process would take on the whole batch. A share that would be empty
    (a last batch smaller than `world`) repeats the batch's first index, so that every
    process still takes part in each step; `real` then says False, for the trainer to
    weigh it by zero. (The loader reads the sampler in step with its batches: it runs in
    the main process.)
    """

    def __init__(self, batches: Iterable[list[int]], rank: int, world: int) -> None:
        self.batches, self.rank, self.world = batches, rank, world
        self.real = True

    def __len__(self) -> int:
        return len(self.batches)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.batches:
            share = batch[self.rank :: self.world]
            self.real = bool(share)
            yield share or batch[:1]
