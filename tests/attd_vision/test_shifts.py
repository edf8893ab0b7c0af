"""Pixel shifts: what each corruption does per severity, on which pixels, and what it refuses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attd_core import Batch, ConfigError, parse_component
from attd_vision import (
    IMAGE_SIZE_KEY,
    PIXEL_PAD_ID,
    ImageClassificationOptions,
    ImageClassificationTask,
    ImageCollator,
    PatchesOptions,
    PixelShiftOptions,
    PixelsOptions,
    _plugin,
)
from attd_vision.encoders import PatchEncoder, PixelEncoder
from attd_vision.shifts import (
    BLUR_SIGMA,
    CONTRAST_FACTOR,
    NOISE_SIGMA,
    OCCLUSION_AREA,
    Contrast,
    GaussianBlur,
    GaussianNoise,
    Occlusion,
)

testing = pytest.importorskip("attd_core.testing")

SHIFTS = {
    "gaussian-noise": GaussianNoise,
    "contrast": Contrast,
    "gaussian-blur": GaussianBlur,
    "occlusion": Occlusion,
}
RANDOM = ("gaussian-noise", "occlusion")
"""The shifts that draw from the generator (contrast and blur are deterministic)."""
SEVERITIES = range(1, 6)


@pytest.fixture(scope="module")
def pm():
    return testing.new_plugin_manager(vision=_plugin)


def build(name: str, severity: int, manager):
    return parse_component(f"{name}:{severity}", "shift", manager).create()


def shift(name: str, severity: int = 3) -> GaussianNoise:
    return SHIFTS[name](PixelShiftOptions(severity=severity))


def images(count: int, seed: int = 0, channels: int = 1, sizes=((8, 8), (6, 5))) -> list:
    """Random uint8 images, cycling through `sizes` (so batches of them are padded)."""
    rng = np.random.default_rng(seed)
    shapes = [(*sizes[i % len(sizes)], channels) for i in range(count)]
    return [rng.integers(0, 256, shape, dtype=np.uint8).squeeze(-1) for shape in shapes]


def pixel_batch(count: int = 16, seed: int = 0, sizes=((8, 8), (6, 5)), **options) -> Batch:
    """Pixel-encoded random images (of two sizes by default): tokens, or floats on request."""
    channels = 3 if options.get("color") == "rgb" else 1
    collate = ImageCollator(PixelEncoder(PixelsOptions(**options)))
    return collate(images(count, seed, channels, sizes), [i % 3 for i in range(count)])


def real_images(batch: Batch) -> list[torch.Tensor]:
    """Each sample's real pixels as an `(H, W, C)` float tensor."""
    out = []
    for row, (height, width) in enumerate(batch.aux[IMAGE_SIZE_KEY].tolist()):
        real = batch.inputs[row][batch.mask[row]].double()
        out.append(real.reshape(height, width, -1))
    return out


def mean_change(before: Batch, after: Batch) -> float:
    return float((after.inputs - before.inputs).double().abs()[before.mask].mean())


def high_frequency(batch: Batch) -> float:
    """Mean squared difference of neighbouring pixels over every image."""
    total = 0.0
    for image in real_images(batch):
        total += float(image.diff(dim=0).pow(2).mean() + image.diff(dim=1).pow(2).mean())
    return total


# -- registration ---------------------------------------------------------------------


@pytest.mark.parametrize("name", SHIFTS)
def test_shifts_are_plugins_with_a_severity_from_1_to_5(pm, name):
    spec = pm.get("shift", name)
    assert spec.config is PixelShiftOptions and spec.factory.startswith("attd_vision.shifts:")
    created = build(name, 2, pm)
    assert isinstance(created, SHIFTS[name]) and created.options.severity == 2
    keyword = parse_component(f"{name}:severity=5", "shift", pm).create()
    assert keyword.options.severity == 5
    assert parse_component(name, "shift", pm).create().options.severity == 3
    for bad in (0, 6):
        with pytest.raises(ConfigError, match="severity"):
            build(name, bad, pm)


def test_gaussian_noise_3_parses_as_a_shift_spec(pm):
    choice = parse_component("gaussian-noise:3", "shift", pm)
    assert choice.spec.name == "gaussian-noise" and choice.options.severity == 3
    assert choice.canonical == "gaussian-noise"  # 3 is the default severity
    assert parse_component("gaussian-noise:4", "shift", pm).canonical == "gaussian-noise:4"
    assert choice.create().parameter == NOISE_SIGMA[2]
    with pytest.raises(ConfigError, match="unknown option"):
        parse_component("gaussian-noise:3,sigma=0.2", "shift", pm)


