"""Length-grouped batching: every example exactly once, similar lengths together."""

from __future__ import annotations

import torch

from attd_core.runtime.batching import GROUP_FACTOR, LengthGroupedBatches, example_lengths


def test_sorted_batches_cover_everything_in_length_order():
    lengths = [5, 1, 9, 3, 7, 2, 8]
    batches = list(LengthGroupedBatches(lengths, batch_size=3))
    assert batches == [[2, 6, 4], [0, 3, 5], [1]]
    assert len(LengthGroupedBatches(lengths, batch_size=3)) == 3


def test_shuffled_batches_cover_everything_once_and_group_lengths():
    lengths = torch.randint(
        1, 1000, (4 * GROUP_FACTOR * 8,), generator=torch.Generator().manual_seed(0)
    )
    sampler = LengthGroupedBatches(lengths.tolist(), 8, torch.Generator().manual_seed(1))
    batches = list(sampler)
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
    spread = [int(lengths[b].max() - lengths[b].min()) for b in batches]
    random_spread = [
        int(lengths[b].max() - lengths[b].min()) for b in torch.arange(len(lengths)).split(8)
    ]
    assert sum(spread) < sum(random_spread) / 10


def test_shuffled_batches_change_between_passes_and_repeat_by_seed():
    lengths = list(range(100))
    first = list(LengthGroupedBatches(lengths, 4, torch.Generator().manual_seed(3)))
    again = list(LengthGroupedBatches(lengths, 4, torch.Generator().manual_seed(3)))
    sampler = LengthGroupedBatches(lengths, 4, torch.Generator().manual_seed(3))
    assert first == again
    assert list(sampler) != list(sampler)


def test_lengths_come_from_the_task_when_it_can_measure_them():
    class Measuring:
        def sequence_length(self, example):
            return len(example)

    assert example_lengths(Measuring(), ["ab", "c"]) == [2, 1]
    assert example_lengths(object(), ["ab"]) is None
