"""Option models of attd-vision's encoders and task.

They import pydantic only, so registering them (and `attd list-plugins`) loads neither
torch nor datasets, PIL or scikit-learn.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from attd_core import filled_options

Color = Literal["grayscale", "rgb"]
Resample = Literal["nearest", "box", "bilinear", "hamming", "bicubic", "lanczos"]
MAX_SIDE = 4_096
"""Pixels per image side: 16.7 million pixel tokens, 16x ImageNet's 224 x 224 per side."""
MAX_EXAMPLES = 1_000_000_000
"""Images a `limit_*` keeps."""
MAX_SEED = 2**32 - 1
"""What numpy's and torch's generators all take."""
Side = Annotated[int, Field(ge=1, le=MAX_SIDE)]
ImageSize = Side | tuple[Side, Side]
"""One number for a square image, or `[height, width]`."""

NormValue = float | list[float]

PIXEL_VOCAB_SIZE = 257
"""Integer pixel tokens: the values 0..255, plus the pad token."""
PIXEL_PAD_ID = 256
"""The pad token of integer pixel sequences (never a pixel value)."""
IMAGE_SIZE_KEY = "image_size"
"""`Batch.aux` key of each sample's image geometry: a `(B, 2)` long tensor of
`(height, width)`, present when every token is one pixel (the `pixels` encoder).
`collate_encoded` fills it from the encoders' metadata; a task that collates its own
pixel batches may set it itself. Pixel shifts (`gaussian-noise`, ...) need it."""


class _Options(BaseModel):
    # Built on first use, not at import: listing plugins imports every options model.
    # Floats must be finite; counts have upper bounds (MAX_*), stated in the error.
    model_config = ConfigDict(extra="forbid", defer_build=True, allow_inf_nan=False)


def _check_norm(values: dict[str, NormValue], channels: int | None) -> None:
    """`mean` and `std` hold one value, or one per channel; every std is positive."""
    for key, value in values.items():
        listed = value if isinstance(value, list) else [value]
        allowed = (1, 3) if channels is None else sorted({1, channels})
        if len(listed) not in allowed:
            wanted = " or ".join(str(n) for n in allowed)
            raise ValueError(f"{key} needs {wanted} value(s), got {len(listed)}: {value!r}")
        if key == "std" and any(item <= 0 for item in listed):
            raise ValueError(f"std must be positive, got {value!r}")


class _ImageOptions(_Options):
    """How a raw image becomes a `(height, width, channels)` array of 0..255 values."""

    color: Color = Field(
        "grayscale", description="Convert every image to grayscale (1 channel) or RGB (3)."
    )
    size: ImageSize | None = Field(
        None, description="Resize to this size (side, or [height, width]); None keeps it."
    )
    resample: Resample = Field("bilinear", description="Resampling filter used to resize.")

    @model_validator(mode="after")
    def _norm_per_channel(self) -> _ImageOptions:
        values = {key: getattr(self, key) for key in ("mean", "std") if hasattr(self, key)}
        _check_norm(values, 1 if self.color == "grayscale" else 3)
        return self


class _Normalisation(_Options):
    mean: NormValue = Field(
        0.5, description="Floats are (value / 255 - mean) / std; one value or one per channel."
    )
    std: NormValue = Field(0.5, description="See mean; the default maps 0..255 to [-1, 1].")


class PixelsSettings(_Normalisation):
    """The `pixels` encoder's own options (the task sets color and size)."""

    dtype: Literal["int", "float"] = Field(
        "int", description="int: tokens 0..255 (vocab 257, pad 256); float: normalised channels."
    )


class PatchesSettings(_Normalisation):
    """The `patches` encoder's own options (the task sets color and size)."""

    patch_size: int = Field(4, ge=1, le=MAX_SIDE, description="Side P of the square patches.")


class PixelsOptions(PixelsSettings, _ImageOptions):
    """An image as its pixels in row-major order.

    `dtype=int`: tokens 0..255 (RGB interleaves the channels: R, G, B of the first pixel,
    then the next pixel), vocabulary 257 with pad id 256. `dtype=float`: one token per
    pixel with `channels` (1 or 3) normalised floats.
    """


class PatchesOptions(PatchesSettings, _ImageOptions):
    """Non-overlapping P x P patches in row-major patch order, each flattened row-major
    with channels last into `P * P * channels` normalised floats."""


BUILT_IN_ENCODERS: dict[str, type[_Normalisation]] = {
    "pixels": PixelsSettings,
    "patches": PatchesSettings,
}
"""attd-vision's encoders and the options a task's `encoder_options` may give them."""


