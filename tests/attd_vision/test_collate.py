"""Encoded images to a Batch: stacked when sizes agree, right-padded and masked otherwise."""

from __future__ import annotations

import numpy as np
import torch

from attd_core import Batch
from attd_vision import (
    IMAGE_SIZE_KEY,
    ImageCollator,
    PatchesOptions,
    PixelsOptions,
    collate_encoded,
)
from attd_vision.encoders import PatchEncoder, PixelEncoder


def test_images_of_one_size_stack_with_an_all_true_mask():
    collate = ImageCollator(PixelEncoder())
    images = [np.full((2, 2), value, dtype=np.uint8) for value in (0, 7, 255)]
    batch = collate(images, [2, 0, 1])
    assert isinstance(batch, Batch) and batch.inputs.shape == (3, 4)
    assert batch.inputs.dtype == torch.long and batch.inputs[1].tolist() == [7] * 4
    assert batch.mask.dtype == torch.bool and bool(batch.mask.all())
    assert batch.labels.tolist() == [2, 0, 1] and batch.labels.dtype == torch.long


def test_float_patches_stack_to_batch_length_channels():
    collate = ImageCollator(PatchEncoder(PatchesOptions(patch_size=2, color="rgb")))
    batch = collate([np.zeros((4, 4, 3), np.uint8)] * 2)
    assert batch.inputs.shape == (2, 4, 12) and batch.inputs.is_floating_point()
    assert batch.labels is None and batch.mask.shape == (2, 4)


def test_images_of_different_sizes_are_padded_with_the_pad_token():
    collate = ImageCollator(PixelEncoder())
    batch = collate([np.ones((1, 2), np.uint8), np.ones((2, 2), np.uint8)], [0, 1])
    assert batch.inputs.tolist() == [[1, 1, 256, 256], [1, 1, 1, 1]]
    assert batch.mask.tolist() == [[True, True, False, False], [True] * 4]


def test_float_sequences_are_padded_with_zeros():
    encoder = PixelEncoder(PixelsOptions(dtype="float", mean=0.0, std=1.0))
    encoded = [encoder.encode(np.full((1, 1), 255, np.uint8)), encoder.encode(np.zeros((1, 3)))]
    batch = collate_encoded(encoded, pad_value=0.0)
    assert batch.inputs.shape == (2, 3, 1)
    assert batch.inputs[0, :, 0].tolist() == [1.0, 0.0, 0.0]
    assert batch.mask.tolist() == [[True, False, False], [True] * 3]


def test_pixel_batches_carry_each_images_height_and_width():
    collate = ImageCollator(PixelEncoder(PixelsOptions(color="rgb")))
    batch = collate([np.ones((1, 2, 3), np.uint8), np.ones((3, 2, 3), np.uint8)], [0, 1])
    sizes = batch.aux[IMAGE_SIZE_KEY]
    assert IMAGE_SIZE_KEY == "image_size" and sizes.dtype == torch.long
    assert sizes.tolist() == [[1, 2], [3, 2]] and batch.inputs.shape == (2, 18)
    assert batch.select(torch.tensor([1])).aux[IMAGE_SIZE_KEY].tolist() == [[3, 2]]
    floats = ImageCollator(PixelEncoder(PixelsOptions(dtype="float")))([np.ones((2, 5), np.uint8)])
    assert floats.aux[IMAGE_SIZE_KEY].tolist() == [[2, 5]]


def test_patch_batches_and_plain_encodings_carry_no_image_size():
    collate = ImageCollator(PatchEncoder(PatchesOptions(patch_size=2)))
    assert collate([np.zeros((4, 4), np.uint8)]).aux == {}
    tokens = torch.arange(4)
    assert collate_encoded([(tokens, None, {})]).aux == {}
    mixed = [(tokens, None, {IMAGE_SIZE_KEY: (2, 2)}), (tokens, None, {})]
    assert collate_encoded(mixed).aux == {}
    given = collate_encoded([(tokens, None, {IMAGE_SIZE_KEY: (2, 2)})] * 3)
    assert given.aux[IMAGE_SIZE_KEY].tolist() == [[2, 2]] * 3
