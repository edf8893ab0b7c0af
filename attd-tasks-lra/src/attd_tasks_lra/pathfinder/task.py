"""The `pathfinder` and `pathx` tasks: are the two markers on one contour? (LRA, 2 classes)

Images are read row-major, one token per pixel: 1,024 tokens at 32x32, 16,384 for
Path-X. Generated splits are cached as Arrow; the official images are read from their
PNG files a batch at a time, so no more than one file is open at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attd_core import Batch, ClassificationTask, ConfigError, InputSpec
from attd_tasks_lra.cache import Chunk, cached_split
from attd_tasks_lra.pathfinder.config import PathfinderGeneratorConfig
from attd_tasks_lra.pathfinder.generator import iter_chunks
from attd_tasks_lra.pathfinder.official import load_png, read_official_index
from attd_tasks_lra.pathfinder.options import DIFFICULTY_FOLDERS, GENERATED, PathfinderOptions
from attd_vision import IMAGE_SIZE_KEY, PIXEL_PAD_ID, PIXEL_VOCAB_SIZE

GENERATOR_VERSION = 1
"""Bump when the generator's output changes for a config: cached splits are then redone."""
SPLITS = ("train", "validation", "test")
OFFICIAL_SHARES = (0.8, 0.1, 0.1)
"""LRA's train/validation/test shares of each official difficulty's images."""
HARDER_DASHES = 1
"""Each severity step of the `harder` shift lengthens the target contours by this many
dashes: at 32x32, hard contours of 19 dashes (severity 5) still generate at ~70 images/s,
while 24 would rarely fit at all."""
_CHUNK = 256


class PathfinderTask(ClassificationTask):
    """Generated (or official) Pathfinder images as pixel sequences, labels 0/1.

    `augmentations` (what the `memo` objective's views apply) keep whether the two dots
    are connected: mirroring and mild noise; a translation could push a path off the
    image.
    """

    num_classes = 2
    augmentations: tuple[str, ...] = ("flip", "gaussian-noise:1")

    def __init__(self, options: PathfinderOptions) -> None:
        self.options = options
        if options.input == "tokens":
            self.input_spec = InputSpec(vocab_size=PIXEL_VOCAB_SIZE, pad_id=PIXEL_PAD_ID)
        else:
            self.input_spec = InputSpec(channels=1)
        self._splits: dict[str, Any] = {}

    @property
    def generator_config(self) -> PathfinderGeneratorConfig:
        """The generator's share of the options (what keys the cache)."""
        fields = set(PathfinderGeneratorConfig.model_fields)
        return PathfinderGeneratorConfig(**self.options.model_dump(include=fields))

    # -- data --------------------------------------------------------------------------

    def load_split(self, split: str) -> Any:
        """A `datasets.Dataset` of `pixels` (H, W) and `label`, or of PNG `path` and `label`."""
        if split not in SPLITS:
            raise ConfigError(f"pathfinder has no split {split!r}; splits: {', '.join(SPLITS)}")
        if split not in self._splits:
            if self.options.dataset == GENERATED:
                self._splits[split] = self._generated(split, self.generator_config)
            else:
                self._splits.update(self._official())
        return self._splits[split]

    def harder_split(self, split: str, severity: int) -> Any:
        """`split` regenerated with target contours `severity` dashes longer and
        `1 + severity / 2` times as many distractors (rounded), per the `harder` shift."""
        if self.options.dataset != GENERATED:
            raise ConfigError(
                f"shift 'harder' regenerates Pathfinder; task.dataset is "
                f"{self.options.dataset!r}, not {GENERATED!r}"
            )
        config = self.generator_config
        distractors = round(config.resolved().num_distractors * (1 + severity / 2))
        update = {
            "contour_length": config.contour_length + HARDER_DASHES * severity,
            "num_distractors": distractors,
        }
        try:
            harder = config.model_validate({**config.model_dump(), **update})
        except ValueError as exc:
            raise ConfigError(f"shift 'harder:{severity}' does not fit this task: {exc}") from None
        return self._generated(split, harder)

    def _generated(self, split: str, config: PathfinderGeneratorConfig) -> Any:
        import datasets

        # Test and validation come first, so that they stay the same when num_train changes.
        starts = {
            "test": 0,
            "validation": config.num_test,
            "train": config.num_test + config.num_val,
        }
        sizes = {"test": config.num_test, "validation": config.num_val, "train": config.num_train}
        indices = range(starts[split], starts[split] + sizes[split])
        side = config.resolution

        def chunks() -> Iterator[Chunk]:
            for images, labels in iter_chunks(config, indices, _CHUNK, self.options.workers):
                yield {"pixels": images, "label": labels}

        features = datasets.Features(
            {
                "pixels": datasets.Array2D(shape=(side, side), dtype="uint8"),
                "label": datasets.Value("int64"),
            }
        )
        dataset = cached_split(
            generator="pathfinder",
            version=GENERATOR_VERSION,
            config=config,
            split=split,
            features=features,
            chunks=chunks,
            total=len(indices),
            root=self.options.cache_dir,
        )
        return dataset.with_format("numpy")

    def _official(self) -> dict[str, Any]:
        import datasets

        options = self.options
        difficulty = DIFFICULTY_FOLDERS.get(options.contour_length)
        if difficulty is None:
            raise ConfigError(
                f"task.contour_length: the official data hold contour lengths "
                f"{', '.join(map(str, DIFFICULTY_FOLDERS))}, not {options.contour_length}"
            )
        root = Path(options.dataset).expanduser()
        try:
            index = read_official_index(root, options.resolution, difficulty)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"task.dataset: {exc}") from None
        order = np.random.default_rng(options.seed).permutation(len(index))
        bounds = np.cumsum([0, *(round(share * len(index)) for share in OFFICIAL_SHARES)])
        bounds[-1] = len(index)
        splits = {}
        for split, low, high in zip(SPLITS, bounds[:-1], bounds[1:], strict=True):
            rows = [index[i] for i in order[low:high]]
            splits[split] = datasets.Dataset.from_dict(
                {"path": [str(path) for path, _ in rows], "label": [label for _, label in rows]}
            )
        return splits

    # -- encoding ----------------------------------------------------------------------

    def image(self, example: dict[str, Any]) -> np.ndarray:
        """The example's (H, W) uint8 image, generated or read from its PNG."""
        if "pixels" in example:
            return np.asarray(example["pixels"], dtype=np.uint8)
        return load_png(Path(example["path"]))

    def export_record(self, example: dict[str, Any]) -> dict[str, Any]:
        """`{"pixels": [...], "label": ..., "height": h, "width": w}`, pixels row-major."""
        image = self.image(example)
        height, width = image.shape
        return {
            "pixels": image.reshape(-1).tolist(),
            "label": int(example["label"]),
            "height": height,
            "width": width,
        }

    def preprocess(self, raw_batch: list[dict[str, Any]]) -> Batch:
        images = np.stack([self.image(example) for example in raw_batch])
        count, height, width = images.shape
        pixels = torch.from_numpy(images.reshape(count, height * width))
        if self.options.input == "tokens":
            inputs = pixels.long()
        else:
            inputs = (pixels.float() / 255).unsqueeze(-1)
        return Batch(
            inputs=inputs,
            mask=torch.ones(count, height * width, dtype=torch.bool),
            labels=torch.tensor([int(example["label"]) for example in raw_batch]),
            aux={IMAGE_SIZE_KEY: torch.tensor([[height, width]] * count)},
        )
