"""The image-classification task: digits, local image folders, options and errors."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from pydantic import ValidationError

import attd_core
from attd_core import ConfigError, InputSpec, hookimpl
from attd_vision import ImageClassificationOptions, ImageClassificationTask
from attd_vision.data import DIGITS_LEVELS, encode_labels, source_kind

SPLITS = ("train", "validation", "test")
DIGIT_VALUES = {round(level * 255 / DIGITS_LEVELS) for level in range(DIGITS_LEVELS + 1)}


def task_of(**options: Any) -> ImageClassificationTask:
    return ImageClassificationTask(ImageClassificationOptions(**options))


def token_task_of(**options: Any) -> ImageClassificationTask:
    """Integer pixel tokens 0..255 (the default is floats)."""
    return task_of(encoder_options={"dtype": "int"}, **options)


def sizes(task: ImageClassificationTask) -> dict[str, int]:
    return {split: len(task.load_split(split)) for split in SPLITS}


def batch_of(task: ImageClassificationTask, split: str = "train", n: int | None = None):
    examples = task.load_split(split)
    return task.preprocess([examples[i] for i in range(min(n or len(examples), len(examples)))])


@pytest.fixture(scope="module")
def digits() -> ImageClassificationTask:
    return token_task_of()


def test_the_plugin_registers_the_task_and_both_encoders(manager):
    assert manager.names("task") == ["image-classification"]
    assert manager.names("encoder") == ["patches", "pixels"]
    pixel_shifts = {"gaussian-noise", "contrast", "gaussian-blur", "occlusion"}
    assert pixel_shifts <= set(manager.names("shift"))
    spec = manager.get("task", "image-classification")
    assert spec.factory == "attd_vision.task:ImageClassificationTask"
    assert {"train.epochs", "train.lr"} <= set(spec.run_defaults)
    assert isinstance(manager.create("task", "image-classification", {}), ImageClassificationTask)


def test_digits_split_deterministically_into_train_validation_test(digits):
    assert sizes(digits) == {"train": 1294, "validation": 144, "test": 359}
    assert sum(sizes(digits).values()) == 1797
    again = task_of()
    assert again.load_split("test")[:5] == digits.load_split("test")[:5]
    other = task_of(seed=1)
    assert other.load_split("test")[:5] != digits.load_split("test")[:5]


def test_digits_are_ten_classes_of_64_gray_tokens_in_0_255(digits):
    assert digits.num_classes == 10 and digits.label_names == [str(d) for d in range(10)]
    assert digits.input_spec == InputSpec(vocab_size=257, pad_id=256)
    batch = batch_of(digits)
    assert batch.inputs.shape == (1294, 64) and batch.inputs.dtype == torch.long
    assert set(batch.inputs.unique().tolist()) == DIGIT_VALUES  # 17 levels, 0 and 255 included
    assert bool(batch.mask.all()) and sorted(batch.labels.unique().tolist()) == list(range(10))
    assert digits.color == "grayscale"


def test_digits_are_float_pixels_by_default_and_can_be_patches():
    floats = task_of(limit_train=8)
    batch = batch_of(floats)
    assert floats.input_spec == InputSpec(channels=1) and batch.inputs.shape == (8, 64, 1)
    assert float(batch.inputs.min()) == -1.0 and float(batch.inputs.max()) == 1.0
    patches = task_of(encoder="patches", encoder_options={"patch_size": 2}, limit_train=8)
    assert patches.input_spec == InputSpec(channels=4)
    assert batch_of(patches).inputs.shape == (8, 16, 4)
    resized = token_task_of(image_size=4, limit_train=3)
    assert batch_of(resized).inputs.shape == (3, 16)


def test_limits_keep_a_seeded_subset_of_each_split():
    task = task_of(limit_train=10, limit_validation=3, limit_test=5)
    assert sizes(task) == {"train": 10, "validation": 3, "test": 5}
    assert len(set(batch_of(task, "train").labels.tolist())) > 1


def test_encoder_options_are_checked_and_filled_in():
    floats = {"mean": 0.5, "std": 0.5, "dtype": "float"}
    assert ImageClassificationOptions().encoder_options == floats
    patches = ImageClassificationOptions(encoder="patches")
    assert patches.encoder_options == {"mean": 0.5, "std": 0.5, "patch_size": 4}
    with pytest.raises(ValidationError, match=r"for encoder 'pixels': patch_size.*options: "):
        ImageClassificationOptions(encoder_options={"patch_size": 2})
    with pytest.raises(ValidationError, match="encoder_options.mean needs 1 value"):
        ImageClassificationOptions(color="grayscale", encoder_options={"mean": [0.1, 0.2, 0.3]})
    with pytest.raises(ValidationError, match="image_size"):
        ImageClassificationOptions(image_size=0)


def test_an_image_folder_loads_through_imagefolder(image_folder, cache_dir):
    task = token_task_of(dataset=str(image_folder), cache_dir=cache_dir, test_fraction=0.25)
    assert sizes(task) == {"train": 5, "validation": 1, "test": 2}
    assert task.num_classes == 2 and task.label_names == ["cat", "dog"]
    assert task.color == "rgb"  # auto: the images are RGB
    batch = batch_of(task)
    assert batch.inputs.shape == (5, 6 * 6 * 3) and bool(batch.mask.all())
    bright = batch.inputs[:, 3:].float().mean(dim=1) > 120  # past the red pixel
    assert bright.long().tolist() == batch.labels.tolist()  # dogs are the bright ones
    gray = token_task_of(dataset=str(image_folder), cache_dir=cache_dir, color="grayscale")
    assert batch_of(gray).inputs.shape[1] == 36


def test_an_image_folder_with_train_and_test_keeps_its_test(split_folder, cache_dir):
    options = {"dataset": str(split_folder), "cache_dir": cache_dir, "image_size": 4}
    task = task_of(**options, encoder="patches", encoder_options={"patch_size": 2})
    assert sizes(task) == {"train": 11, "validation": 1, "test": 4}
    batch = batch_of(task, "test")
    assert batch.inputs.shape == (4, 4, 12) and sorted(batch.labels.tolist()) == [0, 0, 1, 1]
    named = task_of(**options, splits={"validation": "test"})
    assert sizes(named) == {"train": 10, "validation": 4, "test": 2}


def test_images_of_different_sizes_are_padded_unless_resized(tmp_path, cache_dir):
    from PIL import Image

    for label, (height, width) in {"a": (2, 3), "b": (3, 3)}.items():
        (tmp_path / "mixed" / label).mkdir(parents=True)
        for index in range(5):
            pixels = np.full((height, width), 10 * index, np.uint8)
            Image.fromarray(pixels).save(tmp_path / "mixed" / label / f"{index}.png")
    task = token_task_of(dataset=str(tmp_path / "mixed"), cache_dir=cache_dir)
    batch = batch_of(task)
    assert batch.inputs.shape == (len(batch), 9) and not bool(batch.mask.all())
    assert (batch.inputs[~batch.mask] == 256).all()
    assert task.color == "grayscale"
    examples = task.load_split("train")  # lengths come from the image headers, for grouping
    lengths = [task.sequence_length(examples[i]) for i in range(len(examples))]
    assert lengths == batch.mask.sum(dim=1).tolist() and set(lengths) == {6, 9}
    resized = token_task_of(dataset=str(tmp_path / "mixed"), cache_dir=cache_dir, image_size=3)
    assert resized.sequence_length is None and bool(batch_of(resized).mask.all())


def test_digits_need_no_length_grouping(digits):
    assert digits.sequence_length is None  # every image is 8x8


def test_missing_folder_file_and_empty_folder_are_named(tmp_path, cache_dir):
    with pytest.raises(ConfigError, match=r"task.dataset: image folder '\./nowhere' not found"):
        task_of(dataset="./nowhere").load_split("train")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ConfigError, match=r"task.dataset: '.*file.txt' is not a folder"):
        task_of(dataset=str(tmp_path / "file.txt")).load_split("train")
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    (tmp_path / "empty" / "cat" / "notes.txt").write_text("no images here")
    empty = task_of(dataset=str(tmp_path / "empty"), cache_dir=cache_dir)
    with pytest.raises(ConfigError, match=r"task.dataset: no images in folder '.*empty'"):
        empty.num_classes  # noqa: B018 - loading is what fails


def test_an_unreachable_hub_dataset_is_a_config_error(cache_dir):
    task = task_of(dataset="nobody-here/no-such-images", cache_dir=cache_dir)
    with pytest.raises(ConfigError, match="cannot load 'nobody-here/no-such-images' from the"):
        task.load_split("train")


def test_unknown_split_is_refused(digits):
    with pytest.raises(ConfigError, match="no split 'dev'; splits: train, validation, test"):
        digits.load_split("dev")


def test_an_unreadable_image_is_named_when_it_is_read(image_folder, cache_dir):
    (image_folder / "cat" / "broken.png").write_bytes(b"not a png at all")
    task = task_of(dataset=str(image_folder), cache_dir=cache_dir, color="rgb")
    with pytest.raises(ConfigError, match=r"cannot read image '.*cat/broken\.png'"):
        batch_of(task, "train")
        batch_of(task, "validation")
        batch_of(task, "test")


def test_wrong_columns_and_split_names_are_named(image_folder, cache_dir):
    common = {"dataset": str(image_folder), "cache_dir": cache_dir}
    with pytest.raises(ConfigError, match="task.image_column: .* no column 'img'; columns: image"):
        task_of(**common, image_column="img").load_split("train")
    with pytest.raises(ConfigError, match="task.label_column: .* no column 'target'; columns"):
        task_of(**common, label_column="target").load_split("train")
    with pytest.raises(ConfigError, match="task.splits.test: .* no split 'eval'; splits: train"):
        task_of(**common, splits={"test": "eval"}).load_split("train")


def test_images_directly_in_the_folder_have_no_label(tmp_path, cache_dir):
    from PIL import Image

    (tmp_path / "flat").mkdir()
    for index in range(4):
        Image.fromarray(np.zeros((2, 2), np.uint8)).save(tmp_path / "flat" / f"{index}.png")
    task = task_of(dataset=str(tmp_path / "flat"), cache_dir=cache_dir)
    with pytest.raises(ConfigError, match="task.label_column: .*have no label"):
        task.load_split("train")


def test_integer_and_string_labels_become_class_ids():
    import datasets

    def split(labels):
        return datasets.Dataset.from_dict({"label": labels})

    _, names, count = encode_labels({"train": split([0, 4, 2]), "test": split([1])}, "label")
    assert (names, count) == (None, 5)
    named, names, count = encode_labels({"train": split(["b", "a"]), "test": split(["c"])}, "label")
    assert (names, count) == (["a", "b", "c"], 3)
    assert named["train"]["label"] == [1, 0] and named["test"]["label"] == [2]
    with pytest.raises(ConfigError, match="must hold class ids or names, got float"):
        encode_labels({"train": split([0.5])}, "label")
    with pytest.raises(ConfigError, match="negative labels"):
        encode_labels({"train": split([-1, 1])}, "label")


def test_where_the_data_come_from(tmp_path):
    assert source_kind("digits") == "digits"
    assert source_kind("ylecun/mnist") == source_kind("mnist") == "hub"
    assert source_kind(str(tmp_path)) == "folder"
    for path_like in ("./images", "/data/images", "~/images", "data/train/images"):
        assert source_kind(path_like) == "folder"


class _RowMeans:
    """A third-party encoder: each image row's mean intensity, one float token per row."""

    def __init__(self, options: Any) -> None:
        self.input_spec = InputSpec(channels=1)
        self.seen: list[tuple[tuple[int, ...], str]] = []

    def encode(self, raw: Any) -> tuple[Any, Any, dict[str, Any]]:
        self.seen.append((raw.shape, str(raw.dtype)))
        tokens = torch.from_numpy(raw.mean(axis=(1, 2), dtype=np.float32)).unsqueeze(-1)
        return tokens, torch.ones(len(tokens), dtype=torch.bool), {"height": raw.shape[0]}


