"""Image datasets for the `image-classification` task, as `datasets.Dataset` splits.

Three sources: `digits` (scikit-learn's bundled 8x8 digits, nothing downloaded), a local
image folder read by the `imagefolder` builder of `datasets`, or a Hugging Face Hub id.
Every source ends as the splits `train`, `validation` and `test`: missing ones are held
out of `train` with a seeded permutation, and every split is shuffled once with the same
seed, so that limits (and `eval.limit`) see a mix of classes even when a folder or a Hub
split is sorted by label.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from attd_core import ConfigError
from attd_vision.options import ImageClassificationOptions

SPLITS = ("train", "validation", "test")
_ALIASES = {"validation": ("validation", "valid", "val", "dev"), "test": ("test",)}
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(?:/[A-Za-z0-9][\w.-]*)?")
DIGITS_LEVELS = 16
"""scikit-learn's digits hold 0..16 (17 gray levels); they are scaled to 0..255."""
FOLDER_LAYOUT = "folder/LABEL/*.png or folder/{train,test}/LABEL/*.png"


@dataclass
class LoadedImages:
    """The three splits, the image and label columns, and the class names."""

    splits: dict[str, Any]
    image_column: str
    label_column: str
    label_names: list[str] | None
    num_classes: int
    source: str


def source_kind(dataset: str) -> str:
    """`digits`, `folder` (an existing directory, or anything path-like) or `hub`."""
    if dataset == "digits":
        return "digits"
    if Path(dataset).expanduser().is_dir():
        return "folder"
    path_like = dataset.startswith((".", "/", "~")) or "\\" in dataset
    return "hub" if _HUB_ID.fullmatch(dataset) and not path_like else "folder"


def load_images(options: ImageClassificationOptions) -> LoadedImages:
    """Load, split, limit and check the data `options` describe."""
    kind = source_kind(options.dataset)
    with _quiet_datasets():
        if kind == "digits":
            found, image_column, label_column = {"train": load_digits()}, "image", "label"
        else:
            found = load_folder(options) if kind == "folder" else load_hub(options)
            image_column, label_column = options.image_column, options.label_column
            _check_columns(found, image_column, label_column, options.dataset)
            found = {name: _undecoded(split, image_column) for name, split in found.items()}
        splits = make_splits(found, options)
        splits, names, num_classes = encode_labels(splits, label_column)
    return LoadedImages(splits, image_column, label_column, names, num_classes, kind)


def load_digits() -> Any:
    """scikit-learn's 1797 8x8 digits: `image` uint8 0..255 (17 levels), `label` 0..9."""
    import datasets
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = np.round(bunch.images * (255 / DIGITS_LEVELS)).astype(np.uint8)
    features = datasets.Features(
        {
            "image": datasets.Array2D(shape=(8, 8), dtype="uint8"),
            "label": datasets.ClassLabel(names=[str(digit) for digit in range(10)]),
        }
    )
    data = {"image": images, "label": bunch.target.astype(np.int64)}
    return datasets.Dataset.from_dict(data, features=features)


def load_folder(options: ImageClassificationOptions) -> dict[str, Any]:
    """An image folder through the `imagefolder` builder; the label is the subfolder."""
    import datasets

    folder = Path(options.dataset).expanduser()
    if not folder.exists():
        raise ConfigError(
            f"task.dataset: image folder {options.dataset!r} not found "
            f"({folder.resolve()}); expected {FOLDER_LAYOUT}, 'digits' or a Hub id"
        )
    if not folder.is_dir():
        raise ConfigError(f"task.dataset: {options.dataset!r} is not a folder")
    if not _has_images(folder):
        raise ConfigError(
            f"task.dataset: no images in folder {options.dataset!r}; expected {FOLDER_LAYOUT}"
        )
    try:
        loaded = datasets.load_dataset(
            "imagefolder", data_dir=str(folder), cache_dir=_cache_dir(options)
        )
    except Exception as exc:  # noqa: BLE001 - whatever datasets raises, the folder is at fault
        if type(exc).__name__ == "EmptyDatasetError":
            raise ConfigError(
                f"task.dataset: no images in folder {options.dataset!r}; expected {FOLDER_LAYOUT}"
            ) from None
        raise ConfigError(
            f"task.dataset: cannot load image folder {options.dataset!r}: {_first_line(exc)}"
        ) from None
    return dict(loaded)


def load_hub(options: ImageClassificationOptions) -> dict[str, Any]:
    """Every split of a Hugging Face Hub dataset (from the local cache when offline)."""
    import datasets

    try:
        loaded = datasets.load_dataset(
            options.dataset, options.subset, cache_dir=_cache_dir(options)
        )
    except Exception as exc:  # noqa: BLE001 - network, auth, missing, bad config: all user-facing
        raise ConfigError(
            f"task.dataset: cannot load {options.dataset!r} from the Hugging Face Hub "
            f"(and there is no local folder of that name): {_first_line(exc)}"
        ) from None
    if not isinstance(loaded, dict):
        loaded = {"train": loaded}
    return dict(loaded)


