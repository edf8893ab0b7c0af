"""Raw images in any common form to `(height, width, channels)` uint8 arrays.

A raw image may be a PIL image, a file path, a `{"bytes": ..., "path": ...}` dict (what
a `datasets.Image(decode=False)` column holds), or an array-like: `(H, W)`, `(H, W, C)`
or `(C, H, W)` with C in 1, 3, 4. Integer arrays hold values 0..255; float arrays are
intensities in [0, 1]. Color conversion and resizing go through PIL, so grayscale is
PIL's ITU-R 601-2 luma (L = R * 299/1000 + G * 587/1000 + B * 114/1000).
"""

from __future__ import annotations

import io
import os
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from attd_core import ConfigError

_MODES = {"grayscale": "L", "rgb": "RGB"}
_ARRAY_MODES = {1: "L", 3: "RGB", 4: "RGBA"}
GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"})
"""PIL modes that hold one intensity per pixel (alpha aside)."""


def open_image(source: Any, name: str) -> Image.Image:
    """Open and decode an image file (path or file object); errors name the file."""
    try:
        with Image.open(source) as image:
            image.load()
            return image
    except FileNotFoundError:
        raise ConfigError(f"image file {name!r} not found") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ConfigError(f"cannot read image {name!r}: {exc}") from None


def to_pil(raw: Any) -> Image.Image:
    """The raw image as a PIL image (no conversion of its mode or size)."""
    if isinstance(raw, Image.Image):
        return raw
    if isinstance(raw, dict) and ("bytes" in raw or "path" in raw):
        data, path = raw.get("bytes"), raw.get("path")
        if data is not None:
            return open_image(io.BytesIO(data), path or "<bytes>")
        if path is None:
            raise ConfigError("an image entry has neither bytes nor a path")
        return open_image(path, str(path))
    if isinstance(raw, str | os.PathLike):
        return open_image(raw, str(raw))
    return _array_to_pil(_as_hwc_uint8(raw))


def image_size(raw: Any) -> tuple[int, int]:
    """`(height, width)` of the raw image; files are read for their header only."""
    if isinstance(raw, Image.Image):
        return raw.height, raw.width
    if isinstance(raw, dict | str | os.PathLike):
        if isinstance(raw, dict) and raw.get("bytes") is not None:
            source, name = io.BytesIO(raw["bytes"]), raw.get("path") or "<bytes>"
        else:
            path = raw.get("path") if isinstance(raw, dict) else raw
            if path is None:
                raise ConfigError("an image entry has neither bytes nor a path")
            source, name = path, str(path)
        try:
            with Image.open(source) as image:
                return image.height, image.width
        except FileNotFoundError:
            raise ConfigError(f"image file {name!r} not found") from None
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
            raise ConfigError(f"cannot read image {name!r}: {exc}") from None
    height, width, _ = _as_hwc_uint8(raw).shape
    return height, width


def is_grayscale(raw: Any) -> bool:
    """Whether the raw image holds one intensity per pixel."""
    if isinstance(raw, Image.Image | dict | str | os.PathLike):
        return to_pil(raw).mode in GRAY_MODES
    return _as_hwc_uint8(raw).shape[-1] == 1


def to_array(
    raw: Any,
    color: str = "grayscale",
    size: int | tuple[int, int] | None = None,
    resample: str = "bilinear",
) -> np.ndarray:
    """`(height, width, channels)` uint8: the image in `color`, resized to `size` if given.

    `size` is one side (a square) or `(height, width)`; channels is 1 for grayscale, 3
    for RGB. Arrays already in that color and size skip PIL entirely.
    """
    if color not in _MODES:
        raise ConfigError(f"color must be one of {', '.join(_MODES)}, got {color!r}")
    target = None if size is None else ((size, size) if isinstance(size, int) else tuple(size))
    channels = 1 if color == "grayscale" else 3
    if not isinstance(raw, Image.Image | dict | str | os.PathLike):
        array = _as_hwc_uint8(raw)
        if array.shape[-1] == channels and (target is None or array.shape[:2] == target):
            return array
        image = _array_to_pil(array)
    else:
        image = to_pil(raw)
    mode = _MODES[color]
    if image.mode != mode:
        image = image.convert(mode)
    if target is not None and (image.height, image.width) != target:
        filter_ = getattr(Image.Resampling, resample.upper())
        image = image.resize((target[1], target[0]), resample=filter_)
    array = np.asarray(image, dtype=np.uint8)
    return array[:, :, None] if array.ndim == 2 else array


def _array_to_pil(array: np.ndarray) -> Image.Image:
    return Image.fromarray(array[:, :, 0] if array.shape[-1] == 1 else array)


def _as_hwc_uint8(raw: Any) -> np.ndarray:
    """An array-like image as `(H, W, C)` uint8, C in 1, 3, 4."""
    try:
        array = np.asarray(raw)
    except Exception as exc:  # noqa: BLE001 - whatever it is, it is not an image
        raise ConfigError(f"not an image: {type(raw).__name__} ({exc})") from None
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise ConfigError(f"not an image: {type(raw).__name__} of dtype {array.dtype}")
    if array.ndim == 2:
        array = array[:, :, None]
    elif array.ndim == 3 and array.shape[-1] not in _ARRAY_MODES and array.shape[0] in (1, 3):
        array = np.moveaxis(array, 0, -1)  # (C, H, W), as torch keeps images
    if array.ndim != 3 or array.shape[-1] not in _ARRAY_MODES or 0 in array.shape:
        raise ConfigError(
            f"not an image: array of shape {tuple(np.shape(raw))}; expected (H, W), "
            "(H, W, C) or (C, H, W) with C in 1, 3, 4"
        )
    if array.dtype == bool:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ConfigError("not an image: float array with non-finite values")
        return np.round(np.clip(array, 0.0, 1.0) * 255).astype(np.uint8)
    if array.min() < 0 or array.max() > 255:
        raise ConfigError(
            f"integer image values must lie in 0..255, got {array.min()}..{array.max()}"
        )
    return array.astype(np.uint8, copy=False)