def test_the_tables_grow_in_severity():
    for table in (NOISE_SIGMA, BLUR_SIGMA, OCCLUSION_AREA):
        assert len(table) == 5 and list(table) == sorted(set(table))
    assert len(CONTRAST_FACTOR) == 5 and list(CONTRAST_FACTOR) == sorted(CONTRAST_FACTOR)[::-1]
    assert 0 < CONTRAST_FACTOR[-1] and CONTRAST_FACTOR[0] < 1


# -- what every shift guarantees ------------------------------------------------------


@pytest.mark.parametrize("name", SHIFTS)
def test_integer_pixels_change_stay_in_0_255_and_padding_stays_pad(name):
    batch = pixel_batch()
    assert not bool(batch.mask.all())  # the 6x5 images are padded
    before = {key: value.clone() for key, value in vars(batch).items() if key != "aux"}
    sizes = batch.aux[IMAGE_SIZE_KEY].clone()
    shifted = shift(name).apply(batch, torch.Generator().manual_seed(0))
    assert shifted.inputs.dtype == torch.long and shifted.inputs.shape == batch.inputs.shape
    real = shifted.inputs[batch.mask]
    assert int(real.min()) >= 0 and int(real.max()) <= 255
    assert (shifted.inputs[~batch.mask] == PIXEL_PAD_ID).all()
    changed = (shifted.inputs != batch.inputs) & batch.mask
    assert float(changed.sum() / batch.mask.sum()) > 0.05
    for row in range(len(batch)):
        assert bool(changed[row].any()), f"{name} left sample {row} unchanged"
    assert torch.equal(shifted.mask, batch.mask) and torch.equal(shifted.labels, batch.labels)
    assert torch.equal(shifted.aux[IMAGE_SIZE_KEY], sizes)
    for key, value in before.items():  # the input batch is left alone
        assert torch.equal(getattr(batch, key), value), key
    assert torch.equal(batch.aux[IMAGE_SIZE_KEY], sizes)


@pytest.mark.parametrize("name", SHIFTS)
def test_a_higher_severity_changes_the_pixels_more(name):
    batch = pixel_batch(count=32)
    changes = [
        mean_change(batch, shift(name, s).apply(batch, torch.Generator().manual_seed(0)))
        for s in SEVERITIES
    ]
    assert changes == sorted(changes) and len(set(changes)) == 5, changes


@pytest.mark.parametrize("name", SHIFTS)
def test_same_seed_same_shift(name):
    batch = pixel_batch()
    first = shift(name).apply(batch, torch.Generator().manual_seed(1))
    again = shift(name).apply(batch, torch.Generator().manual_seed(1))
    other = shift(name).apply(batch, torch.Generator().manual_seed(2))
    assert torch.equal(first.inputs, again.inputs)
    assert torch.equal(first.inputs, other.inputs) == (name not in RANDOM)


# -- each shift -----------------------------------------------------------------------


@pytest.mark.parametrize("severity", [1, 5])
def test_noise_has_the_tabled_std_of_the_0_255_range(severity):
    gray = [np.full((16, 16), 128, np.uint8)] * 8
    batch = ImageCollator(PixelEncoder())(gray)
    shifted = shift("gaussian-noise", severity).apply(batch, torch.Generator().manual_seed(0))
    delta = (shifted.inputs - batch.inputs).double()
    sigma = NOISE_SIGMA[severity - 1] * 255
    if severity == 1:  # no clipping: the std is the tabled one
        assert abs(float(delta.std()) / sigma - 1) < 0.05
    else:  # clipped at 0 and 255
        assert float(delta.std()) < sigma and float(delta.std()) > 0.8 * sigma
        assert int(shifted.inputs.min()) == 0 and int(shifted.inputs.max()) == 255


def test_contrast_blends_each_image_toward_its_mean():
    batch = pixel_batch(count=4, sizes=((5, 7),))
    shifted = shift("contrast", 2).apply(batch, torch.Generator())
    factor = CONTRAST_FACTOR[1]
    for image, out in zip(real_images(batch), real_images(shifted), strict=True):
        mean = image.mean()
        expected = (mean + factor * (image - mean)).round()
        assert torch.equal(out, expected)


def test_blur_removes_more_high_frequency_energy_at_higher_severity():
    batch = pixel_batch(count=16, sizes=((8, 8), (12, 10)))
    energies = [high_frequency(batch)]
    for severity in SEVERITIES:
        energies.append(high_frequency(shift("gaussian-blur", severity).apply(batch, None)))
    assert energies == sorted(energies, reverse=True) and len(set(energies)) == 6, energies
    assert energies[-1] < 0.1 * energies[0]