def make_splits(found: dict[str, Any], options: ImageClassificationOptions) -> dict[str, Any]:
    """`train`, `validation` and `test`, holding out what `found` lacks, shuffled, limited.

    `options.splits` names the dataset's own split for an attd split; otherwise `train`,
    `validation` (or `valid`, `val`, `dev`) and `test` are used when present.
    """
    for name, given in options.splits.items():
        if given not in found:
            raise ConfigError(
                f"task.splits.{name}: {options.dataset!r} has no split {given!r}; "
                f"splits: {', '.join(found) or 'none'}"
            )
    train_name = options.splits.get("train", "train")
    if train_name not in found:
        raise ConfigError(
            f"task.dataset: {options.dataset!r} has no 'train' split; "
            f"splits: {', '.join(found) or 'none'} (name one with task.splits.train)"
        )
    rng = np.random.default_rng(options.seed)
    train = found[train_name]
    splits: dict[str, Any] = {}
    claimed = set(options.splits.values())
    for name in ("test", "validation"):
        if name in options.splits:
            aliases: tuple[str, ...] = (options.splits[name],)
        else:
            aliases = tuple(alias for alias in _ALIASES[name] if alias not in claimed)
        present = next((alias for alias in aliases if alias in found), None)
        if present is not None:
            splits[name] = found[present]
            continue
        fraction = options.test_fraction if name == "test" else options.validation_fraction
        held = round(fraction * len(train))
        if held < 1 or held >= len(train):
            raise ConfigError(
                f"task.dataset: {options.dataset!r} has {len(train)} training images, too few "
                f"to hold out {name}_fraction={fraction} as the {name} split"
            )
        order = rng.permutation(len(train))
        splits[name] = train.select(np.sort(order[:held]))
        train = train.select(np.sort(order[held:]))
    splits["train"] = train
    result = {}
    for name in SPLITS:
        split = splits[name]
        order = rng.permutation(len(split))
        limit = options.limit(name)
        result[name] = split.select(order if limit is None else order[:limit])
    return result


def _has_images(folder: Path) -> bool:
    from PIL import Image

    suffixes = set(Image.registered_extensions())
    return any(path.suffix.lower() in suffixes for path in folder.rglob("*") if path.is_file())


def _check_columns(found: dict[str, Any], image: str, label: str, dataset: str) -> None:
    for key, column in (("image_column", image), ("label_column", label)):
        for name, split in found.items():
            if column not in split.column_names:
                unlabelled = key == "label_column" and "label" not in split.column_names
                hint = " (images directly in the folder have no label)" if unlabelled else ""
                raise ConfigError(
                    f"task.{key}: {dataset!r} split {name!r} has no column {column!r}{hint}; "
                    f"columns: {', '.join(split.column_names)}"
                )


def _undecoded(split: Any, column: str) -> Any:
    """Image columns keep their `{"bytes", "path"}`: attd decodes them, naming bad files."""
    import datasets

    feature = split.features[column]
    if isinstance(feature, datasets.Image) and feature.decode:
        return split.cast_column(column, datasets.Image(decode=False))
    return split


def encode_labels(splits: dict[str, Any], column: str) -> tuple[dict[str, Any], Any, int]:
    """Class ids 0..C-1: ClassLabel as is, integers as is, strings by their sorted names."""
    import datasets

    feature = splits["train"].features[column]
    if isinstance(feature, datasets.ClassLabel):
        for name, split in splits.items():
            if len(split) and min(split[column]) < 0:
                raise ConfigError(
                    f"task.label_column: split {name!r} has unlabelled images ({column!r} < 0)"
                )
        return splits, list(feature.names), feature.num_classes
    values = {name: list(split[column]) for name, split in splits.items()}
    every = [value for column_values in values.values() for value in column_values]
    if all(isinstance(value, str) for value in every):
        names = sorted(set(every))
        label = datasets.ClassLabel(names=names)
        cast = {name: split.cast_column(column, label) for name, split in splits.items()}
        return cast, names, len(names)
    if all(isinstance(value, int | np.integer) and not isinstance(value, bool) for value in every):
        if any(value < 0 for value in every):
            raise ConfigError(f"task.label_column: {column!r} holds negative labels")
        return splits, None, int(max(every, default=0)) + 1
    kinds = sorted({type(value).__name__ for value in every})
    raise ConfigError(
        f"task.label_column: {column!r} must hold class ids or names, got {', '.join(kinds)}"
    )


def _cache_dir(options: ImageClassificationOptions) -> str | None:
    return None if options.cache_dir is None else str(options.cache_dir)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


@contextmanager
def _quiet_datasets() -> Iterator[None]:
    """No progress bars from datasets while loading: attd draws its own."""
    import datasets

    enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if enabled:
            datasets.enable_progress_bars()
