"""attd-core's Task conformance suite on image-classification: digits (tokens, floats,
patches) and a local image folder of mixed sizes (padded batches)."""

from __future__ import annotations

import numpy as np
import pytest

from attd_vision import _plugin

testing = pytest.importorskip("attd_core.testing")


def create(**options):
    manager = testing.new_plugin_manager(vision=_plugin)
    return manager.create("task", "image-classification", options)


class TestDigitsPixelTokens(testing.TaskConformance):
    splits = ("train", "validation", "test")

    def make_task(self):
        return create(limit_train=16, limit_validation=8, limit_test=8)


class TestDigitsFloatPixels(testing.TaskConformance):
    def make_task(self):
        return create(encoder_options={"dtype": "float"}, limit_train=16, limit_test=8)


class TestDigitsPatches(testing.TaskConformance):
    def make_task(self):
        return create(encoder="patches", encoder_options={"patch_size": 2}, limit_train=16)


class TestMixedSizeFolder(testing.TaskConformance):
    splits = ("train", "validation", "test")
    sample_size = 6

    @pytest.fixture(autouse=True)
    def _data_dir(self, tmp_path_factory):
        """A folder for the images; autouse fixtures run before the suite's."""
        if "data_dir" not in type(self).__dict__:
            type(self).data_dir = tmp_path_factory.mktemp(type(self).__name__)

    def make_task(self):
        from PIL import Image

        root = self.data_dir / "images"
        for label, shapes in {"small": [(2, 3), (3, 3)], "large": [(4, 3), (3, 4)]}.items():
            (root / label).mkdir(parents=True, exist_ok=True)
            for index in range(8):
                pixels = np.full((*shapes[index % 2], 3), 30 * index, np.uint8)
                Image.fromarray(pixels).save(root / label / f"{index}.png")
        return create(dataset=str(root), cache_dir=str(self.data_dir / "hf"), color="rgb")