def test_blur_keeps_a_flat_image_and_the_mean_roughly():
    flat = ImageCollator(PixelEncoder())([np.full((6, 9), 77, np.uint8)])
    assert torch.equal(shift("gaussian-blur", 5).apply(flat, None).inputs, flat.inputs)
    batch = pixel_batch(count=4, sizes=((16, 16),))
    blurred = shift("gaussian-blur", 2).apply(batch, None)
    for image, out in zip(real_images(batch), real_images(blurred), strict=True):
        assert abs(float(out.mean() - image.mean())) < 5


@pytest.mark.parametrize("severity", SEVERITIES)
def test_occlusion_covers_one_mean_filled_square_that_grows_with_severity(severity):
    rng = np.random.default_rng(severity)
    extremes = [rng.choice([0, 255], size=(16, 12)).astype(np.uint8) for _ in range(8)]
    batch = ImageCollator(PixelEncoder())(extremes)  # no pixel equals an image's mean
    occlusion = shift("occlusion", severity)
    side = occlusion.side(16, 12)
    assert side == round((OCCLUSION_AREA[severity - 1] * 16 * 12) ** 0.5)
    shifted = occlusion.apply(batch, torch.Generator().manual_seed(0))
    corners = set()
    for image, out in zip(real_images(batch), real_images(shifted), strict=True):
        changed = (out != image)[..., 0]
        rows, cols = changed.nonzero(as_tuple=True)
        assert int(changed.sum()) == side * side  # one filled square...
        assert int(rows.max() - rows.min()) + 1 == side == int(cols.max() - cols.min()) + 1
        assert (out[changed] == image.mean().round()).all()  # ...of the image's mean
        corners.add((int(rows.min()), int(cols.min())))
    assert len(corners) > 1  # at random positions


def test_occlusion_sides_grow_strictly_on_small_images():
    for height, width in ((8, 8), (32, 32), (6, 5)):
        sides = [shift("occlusion", s).side(height, width) for s in SEVERITIES]
        assert sides == sorted(sides) and 1 <= sides[0] and sides[-1] <= min(height, width)
    assert [shift("occlusion", s).side(8, 8) for s in SEVERITIES] == [2, 3, 4, 5, 6]


# -- floats and RGB -------------------------------------------------------------------


@pytest.mark.parametrize("name", SHIFTS)
def test_float_pixels_stay_in_each_images_range_and_padding_stays_zero(name):
    batch = pixel_batch(dtype="float", mean=0.2, std=0.3)
    assert batch.inputs.shape[-1] == 1 and not bool(batch.mask.all())
    before = batch.inputs.clone()
    shifted = shift(name, 4).apply(batch, torch.Generator().manual_seed(0))
    assert shifted.inputs.dtype == torch.float32 and shifted.inputs.shape == batch.inputs.shape
    assert (shifted.inputs[~batch.mask] == 0.0).all() and torch.equal(batch.inputs, before)
    for image, out in zip(real_images(batch), real_images(shifted), strict=True):
        assert float(out.min()) >= float(image.min()) - 1e-5
        assert float(out.max()) <= float(image.max()) + 1e-5
        assert not torch.allclose(out, image)


def test_float_noise_is_scaled_by_each_images_value_range():
    gray = [np.full((16, 16), 128, np.uint8)] * 4
    gray = [image.copy() for image in gray]
    for image in gray:
        image[0, 0], image[0, 1] = 0, 255  # the range: all of 0..255
    for std in (0.5, 0.05):
        encoder = PixelEncoder(PixelsOptions(dtype="float", mean=0.5, std=std))
        batch = ImageCollator(encoder)(gray)
        shifted = shift("gaussian-noise", 1).apply(batch, torch.Generator().manual_seed(0))
        delta = (shifted.inputs - batch.inputs)[:, 2:]  # the mid-gray pixels
        value_range = 1 / std  # (255 / 255 - 0.5) / std - (0 - 0.5) / std
        assert abs(float(delta.std()) / (NOISE_SIGMA[0] * value_range) - 1) < 0.05


def test_float_and_integer_pixels_shift_alike():
    tokens, floats = pixel_batch(), pixel_batch(dtype="float", mean=0.0, std=1 / 255)
    for name in ("contrast", "gaussian-blur"):
        as_int = shift(name).apply(tokens, None).inputs.double()
        as_float = shift(name).apply(floats, None).inputs[..., 0].double()
        assert float((as_int - as_float).abs()[tokens.mask].max()) <= 0.5 + 1e-3


