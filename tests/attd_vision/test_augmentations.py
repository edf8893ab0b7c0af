"""random-crop and flip (the image task's augmentations) and memo's views on images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attd_core import ConfigError, parse_component, sample_views
from attd_vision import (
    IMAGE_SIZE_KEY,
    PIXEL_PAD_ID,
    FlipOptions,
    ImageClassificationOptions,
    ImageClassificationTask,
    ImageCollator,
    PixelShiftOptions,
    PixelsOptions,
    _plugin,
)
from attd_vision.encoders import PixelEncoder
from attd_vision.shifts import CROP_SHIFT, Flip, RandomCrop
from attd_vision.task import PIXEL_AUGMENTATIONS

testing = pytest.importorskip("attd_core.testing")


@pytest.fixture(scope="module")
def pm():
    return testing.new_plugin_manager(vision=_plugin)


def rgb_batch(dtype: str = "int", sizes=((8, 8), (6, 5), (8, 8))):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for size in sizes]
    return ImageCollator(PixelEncoder(PixelsOptions(color="rgb", dtype=dtype)))(images)


def real_images(batch) -> list[torch.Tensor]:
    out = []
    for row, (height, width) in enumerate(batch.aux[IMAGE_SIZE_KEY].tolist()):
        out.append(batch.inputs[row][batch.mask[row]].reshape(height, width, -1))
    return out


def translate(image: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """`image` moved by (dy, dx), edge pixels repeated: the definition, written plainly."""
    height, width, _ = image.shape
    out = torch.empty_like(image)
    for y in range(height):
        for x in range(width):
            out[y, x] = image[min(max(y - dy, 0), height - 1), min(max(x - dx, 0), width - 1)]
    return out


def test_the_augmentations_are_shift_plugins(pm):
    crop = parse_component("random-crop:2", "shift", pm).create()
    assert isinstance(crop, RandomCrop) and crop.parameter == CROP_SHIFT[1]
    flip = parse_component("flip", "shift", pm).create()
    assert isinstance(flip, Flip) and flip.options.probability == 0.5
    assert parse_component("flip:0.25", "shift", pm).create().options.probability == 0.25
    with pytest.raises(ConfigError, match="probability"):
        parse_component("flip:2", "shift", pm)
    assert list(CROP_SHIFT) == sorted(set(CROP_SHIFT)) and len(CROP_SHIFT) == 5


@pytest.mark.parametrize("dtype", ["int", "float"])
@pytest.mark.parametrize("severity", [1, 3, 5])
def test_random_crop_translates_each_image_within_its_reach(dtype, severity):
    batch = rgb_batch(dtype)
    crop = RandomCrop(PixelShiftOptions(severity=severity))
    shifted = crop.apply(batch, torch.Generator().manual_seed(severity))
    assert torch.equal(shifted.mask, batch.mask) and shifted.inputs.dtype == batch.inputs.dtype
    if dtype == "int":
        assert (shifted.inputs[~batch.mask] == PIXEL_PAD_ID).all()
    for image, out in zip(real_images(batch), real_images(shifted), strict=True):
        height, width, _ = image.shape
        reach_y, reach_x = crop.reach(height), crop.reach(width)
        assert 1 <= reach_y < height and 1 <= reach_x < width
        matches = [
            (dy, dx)
            for dy in range(-reach_y, reach_y + 1)
            for dx in range(-reach_x, reach_x + 1)
            if torch.equal(translate(image, dy, dx), out)
        ]
        assert matches, "not a translation within reach"


def test_random_crop_reaches_further_at_higher_severity():
    reaches = [RandomCrop(PixelShiftOptions(severity=s)).reach(32) for s in range(1, 6)]
    assert reaches == sorted(reaches) and reaches[1] == 4  # CIFAR's 4 pixels of 32
    assert RandomCrop(PixelShiftOptions(severity=1)).reach(8) == 1


@pytest.mark.parametrize("dtype", ["int", "float"])
def test_flip_mirrors_every_image_or_none_by_its_probability(dtype):
    batch = rgb_batch(dtype)
    always = Flip(FlipOptions(probability=1.0)).apply(batch, torch.Generator().manual_seed(0))
    never = Flip(FlipOptions(probability=0.0)).apply(batch, torch.Generator().manual_seed(0))
    assert torch.equal(never.inputs, batch.inputs) and torch.equal(always.mask, batch.mask)
    for image, out in zip(real_images(batch), real_images(always), strict=True):
        assert torch.equal(out, image.flip(1))  # columns reversed, each pixel's RGB kept
    many = rgb_batch(sizes=((4, 4),) * 64)
    halves = Flip(FlipOptions()).apply(many, torch.Generator())
    pairs = zip(real_images(many), real_images(halves), strict=True)
    flipped = sum(not torch.equal(out, image) for image, out in pairs)
    assert 16 < flipped < 48


def test_the_image_task_offers_crop_and_noise_for_pixels_only():
    assert ImageClassificationTask().augmentations == PIXEL_AUGMENTATIONS
    patches = ImageClassificationOptions(encoder="patches")
    assert ImageClassificationTask(patches).augmentations == ()


def test_memo_views_of_an_image_depend_on_that_image_alone(pm):
    """Views of float RGB images of two sizes: each view keeps its image's geometry and
    mask, and a sample's views are the same in any batch."""
    batch = rgb_batch("float")
    shifts = [parse_component(text, "shift", pm).create() for text in PIXEL_AUGMENTATIONS]
    views = sample_views(batch, shifts, 3, 0, 0)
    assert views.aux[IMAGE_SIZE_KEY].tolist() == [[8, 8]] * 3 + [[6, 5]] * 3 + [[8, 8]] * 3
    assert views.mask.sum(dim=1).tolist() == [64] * 3 + [30] * 3 + [64] * 3
    alone = sample_views(batch.select(torch.tensor([1])), shifts, 3, 0, 0)
    assert torch.equal(alone.inputs, views.inputs[3:6, :30])
    assert not torch.equal(views.inputs[0], views.inputs[1])