class PixelShiftOptions(_Options):
    """A pixel-level corruption of the test images (needs the `pixels` encoder)."""

    positional: ClassVar[tuple[str, ...]] = ("severity",)

    severity: int = Field(3, ge=1, le=5, description="1 (mild) to 5 (severe), as ImageNet-C.")


class FlipOptions(_Options):
    """A left-right mirror of some test images (needs the `pixels` encoder)."""

    positional: ClassVar[tuple[str, ...]] = ("probability",)

    probability: float = Field(0.5, ge=0, le=1, description="Chance that an image is mirrored.")


class RotationOptions(_Options):
    """TTT's rotation prediction: each image at four quarter turns, a 4-way head."""


class ImageClassificationOptions(_Options):
    """Where the images come from, how they are split and how they are encoded."""

    dataset: str = Field(
        "digits",
        min_length=1,
        description="digits (scikit-learn's bundled 8x8 digits), a local image folder "
        "(folder/LABEL/*.png or folder/{train,test}/LABEL/*.png) or a Hugging Face Hub id.",
    )
    subset: str | None = Field(None, description="The Hub dataset's subset (configuration).")
    splits: dict[Literal["train", "validation", "test"], str] = Field(
        default_factory=dict,
        description="attd split -> the dataset's split name, e.g. {validation: valid}.",
    )
    image_column: str = Field("image", min_length=1, description="Column holding the images.")
    label_column: str = Field("label", min_length=1, description="Column holding the labels.")
    image_size: ImageSize | None = Field(
        None, description="Resize every image (side, or [height, width]); None keeps sizes."
    )
    color: Literal["auto", "grayscale", "rgb"] = Field(
        "auto", description="auto: grayscale if the first training image is, else RGB."
    )
    resample: Resample = Field("bilinear", description="Resampling filter used to resize.")
    encoder: str = Field(
        "pixels", min_length=1, description="Encoder plugin: pixels (default) or patches."
    )
    # encoder_options comes after encoder: its validator reads the encoder's name
    encoder_options: dict[str, Any] = Field(
        default_factory=dict,
        validate_default=True,
        description="The encoder's options: pixels dtype=float (default here; int gives "
        "tokens 0..255), patches patch_size; mean and std for floats.",
    )
    validation_fraction: float = Field(
        0.1, gt=0, lt=1, description="Share of train held out as validation when there is none."
    )
    test_fraction: float = Field(
        0.2, gt=0, lt=1, description="Share of the data held out as test when there is none."
    )
    seed: int = Field(
        0, ge=0, le=MAX_SEED, description="Seed of held-out splits, shuffles and limits."
    )
    limit_train: int | None = Field(
        None, ge=1, le=MAX_EXAMPLES, description="Use N training images at most."
    )
    limit_validation: int | None = Field(
        None, ge=1, le=MAX_EXAMPLES, description="Validation images at most."
    )
    limit_test: int | None = Field(None, ge=1, le=MAX_EXAMPLES, description="Test images at most.")
    cache_dir: Path | None = Field(
        None, description="datasets' cache folder (its default if None)."
    )

    pixel_dtype: ClassVar[Literal["int", "float"]] = "float"
    """The `pixels` encoder's dtype when `encoder_options` gives none. Floats, because a
    corrupted float pixel is still a value the encoder was trained on, while integer tokens
    see only the grey levels of the training images (17 for digits): noise or blur would
    produce token ids whose embeddings never trained."""

    def limit(self, split: str) -> int | None:
        return getattr(self, f"limit_{split}")

    @field_validator("encoder_options")
    @classmethod
    def _check_encoder_options(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        """Built-in encoders' options are checked (and their defaults filled in, so
        config.yaml shows them) while the config resolves; a plugin's when it is built."""
        encoder = info.data.get("encoder", "")
        model = BUILT_IN_ENCODERS.get(encoder)
        if model is None:
            return value
        if encoder == "pixels":
            value = {"dtype": cls.pixel_dtype, **value}
        return filled_options(model, value, f"encoder {info.data['encoder']!r}")

    @model_validator(mode="after")
    def _norm_fits_the_color(self) -> ImageClassificationOptions:
        if self.encoder in BUILT_IN_ENCODERS:
            channels = {"auto": None, "grayscale": 1, "rgb": 3}[self.color]
            values = {key: self.encoder_options[key] for key in ("mean", "std")}
            try:
                _check_norm(values, channels)
            except ValueError as exc:
                raise ValueError(f"encoder_options.{exc}") from None
        return self