@pytest.mark.parametrize("dtype", ["int", "float"])
def test_rgb_channels_are_shifted_apart(dtype):
    rng = np.random.default_rng(0)
    rgb = []
    for height, width in ((8, 8), (5, 6), (8, 8)):
        image = np.empty((height, width, 3), np.uint8)
        image[..., 0], image[..., 1] = 10, 200  # flat red and green, noisy blue
        image[..., 2] = rng.integers(0, 256, (height, width))
        rgb.append(image)
    batch = ImageCollator(PixelEncoder(PixelsOptions(color="rgb", dtype=dtype)))(rgb)
    assert batch.aux[IMAGE_SIZE_KEY].tolist() == [[8, 8], [5, 6], [8, 8]]
    if dtype == "int":
        assert batch.inputs.shape == (3, 8 * 8 * 3) and (batch.inputs[1, 90:] == 256).all()
    for name in ("contrast", "gaussian-blur"):
        shifted = shift(name).apply(batch, None)
        for image, out in zip(real_images(batch), real_images(shifted), strict=True):
            assert torch.allclose(out[..., :2], image[..., :2], atol=1e-5)  # flat: unchanged
            assert not torch.allclose(out[..., 2], image[..., 2])
    noisy = shift("gaussian-noise", 5).apply(batch, torch.Generator().manual_seed(0))
    if dtype == "int":
        assert (noisy.inputs[1, 90:] == 256).all()
        assert int(noisy.inputs[batch.mask].max()) <= 255


# -- refusals -------------------------------------------------------------------------


@pytest.mark.parametrize("name", SHIFTS)
def test_a_batch_without_image_size_is_refused_naming_the_pixels_encoder(name):
    patches = ImageCollator(PatchEncoder(PatchesOptions(patch_size=2)))(images(2, sizes=((4, 4),)))
    assert IMAGE_SIZE_KEY not in patches.aux
    plain = Batch(inputs=torch.zeros(2, 16, dtype=torch.long), mask=torch.ones(2, 16).bool())
    for batch in (patches, plain):
        with pytest.raises(ConfigError, match=f"shift '{name}'.*image_size.*`pixels` encoder"):
            shift(name).apply(batch, torch.Generator())


def test_a_geometry_that_does_not_fit_the_tokens_is_refused():
    batch = pixel_batch(count=2, sizes=((4, 4),))
    wrong = Batch(batch.inputs, batch.mask, aux={IMAGE_SIZE_KEY: torch.tensor([[4, 4], [3, 3]])})
    with pytest.raises(ConfigError, match="sample 1 has 16 real tokens.*3x3"):
        shift("contrast").apply(wrong, torch.Generator())
    flat = Batch(batch.inputs, batch.mask, aux={IMAGE_SIZE_KEY: torch.tensor([4, 4])})
    with pytest.raises(ConfigError, match=r"\(2, 2\) tensor"):
        shift("contrast").apply(flat, torch.Generator())
    floats = pixel_batch(count=2, sizes=((4, 4),), dtype="float")
    halved = Batch(floats.inputs, floats.mask, aux={IMAGE_SIZE_KEY: torch.tensor([[2, 4]] * 2)})
    with pytest.raises(ConfigError, match="exactly its 2x4 pixels"):
        shift("contrast").apply(halved, torch.Generator())
    floats_2d = Batch(floats.inputs[..., 0], floats.mask, aux=floats.aux)
    with pytest.raises(ConfigError, match="integer pixel tokens"):
        shift("contrast").apply(floats_2d, torch.Generator())


# -- the image-classification task ----------------------------------------------------


def test_digits_batches_carry_their_size_and_take_a_shift_through_evaluation(pm):
    from attd_core.runtime.evaluator import evaluate

    task = ImageClassificationTask(ImageClassificationOptions(limit_test=24))
    batch = testing.task_batch(task, "test", n=24)
    assert batch.aux[IMAGE_SIZE_KEY].tolist() == [[8, 8]] * 24
    assert batch.select(torch.tensor([3, 0])).aux[IMAGE_SIZE_KEY].shape == (2, 2)
    noise = build("gaussian-noise", 3, pm)
    shifted = noise.apply(batch, torch.Generator().manual_seed(0))
    # float pixels by default, in [-1, 1]: noise moves them by more than 10 grey levels
    assert batch.inputs.is_floating_point() and mean_change(batch, shifted) > 10 * 2 / 255
    assert float(shifted.inputs.min()) >= -1 and float(shifted.inputs.max()) <= 1

    bound = testing.tiny_bound_model(task)
    strategy, objective = pm.create("strategy", "none"), pm.create("objective", "entropy")
    results = {}
    for label, applied in (("clean", None), ("shifted", noise)):
        results[label] = evaluate(
            bound,
            strategy,
            objective,
            testing.first_examples(task, "test", 24),
            tta="none",
            split="test",
            batch_size=8,
            device=torch.device("cpu"),
            shift=applied,
        )
    assert results["clean"].n == results["shifted"].n == 24
    assert results["clean"].metrics != results["shifted"].metrics
