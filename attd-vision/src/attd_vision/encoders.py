"""Image encoders: a raw image to `(tokens, mask, metadata)`.

`pixels` reads the image row-major, one pixel after another: integer tokens 0..255
(vocabulary 257, pad id 256) or one float token of `channels` values per pixel.
`patches` cuts it into non-overlapping P x P patches, read in row-major patch order,
each flattened row-major with channels last into `P * P * channels` floats.
Floats are `(value / 255 - mean) / std` per channel. The mask is all True (an image has
no padding); metadata holds the encoded image's `height`, `width` and `channels`, and
for `pixels` (one token per pixel) also `image_size` = `(height, width)`, which the
collator stacks into `Batch.aux["image_size"]` for the pixel shifts.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from pydantic import ValidationError
from torch import Tensor

from attd_core import ConfigError, InputSpec, PluginManager, describe_validation_error
from attd_vision.images import to_array
from attd_vision.options import (
    IMAGE_SIZE_KEY,
    PIXEL_PAD_ID,
    PIXEL_VOCAB_SIZE,
    PatchesOptions,
    PixelsOptions,
)


class _ImageEncoder:
    """Shared by both encoders: color, size and normalisation."""

    options: PixelsOptions | PatchesOptions

    @property
    def channels(self) -> int:
        """Channels of the encoded image: 1 (grayscale) or 3 (RGB)."""
        return 1 if self.options.color == "grayscale" else 3

    @property
    def pad_value(self) -> int | float:
        """What the collator pads a shorter sequence with."""
        spec = self.input_spec
        return spec.fill_id if spec.vocab_size is not None else 0.0

    input_spec: InputSpec

    def pixels(self, raw: Any) -> np.ndarray:
        """The image as `(height, width, channels)` uint8, converted and resized."""
        options = self.options
        return to_array(raw, options.color, options.size, options.resample)

    def normalise(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 `(..., channels)` to float32 `(value / 255 - mean) / std`."""
        mean = np.asarray(self.options.mean, dtype=np.float32)
        std = np.asarray(self.options.std, dtype=np.float32)
        return ((pixels.astype(np.float32) / 255.0 - mean) / std).astype(np.float32)

    @staticmethod
    def _metadata(pixels: np.ndarray) -> dict[str, Any]:
        height, width, channels = pixels.shape
        return {"height": height, "width": width, "channels": channels}


class PixelEncoder(_ImageEncoder):
    """One token per pixel (per channel value for integer RGB), row-major."""

    def __init__(self, options: PixelsOptions | None = None) -> None:
        self.options = options or PixelsOptions()
        if self.options.dtype == "int":
            self.input_spec = InputSpec(vocab_size=PIXEL_VOCAB_SIZE, pad_id=PIXEL_PAD_ID)
        else:
            self.input_spec = InputSpec(channels=self.channels)

    def sequence_length(self, height: int, width: int) -> int:
        """Tokens of an encoded `height x width` image."""
        per_pixel = self.channels if self.options.dtype == "int" else 1
        return height * width * per_pixel

    def encode(self, raw: Any) -> tuple[Tensor, Tensor, dict[str, Any]]:
        """`(L,)` long tokens or `(L, channels)` floats, an `(L,)` all-True mask, metadata.

        Metadata also gives `image_size` = `(height, width)`: every token is one pixel
        (or one channel value of a pixel for integer RGB), so pixel shifts can use it.
        """
        pixels = self.pixels(raw)
        if self.options.dtype == "int":
            tokens = torch.from_numpy(pixels.reshape(-1).astype(np.int64))
        else:
            tokens = torch.from_numpy(self.normalise(pixels).reshape(-1, pixels.shape[-1]))
        metadata = self._metadata(pixels)
        metadata[IMAGE_SIZE_KEY] = (metadata["height"], metadata["width"])
        return tokens, torch.ones(tokens.shape[0], dtype=torch.bool), metadata


class PatchEncoder(_ImageEncoder):
    """Non-overlapping P x P patches as `P * P * channels` floats, row-major patch order."""

    def __init__(self, options: PatchesOptions | None = None) -> None:
        self.options = options or PatchesOptions()
        self.patch_size = self.options.patch_size
        self.input_spec = InputSpec(channels=self.patch_size**2 * self.channels)

    def sequence_length(self, height: int, width: int) -> int:
        """Patches of an encoded `height x width` image."""
        self._check_divisible(height, width)
        return (height // self.patch_size) * (width // self.patch_size)

    def _check_divisible(self, height: int, width: int) -> None:
        if height % self.patch_size or width % self.patch_size:
            raise ConfigError(
                f"patch_size {self.patch_size} does not divide the {height}x{width} image; "
                "resize the images (size / task.image_size) to a multiple of it"
            )

    def encode(self, raw: Any) -> tuple[Tensor, Tensor, dict[str, Any]]:
        """`(num_patches, P * P * channels)` floats, an all-True mask, metadata.

        Metadata also gives the patch grid: `grid_height` x `grid_width` patches.
        """
        pixels = self.pixels(raw)
        height, width, channels = pixels.shape
        self._check_divisible(height, width)
        size = self.patch_size
        rows, cols = height // size, width // size
        grid = self.normalise(pixels).reshape(rows, size, cols, size, channels)
        patches = grid.transpose(0, 2, 1, 3, 4).reshape(rows * cols, size * size * channels)
        tokens = torch.from_numpy(np.ascontiguousarray(patches))
        metadata = {**self._metadata(pixels), "patch_size": size}
        metadata.update(grid_height=rows, grid_width=cols)
        return tokens, torch.ones(tokens.shape[0], dtype=torch.bool), metadata


ENCODER_CLASSES: dict[str, type[PixelEncoder] | type[PatchEncoder]] = {
    "pixels": PixelEncoder,
    "patches": PatchEncoder,
}


def build_encoder(
    name: str,
    options: dict[str, Any] | None = None,
    *,
    color: str = "grayscale",
    size: int | tuple[int, int] | None = None,
    resample: str = "bilinear",
    manager: PluginManager | None = None,
) -> Any:
    """The encoder `name`: attd-vision's built directly with the task's color and size;
    other names are `encoder` plugins of `manager` (the one that creates the task; built
    with `options` only), which then get `(height, width, channels)` uint8 arrays,
    already converted."""
    options = dict(options or {})
    if name not in ENCODER_CLASSES:
        if manager is None:
            raise ConfigError(
                f"encoder {name!r} is a plugin: create the task through a PluginManager "
                "(manager.create), so that it can build the encoder"
            )
        encoder = manager.create("encoder", name, options)
        missing = [attr for attr in ("encode", "input_spec") if not hasattr(encoder, attr)]
        if missing:
            raise ConfigError(
                f"encoder {name!r} lacks {', '.join(missing)}: an image task needs encode() "
                "and input_spec"
            )
        return encoder
    model = PatchesOptions if name == "patches" else PixelsOptions
    try:
        validated = model.model_validate(
            {**options, "color": color, "size": size, "resample": resample}
        )
    except ValidationError as exc:
        problems = describe_validation_error(exc)
        raise ConfigError(f"invalid options for encoder {name!r}: {problems}") from None
    return ENCODER_CLASSES[name](validated)
