"""Fixtures of attd-vision's tests: a plugin manager with core and vision, image folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import attd_core
import attd_core._plugin as core_plugin
from attd_vision import _plugin as vision_plugin

CLASSES = {"cat": 40, "dog": 200}
"""Two classes of 6x6 RGB images, told apart by their brightness."""


@pytest.fixture
def manager(fresh_plugin_manager: attd_core.PluginManager) -> attd_core.PluginManager:
    """attd-core's built-ins and attd-vision, nothing else installed."""
    fresh_plugin_manager.add_plugin(core_plugin, name="core", distribution="attd-core")
    fresh_plugin_manager.add_plugin(vision_plugin, name="vision", distribution="attd-vision")
    return fresh_plugin_manager


def write_images(folder: Path, per_class: int = 4, size: tuple[int, int] = (6, 6)) -> Path:
    """`folder/LABEL/N.png`: RGB images of two classes, slightly different within a class."""
    from PIL import Image

    for label, level in CLASSES.items():
        (folder / label).mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            pixels = np.full((*size, 3), level + 3 * index, dtype=np.uint8)
            pixels[0, 0] = (255, 0, 0)  # one red pixel: RGB, not gray
            Image.fromarray(pixels).save(folder / label / f"{index}.png")
    return folder


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """A flat image folder: `cat/` and `dog/`, four 6x6 RGB PNGs each."""
    return write_images(tmp_path / "pets")


@pytest.fixture
def split_folder(tmp_path: Path) -> Path:
    """`train/` (six per class) and `test/` (two per class) image folders."""
    root = tmp_path / "pets-split"
    write_images(root / "train", per_class=6)
    write_images(root / "test", per_class=2)
    return root


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    """datasets' cache for this test, so tests never write into the user's cache."""
    return tmp_path / "hf-cache"