class _RowMeansPlugin:
    @hookimpl
    def attd_register(self, register: Any) -> None:
        register(
            attd_core.EncoderSpec(
                name="row-means", summary="row means", factory=f"{__name__}:_RowMeans"
            )
        )


def test_an_encoder_plugin_gets_converted_arrays(manager):
    manager.add_plugin(_RowMeansPlugin(), name="row-means")
    options = {"encoder": "row-means", "image_size": (4, 2), "color": "rgb", "limit_train": 3}
    task = manager.create("task", "image-classification", options)
    assert task.options.encoder_options == {}  # a plugin's options are checked when built
    batch = batch_of(task)
    assert batch.inputs.shape == (3, 4, 1) and task.input_spec == InputSpec(channels=1)
    assert task.encoder.seen == [((4, 2, 3), "uint8")] * 3


def test_an_encoder_plugin_needs_the_manager_that_creates_the_task():
    task = task_of(encoder="row-means", image_size=(4, 2))
    with pytest.raises(ConfigError, match="encoder 'row-means' is a plugin: create the task"):
        _ = task.encoder


def test_a_hub_dataset_is_read_with_its_columns_and_split_names(monkeypatch, cache_dir):
    """The Hub path, offline: datasets.load_dataset is replaced by an in-memory dataset."""
    import datasets
    from PIL import Image

    def split(n: int, offset: int) -> datasets.Dataset:
        images = [Image.fromarray(np.full((4, 4, 3), 20 * i, np.uint8)) for i in range(n)]
        features = datasets.Features(
            {"img": datasets.Image(), "fine": datasets.ClassLabel(names=["x", "y", "z"])}
        )
        labels = [(i + offset) % 3 for i in range(n)]
        return datasets.Dataset.from_dict({"img": images, "fine": labels}, features=features)

    calls = []

    def load_dataset(path, name=None, **kwargs):
        calls.append((path, name, kwargs))
        return datasets.DatasetDict(
            {"train": split(9, 0), "valid": split(3, 1), "test": split(6, 2)}
        )

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    task = task_of(
        dataset="someone/tiny-images",
        subset="rgb",
        image_column="img",
        label_column="fine",
        cache_dir=cache_dir,
        encoder="patches",
        encoder_options={"patch_size": 2, "mean": [0.5, 0.5, 0.5]},
    )
    assert sizes(task) == {"train": 9, "validation": 3, "test": 6}
    assert calls == [("someone/tiny-images", "rgb", {"cache_dir": str(cache_dir)})]
    assert task.num_classes == 3 and task.label_names == ["x", "y", "z"] and task.color == "rgb"
    assert set(task.load_split("train")[0]["img"]) == {"bytes", "path"}  # decoded by attd
    batch = batch_of(task, "validation")
    assert batch.inputs.shape == (3, 4, 12) and task.input_spec == InputSpec(channels=12)
    assert sorted(batch.labels.tolist()) == [0, 1, 2]
