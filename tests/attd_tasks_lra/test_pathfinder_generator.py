"""Pathfinder generator and official-data reader, checked by measurements written here.

Nothing below reuses the generator's internals to compute an expectation: markers, lit
pixels and connectivity are measured on the uint8 images alone.
"""

from __future__ import annotations

import math
import os
from collections import deque
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from attd_tasks_lra.pathfinder import generator
from attd_tasks_lra.pathfinder.config import PathfinderGeneratorConfig
from attd_tasks_lra.pathfinder.generator import generate, iter_chunks, render
from attd_tasks_lra.pathfinder.official import load_png, read_official_index
from attd_tasks_lra.pathfinder.options import DIFFICULTY_FOLDERS

SEED = 3
# (resolution, contour length, images): 64x64 hard images need ~2000 attempts at the target
# pair each (the spec's 64 parameters make long contours rare), so few of them are drawn.
SETS = [(32, 6, 200), (32, 9, 200), (32, 14, 200), (64, 6, 150), (64, 9, 20), (64, 14, 4)]
SETS_128 = [(128, 6, 2), (128, 14, 2)]


def config(**overrides: object) -> PathfinderGeneratorConfig:
    return PathfinderGeneratorConfig(**{"seed": SEED, **overrides})


@cache
def dataset(resolution: int, contour_length: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    return generate(config(resolution=resolution, contour_length=contour_length), range(count))


def marker_cores(image: np.ndarray) -> np.ndarray:
    """Pixels at full brightness whose four neighbours are nearly so: only a disc has them.
    A dash is at most 1.5 pixels wide, so its pixels across the dash are never all bright."""
    value = np.pad(image.astype(int), 1)
    neighbours = np.minimum.reduce(
        [value[:-2, 1:-1], value[2:, 1:-1], value[1:-1, :-2], value[1:-1, 2:]]
    )
    return (image >= 250) & (neighbours >= 230)


def components(mask: np.ndarray, link: float) -> tuple[np.ndarray, int]:
    """Connected components of a boolean image, pixels linked within Euclidean `link`."""
    r = math.floor(link)
    steps = [
        (dy, dx)
        for dy in range(-r, r + 1)
        for dx in range(-r, r + 1)
        if (dy or dx) and dy * dy + dx * dx <= link * link
    ]
    labels = np.zeros(mask.shape, dtype=int)
    count = 0
    for y, x in zip(*np.nonzero(mask), strict=True):
        if labels[y, x]:
            continue
        count += 1
        labels[y, x] = count
        queue = deque([(y, x)])
        while queue:
            a, b = queue.popleft()
            for dy, dx in steps:
                u, v = a + dy, b + dx
                if 0 <= u < mask.shape[0] and 0 <= v < mask.shape[1]:
                    if mask[u, v] and not labels[u, v]:
                        labels[u, v] = count
                        queue.append((u, v))
    return labels, count


def markers(image: np.ndarray) -> list[tuple[float, float]]:
    """Centroids of the marker discs."""
    labels, count = components(marker_cores(image), 1.5)
    return [tuple(np.argwhere(labels == i).mean(axis=0)) for i in range(1, count + 1)]


# ---------------------------------------------------------------------------------------------
# The generated images


@pytest.mark.parametrize(("resolution", "contour_length", "count"), SETS + SETS_128)
def test_images_are_uint8_squares_with_binary_labels(resolution, contour_length, count):
    images, labels = dataset(resolution, contour_length, count)
    assert images.shape == (count, resolution, resolution)
    assert images.dtype == np.uint8
    assert labels.shape == (count,)
    assert labels.dtype == np.int64
    assert set(labels.tolist()) <= {0, 1}
    assert (images.min(axis=(1, 2)) == 0).all()
    assert (images.max(axis=(1, 2)) == 255).all()  # the markers


def test_labels_are_balanced():
    labels = np.concatenate([dataset(*s)[1] for s in SETS if s[0] == 32])
    # Each label is a fair coin: 4.5 standard deviations of a binomial proportion.
    assert abs(labels.mean() - 0.5) <= 4.5 * math.sqrt(0.25 / labels.size)


@pytest.mark.parametrize(("resolution", "contour_length", "count"), SETS + SETS_128)
def test_every_image_has_exactly_two_marker_discs(resolution, contour_length, count):
    images, _ = dataset(resolution, contour_length, count)
    for image in images:
        # Two separate blobs; they may nearly touch, as two contour ends may be close.
        assert len(markers(image)) == 2


@pytest.mark.parametrize(("resolution", "contour_length", "count"), SETS + SETS_128)
def test_images_are_sparse_line_drawings(resolution, contour_length, count):
    images, _ = dataset(resolution, contour_length, count)
    lit = (images > 0).mean(axis=(1, 2))
    mean = images.mean(axis=(1, 2))
    assert ((lit > 0.02) & (lit < 0.3)).all(), (lit.min(), lit.max())
    assert ((mean > 3) & (mean < 40)).all(), (mean.min(), mean.max())


@pytest.mark.parametrize("resolution", [32, 64])
def test_longer_contours_light_more_pixels(resolution):
    lit = {
        length: (images > 0).mean()
        for res, length, count in SETS
        if res == resolution
        for images in [dataset(res, length, count)[0]]
    }
    assert lit[6] < lit[9] < lit[14]


def test_more_distractors_light_more_pixels():
    few, _ = generate(config(num_distractors=1), range(40))
    many, _ = generate(config(num_distractors=8), range(40))
    assert (few > 0).mean() < (many > 0).mean()


@pytest.mark.parametrize("contrast", [None, 0.5])
def test_dashes_are_no_brighter_than_the_contrast(contrast):
    """At 64x64 a 1-pixel dash covers at most a whole pixel, so outside the marker discs no
    pixel exceeds contrast * 255 (0.8 by default)."""
    images, _ = generate(config(resolution=64, contour_length=6, contrast=contrast), range(20))
    ceiling = round(255 * (0.8 if contrast is None else contrast))
    y, x = np.mgrid[:64, :64]
    for image in images:
        away = np.ones(image.shape, dtype=bool)
        for cy, cx in markers(image):
            away &= np.hypot(y - cy, x - cx) > 3.5  # marker radius 2.5, plus a pixel
        assert image[away].max() <= ceiling
        assert image[away].max() >= ceiling * 0.6  # some dash pixel is nearly covered


def test_label_one_means_the_markers_share_a_contour():
    """Joining lit pixels up to 3 pixels apart bridges the gaps between a contour's dashes
    (2 * margin): label-1 markers end up in one component, label-0 ones much less often (only
    when other contours happen to pass close). At 32x32 dashes of different contours are as
    close as a contour's own, so this needs 64x64."""
    images, labels = dataset(64, 6, 150)
    joined = []
    for image in images:
        lit, _ = components(image > 0, 3.0)
        (y0, x0), (y1, x1) = markers(image)
        joined.append(lit[round(y0), round(x0)] == lit[round(y1), round(x1)])
    joined = np.array(joined)
    same, different = joined[labels == 1].mean(), joined[labels == 0].mean()
    assert same >= 0.9
    assert different <= same - 0.3


# ---------------------------------------------------------------------------------------------
# Determinism and the pool


def test_an_image_is_a_function_of_seed_and_index():
    image, label = render(config(), 5)
    again, label_again = render(config(), 5)
    assert np.array_equal(image, again)
    assert label == label_again
    images, labels = generate(config(), [7, 5])
    assert np.array_equal(images[1], image)
    assert labels[1] == label
    assert not np.array_equal(images[0], image)
    other, _ = generate(config(seed=SEED + 1), [7, 5])
    assert not np.array_equal(other[0], images[0])
    assert not np.array_equal(other[1], images[1])


def test_iter_chunks_yields_chunks_in_order():
    images, labels = generate(config(), range(12))
    chunks = list(iter_chunks(config(), range(12), chunk_size=5))
    assert [len(chunk_labels) for _, chunk_labels in chunks] == [5, 5, 2]
    assert np.array_equal(np.concatenate([c[0] for c in chunks]), images)
    assert np.array_equal(np.concatenate([c[1] for c in chunks]), labels)


def test_two_workers_give_the_same_arrays_as_one():
    images, labels = generate(config(), range(24))
    pooled, pooled_labels = generate(config(), range(24), workers=2)  # 8 chunks of 3
    assert np.array_equal(pooled, images)
    assert np.array_equal(pooled_labels, labels)


def test_generate_of_no_indices_is_empty():
    images, labels = generate(config(resolution=64), [])
    assert images.shape == (0, 64, 64)
    assert images.dtype == np.uint8
    assert labels.shape == (0,)
    assert labels.dtype == np.int64


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: render(config(), -1), "index"),
        (lambda: generate(config(), [3, -2]), "indices"),
        (lambda: generate(config(), range(3), workers=0), "workers"),
        (lambda: list(iter_chunks(config(), range(3), chunk_size=0)), "chunk_size"),
    ],
)
def test_bad_arguments_are_rejected(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# ---------------------------------------------------------------------------------------------
# The config


def test_resolved_parameters_follow_the_spec_table():
    p = config().resolved()
    assert (p.margin, p.padding, p.paddle_length, p.paddle_thickness) == (1, 1, 2, 0.5)
    assert (p.marker_radius, p.seed_distance, p.continuity) == (1.5, 7, 1.0)
    assert (p.distractor_length, p.num_distractors) == (4, 20 // 4)
    assert p.contrast == 2 * 0.75
    assert config(contour_length=6).resolved().num_distractors == 20 // 2
    p64 = config(resolution=64, contour_length=9).resolved()
    assert (p64.paddle_length, p64.seed_distance, p64.num_distractors) == (5, 12, 22 // 3)
    p128 = config(resolution=128).resolved()
    assert (p128.margin, p128.seed_distance, p128.num_distractors) == (2, 20, 35 // 4)
    p256 = config(resolution=256).resolved()
    assert (p256.margin, p256.padding, p256.marker_radius) == (3, 22, 5.0)
    overridden = config(margin=2, continuity=1.8, num_distractors=0).resolved()
    assert (overridden.margin, overridden.continuity, overridden.num_distractors) == (2, 1.8, 0)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"resolution": 48}, "resolution"),
        ({"contour_length": 1}, "contour_length"),
        ({"contour_length": 1000}, "contour_length"),
        ({"seed_distance": 8}, "seed_distance"),
        ({"margin": -1}, "margin"),
        ({"paddle_thickness": 0.0}, "paddle_thickness"),
        ({"seed": -1}, "seed"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_invalid_configs_name_the_field(overrides, field):
    with pytest.raises(ValidationError, match=field):
        config(**overrides)


def test_config_is_frozen():
    with pytest.raises(ValidationError, match="frozen"):
        config().seed = 4


def test_a_contour_that_cannot_fit_fails_with_a_clear_error(monkeypatch):
    monkeypatch.setattr(generator, "MAX_PAIR_ATTEMPTS", 20)
    with pytest.raises(RuntimeError, match="200 dashes in a 32x32 image"):
        render(config(contour_length=200), 0)


# ---------------------------------------------------------------------------------------------
# The official release's layout


def write_png(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


@pytest.fixture
def release(tmp_path: Path) -> Path:
    """pathfinder32/curv_baseline with batches 0, 2 and 10 (numeric order matters), one
    all-zero image, and metadata in the release's text format."""
    folder = tmp_path / "pathfinder32" / "curv_baseline"
    rng = np.random.default_rng(0)
    for batch, labels in [(10, [1]), (0, [0, 1, 1]), (2, [1, 0])]:
        lines = []
        for i, label in enumerate(labels):
            pixels = rng.integers(0, 256, (32, 32), dtype=np.uint8)
            if (batch, i) == (0, 1):
                pixels[:] = 0
            write_png(folder / "imgs" / str(batch) / f"sample_{i}.png", pixels)
            lines.append(f"imgs/{batch} sample_{i}.png {i} {label} 1.0 6 2 2 0.5 1 1")
        (folder / "metadata").mkdir(parents=True, exist_ok=True)
        (folder / "metadata" / f"{batch}.npy").write_text("\n".join(lines) + "\n")
    return tmp_path


def test_official_index_lists_labelled_images_in_batch_order(release):
    index = read_official_index(release, 32, DIFFICULTY_FOLDERS[6])
    base = release / "pathfinder32" / "curv_baseline" / "imgs"
    assert index == [
        (base / "0" / "sample_0.png", 0),
        (base / "0" / "sample_2.png", 1),  # sample_1 is all zero: skipped
        (base / "2" / "sample_0.png", 1),
        (base / "2" / "sample_1.png", 0),
        (base / "10" / "sample_0.png", 1),
    ]


def test_load_png_returns_the_grayscale_pixels(tmp_path):
    pixels = np.arange(32 * 32, dtype=np.uint8).reshape(32, 32)
    write_png(tmp_path / "gray.png", pixels)
    assert np.array_equal(load_png(tmp_path / "gray.png"), pixels)
    write_png(tmp_path / "rgb.png", np.stack([pixels] * 3, axis=-1))
    loaded = load_png(tmp_path / "rgb.png")
    assert loaded.shape == (32, 32)
    assert loaded.dtype == np.uint8
    assert np.array_equal(loaded, pixels)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts open files via /proc")
def test_reading_closes_every_file(release):
    open_before = len(os.listdir("/proc/self/fd"))
    for path, _ in read_official_index(release, 32, "curv_baseline") * 20:
        load_png(path)
    assert len(os.listdir("/proc/self/fd")) == open_before


def test_missing_metadata_names_the_folder(release):
    metadata = release / "pathfinder32" / "curv_baseline" / "metadata"
    for file in metadata.iterdir():
        file.unlink()
    with pytest.raises(FileNotFoundError, match=str(metadata)):
        read_official_index(release, 32, "curv_baseline")


def test_missing_difficulty_lists_what_is_there(release):
    with pytest.raises(FileNotFoundError, match="curv_contour_length_14.*curv_baseline"):
        read_official_index(release, 32, "curv_contour_length_14")
    with pytest.raises(FileNotFoundError, match="pathfinder64"):
        read_official_index(release, 64, "curv_baseline")


def test_bad_metadata_lines_name_file_and_line(release):
    metadata = release / "pathfinder32" / "curv_baseline" / "metadata" / "2.npy"
    metadata.write_text("imgs/2 sample_0.png 0 1\nimgs/2 sample_1.png\n")
    with pytest.raises(ValueError, match=r"2\.npy:2"):
        read_official_index(release, 32, "curv_baseline")
    metadata.write_text("imgs/2 sample_9.png 9 1\n")
    with pytest.raises(FileNotFoundError, match="sample_9.png"):
        read_official_index(release, 32, "curv_baseline")


def test_unknown_resolution_is_rejected(release):
    with pytest.raises(ValueError, match="resolution"):
        read_official_index(release, 48, "curv_baseline")
