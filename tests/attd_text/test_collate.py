"""The text collator: right padding, the mask, lengths in aux."""

from __future__ import annotations

import torch

from attd_text.collate import TextCollator


def test_pads_right_and_masks_real_tokens():
    batch = TextCollator(pad_id=7)([[1, 2, 3], [4], []], labels=[0, 1, 1])
    assert batch.inputs.tolist() == [[1, 2, 3], [4, 7, 7], [7, 7, 7]]
    assert batch.mask.tolist() == [[True] * 3, [True, False, False], [False] * 3]
    assert batch.inputs.dtype == torch.long and batch.mask.dtype == torch.bool
    assert batch.labels.tolist() == [0, 1, 1]
    assert batch.aux["lengths"].tolist() == [3, 1, 0]


def test_all_empty_sequences_still_give_one_column_and_no_labels():
    batch = TextCollator()([[], []])
    assert batch.inputs.shape == (2, 1) and not batch.mask.any()
    assert batch.labels is None


def test_pad_to_multiple_of_rounds_the_width_up():
    batch = TextCollator(pad_to_multiple_of=8)([[1] * 9, [2]])
    assert batch.inputs.shape == (2, 16)
    assert batch.mask.sum(dim=1).tolist() == [9, 1]


def test_lengths_follow_batch_select():
    batch = TextCollator()([[1, 2], [3], [4, 5, 6]])
    picked = batch.select(torch.tensor([2, 0]))
    assert picked.aux["lengths"].tolist() == [3, 2]
    assert picked.mask.sum(dim=1).tolist() == [3, 2]
