"""attd-vision: the vision modality for attd (pixel and patch encoders, image tasks).

Importing the package is light (pydantic only); the torch-backed components load on
first attribute access, as in `attd_core`.
"""

from __future__ import annotations

import importlib
from typing import Any

from attd_vision.options import (
    IMAGE_SIZE_KEY,
    PIXEL_PAD_ID,
    PIXEL_VOCAB_SIZE,
    ImageClassificationOptions,
    PatchesOptions,
    PixelShiftOptions,
    PixelsOptions,
)

__version__ = "0.1.0"

_LAZY = {
    "PixelEncoder": "attd_vision.encoders",
    "PatchEncoder": "attd_vision.encoders",
    "ImageCollator": "attd_vision.collate",
    "collate_encoded": "attd_vision.collate",
    "ImageClassificationTask": "attd_vision.task",
    "load_digits": "attd_vision.data",
    "to_array": "attd_vision.images",
    "GaussianNoise": "attd_vision.shifts",
    "Contrast": "attd_vision.shifts",
    "GaussianBlur": "attd_vision.shifts",
    "Occlusion": "attd_vision.shifts",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'attd_vision' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "IMAGE_SIZE_KEY",
    "PIXEL_PAD_ID",
    "PIXEL_VOCAB_SIZE",
    "ImageClassificationOptions",
    "PatchesOptions",
    "PixelShiftOptions",
    "PixelsOptions",
    "__version__",
    *_LAZY,
]
