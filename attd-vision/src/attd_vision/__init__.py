"""attd-vision: the vision modality for attd (pixel and patch encoders, image tasks).

Importing the package is light (pydantic only); the torch-backed components load on
first attribute access, as in `attd_core`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from attd_core import lazy_exports
from attd_vision.options import (
    IMAGE_SIZE_KEY,
    PIXEL_PAD_ID,
    PIXEL_VOCAB_SIZE,
    FlipOptions,
    ImageClassificationOptions,
    PatchesOptions,
    PixelShiftOptions,
    PixelsOptions,
    RotationOptions,
)

__version__ = "0.1.0"

if TYPE_CHECKING:
    from attd_vision.collate import ImageCollator as ImageCollator
    from attd_vision.collate import collate_encoded as collate_encoded
    from attd_vision.data import load_digits as load_digits
    from attd_vision.encoders import PatchEncoder as PatchEncoder
    from attd_vision.encoders import PixelEncoder as PixelEncoder
    from attd_vision.images import to_array as to_array
    from attd_vision.rotation import Rotation as Rotation
    from attd_vision.rotation import rotated_copies as rotated_copies
    from attd_vision.shifts import Contrast as Contrast
    from attd_vision.shifts import Flip as Flip
    from attd_vision.shifts import GaussianBlur as GaussianBlur
    from attd_vision.shifts import GaussianNoise as GaussianNoise
    from attd_vision.shifts import Occlusion as Occlusion
    from attd_vision.shifts import RandomCrop as RandomCrop
    from attd_vision.task import ImageClassificationTask as ImageClassificationTask


_LAZY_NAMES = lazy_exports(
    globals(),
    {
        "attd_vision.collate": ("ImageCollator", "collate_encoded"),
        "attd_vision.data": ("load_digits",),
        "attd_vision.encoders": ("PatchEncoder", "PixelEncoder"),
        "attd_vision.images": ("to_array",),
        "attd_vision.rotation": ("Rotation", "rotated_copies"),
        "attd_vision.shifts": (
            "Contrast",
            "Flip",
            "GaussianBlur",
            "GaussianNoise",
            "Occlusion",
            "RandomCrop",
        ),
        "attd_vision.task": ("ImageClassificationTask",),
    },
)


__all__ = [
    "IMAGE_SIZE_KEY",
    "PIXEL_PAD_ID",
    "PIXEL_VOCAB_SIZE",
    "FlipOptions",
    "ImageClassificationOptions",
    "PatchesOptions",
    "PixelShiftOptions",
    "PixelsOptions",
    "RotationOptions",
    "__version__",
    *_LAZY_NAMES,
]
