"""The `pathfinder` and `pathx` tasks: generated and official data, encoding, harder shift."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import attd_tasks_lra._plugin as lra_plugin
from attd_core import ConfigError, get_plugin_manager
from attd_core.testing import TaskConformance, new_plugin_manager
from attd_vision import IMAGE_SIZE_KEY, PIXEL_PAD_ID, PIXEL_VOCAB_SIZE

TINY = {"num_train": 12, "num_val": 4, "num_test": 6, "workers": 1}


def make(name: str = "pathfinder", **options):
    return get_plugin_manager().create("task", name, {**TINY, **options})


class TestPathfinder(TaskConformance):
    splits = ("train", "validation", "test")
    sample_size = 4

    def make_task(self):
        return new_plugin_manager(lra=lra_plugin).create("task", "pathfinder", TINY)


class TestPathfinderFloats(TestPathfinder):
    def make_task(self):
        return new_plugin_manager(lra=lra_plugin).create(
            "task", "pathfinder", {**TINY, "input": "floats"}
        )


def test_generated_images_become_row_major_pixel_tokens():
    task = make()
    split = task.load_split("test")
    assert len(split) == 6 and task.load_split("train").num_rows == 12
    rows = [split[i] for i in range(3)]
    batch = task.preprocess(rows)
    images = np.stack([np.asarray(row["pixels"], dtype=np.uint8) for row in rows])
    assert batch.inputs.shape == (3, 1024) and batch.inputs.dtype == torch.long
    assert torch.equal(batch.inputs, torch.from_numpy(images.reshape(3, -1)).long())
    assert batch.labels.tolist() == [int(row["label"]) for row in rows]
    assert batch.mask.all() and batch.aux[IMAGE_SIZE_KEY].tolist() == [[32, 32]] * 3
    assert task.input_spec.vocab_size == PIXEL_VOCAB_SIZE
    assert task.input_spec.pad_id == PIXEL_PAD_ID


def test_float_input_is_scaled_to_the_unit_interval():
    task = make(input="floats")
    batch = task.preprocess([task.load_split("test")[0]])
    assert batch.inputs.shape == (1, 1024, 1) and task.input_spec.channels == 1
    assert 0 <= float(batch.inputs.min()) and float(batch.inputs.max()) <= 1


def test_splits_are_disjoint_and_stable_when_train_grows():
    small, large = make(), make(num_train=20)
    test_small = np.stack([row["pixels"] for row in small.load_split("test")])
    test_large = np.stack([row["pixels"] for row in large.load_split("test")])
    assert np.array_equal(test_small, test_large)
    train = np.stack([row["pixels"] for row in small.load_split("train")])
    assert not any((train == image).all(axis=(1, 2)).any() for image in test_small)


def test_pathx_is_128_pixels_a_side():
    task = make("pathx", num_train=2, num_val=1, num_test=1)
    assert task.options.resolution == 128 and task.options.contour_length == 14
    batch = task.preprocess([task.load_split("test")[0]])
    assert batch.inputs.shape == (1, 128 * 128)


def test_export_record_holds_pixels_label_and_size():
    task = make()
    example = task.load_split("test")[0]
    record = task.export_record(example)
    assert (record["height"], record["width"], record["label"]) == (32, 32, int(example["label"]))
    assert record["pixels"] == np.asarray(example["pixels"]).reshape(-1).tolist()


def test_harder_instances_have_longer_contours_and_more_ink():
    task = make(num_test=24)
    harder = get_plugin_manager().create("shift", "harder", {"severity": 3})
    clean = np.stack([row["pixels"] for row in task.load_split("test")])
    shifted = np.stack([row["pixels"] for row in harder.load_split(task, "test")])
    assert shifted.shape == clean.shape
    assert (shifted > 0).mean() > (clean > 0).mean()


def write_official(root, labels):
    """A tiny copy of the release layout: one batch, one all-black image."""
    folder = root / "pathfinder32" / "curv_contour_length_14"
    (folder / "imgs" / "0").mkdir(parents=True)
    (folder / "metadata").mkdir()
    lines = []
    for i, label in enumerate(labels):
        pixels = np.zeros((32, 32), np.uint8)
        if i != 1:
            pixels[i % 32, :] = 200
        Image.fromarray(pixels).save(folder / "imgs" / "0" / f"sample_{i}.png")
        lines.append(f"imgs/0 sample_{i}.png {i} {label} 14 1.8")
    (folder / "metadata" / "0.npy").write_text("\n".join(lines) + "\n")


def test_official_images_are_split_80_10_10_without_empty_ones(tmp_path):
    write_official(tmp_path, [i % 2 for i in range(21)])
    task = make(dataset=str(tmp_path))
    sizes = {split: len(task.load_split(split)) for split in ("train", "validation", "test")}
    assert sizes == {"train": 16, "validation": 2, "test": 2}
    paths = [row["path"] for split in sizes for row in task.load_split(split)]
    assert len(set(paths)) == 20 and not any(path.endswith("sample_1.png") for path in paths)
    row = task.load_split("test")[0]
    batch = task.preprocess([row])
    assert batch.labels.tolist() == [row["label"]] and int(batch.inputs.max()) == 200
    assert task.export_record(row)["height"] == 32


def test_official_data_errors_name_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="task.dataset: .*pathfinder32"):
        make(dataset=str(tmp_path)).load_split("train")
    with pytest.raises(ConfigError, match="contour lengths 6, 9, 14, not 10"):
        make(dataset=str(tmp_path), contour_length=10).load_split("train")
    with pytest.raises(ConfigError, match="regenerates Pathfinder"):
        get_plugin_manager().create("shift", "harder", {}).load_split(
            make(dataset=str(tmp_path)), "test"
        )
