"""Options of LRA's natural-data tasks: attd-text's and attd-vision's, with LRA defaults.

pydantic, attd-core and the light option modules of attd-text and attd-vision only: no
torch, no datasets, so registering the tasks keeps `attd list-plugins` fast.
"""

from __future__ import annotations

from collections.abc import Mapping
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
from attd_text import ByteEncoderOptions, TextClassificationOptions, TokenizerEncoderOptions
from attd_vision import ImageClassificationOptions

IMDB_HUB_ID = "stanfordnlp/imdb"
"""IMDB on the Hugging Face Hub: train 25,000 / test 25,000 (and 50,000 unlabelled)."""
CIFAR10_HUB_ID = "uoft-cs/cifar10"
"""CIFAR-10 on the Hugging Face Hub: columns `img` and `label`, train 50,000 / test 10,000."""
AAN_FILES = {
    "train": "new_aan_pairs.train.tsv",
    "validation": "new_aan_pairs.eval.tsv",
    "test": "new_aan_pairs.test.tsv",
}
"""LRA's AAN files (in `tsv_data/` of its release archive), by attd split."""

_TEXT_ENCODERS: dict[str, type[BaseModel]] = {
    "bytes": ByteEncoderOptions,
    "tokenizer": TokenizerEncoderOptions,
}
Side = Annotated[int, Field(ge=1, le=4096)]
"""An image side: as attd-vision's, at most 4,096 pixels."""
MAX_TOKENS = 2**20
"""Tokens per text, as attd-text's."""
MAX_EXAMPLES = 1_000_000_000
"""Examples a `limit_*` keeps."""


class LraTextOptions(TextClassificationOptions):
    """IMDB as LRA reads it: bytes with EOS, at most 4096 tokens, the test split as validation.

    Every option of `text-classification` works too, so `data_files` (csv, tsv, json,
    jsonl, parquet) replaces the Hub copy with local files.
    """

    dataset: str | None = Field(
        IMDB_HUB_ID,
        min_length=1,
        description=f"A Hugging Face dataset id (default {IMDB_HUB_ID}); unset when "
        "data_files is given.",
    )
    max_length: int | None = Field(
        4096,
        ge=1,
        le=MAX_TOKENS,
        description="Keep at most this many tokens per text, EOS included (LRA 4096).",
    )
    encoder_options: dict[str, Any] = Field(
        default_factory=lambda: {"eos": True},
        validate_default=True,
        description="The encoder's options; default appends EOS as S4 does.",
    )
    validation_split: Literal["test", "source"] = Field(
        "test",
        description="test: validation is the test split, as LRA does (IMDB has no "
        "validation split); source: the dataset's own validation split (or "
        "task.splits.validation), else one carved from train by validation_fraction.",
    )

    @model_validator(mode="before")
    @classmethod
    def _local_files_replace_the_hub(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and data.get("data_files") is not None:
            if "dataset" not in data:
                return {**data, "dataset": None}
        return data

    @model_validator(mode="after")
    def _validation_source(self) -> LraTextOptions:
        if self.validation_split != "test":
            return self
        if "validation" in self.splits:
            raise ValueError(
                "splits.validation and validation_split=test both choose the validation "
                "split; drop splits.validation, or set validation_split to source"
            )
        test = self.splits.get("test", "test")
        if self.data_files is not None and not (
            isinstance(self.data_files, Mapping) and test in self.data_files
        ):
            raise ValueError(
                f"validation_split=test reads the test split as validation, but data_files "
                f"has no {test!r} entry; give data_files as {{train: ..., {test}: ...}}, or "
                "set validation_split to source (validation and test are then carved from train)"
            )
        return self


class LraImageOptions(ImageClassificationOptions):
    """CIFAR-10 as LRA reads it: grayscale 32 x 32, 1024 pixel tokens 0..255, 10 classes.

    The test split is CIFAR-10's; validation is carved from train (validation_fraction
    0.1 of 50,000: 45,000 / 5,000 / 10,000) with `seed`. Every `image-classification`
    option works too: `dataset` may be a local image folder (folder/LABEL/*.png, or
    folder/{train,test}/LABEL/*.png), whose image column is `image`.
    """

    dataset: str = Field(
        CIFAR10_HUB_ID,
        min_length=1,
        description=f"A Hugging Face Hub id (default {CIFAR10_HUB_ID}) or a local image "
        "folder (folder/LABEL/*.png or folder/{train,test}/LABEL/*.png).",
    )
    image_column: str = Field(
        "img",
        min_length=1,
        description=f"Column holding the images: img for {CIFAR10_HUB_ID}, else image "
        "(what an image folder has).",
    )
    image_size: Side | tuple[Side, Side] | None = Field(
        32, description="Resize every image (side, or [height, width]); LRA: 32 (1024 pixels)."
    )
    color: Literal["auto", "grayscale", "rgb"] = Field(
        "grayscale", description="LRA converts to grayscale; rgb keeps 3 values per pixel."
    )
    pixel_dtype: ClassVar[Literal["int", "float"]] = "int"
    """LRA reads pixels as tokens 0..255 (floats with `encoder_options.dtype=float`)."""

    @model_validator(mode="before")
    @classmethod
    def _folders_name_their_column_image(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "image_column" not in data:
            if data.get("dataset", CIFAR10_HUB_ID) != CIFAR10_HUB_ID:
                return {**data, "image_column": "image"}
        return data


class LraRetrievalOptions(BaseModel):
    """AAN citation pairs from LRA's TSV files: do two papers cite each other? (2 classes)

    There is no canonical Hugging Face copy of AAN, so the data are local files only:
    `data_dir` holds LRA's `new_aan_pairs.{train,eval,test}.tsv` (eval is validation).
    Each line is `label, id1, id2, text1, text2`, tab-separated, with no header and no
    quoting (LRA's reader); labels may read `1` or `1.0`.
    """

    # Built on first use, not at import: listing plugins imports every options model.
    # Floats must be finite; counts have upper bounds, stated in the error.
    model_config = ConfigDict(extra="forbid", defer_build=True, allow_inf_nan=False)

    data_dir: Path | None = Field(
        None,
        description="A folder with LRA's new_aan_pairs.{train,eval,test}.tsv (tsv_data/ of "
        "the LRA release archive).",
    )
    files: dict[Literal["train", "validation", "test"], str] = Field(
        default_factory=lambda: dict(AAN_FILES),
        validate_default=True,
        description="attd split -> file name inside data_dir (missing splits keep LRA's names).",
    )
    encoder: str = Field("bytes", min_length=1, description="Encoder plugin: bytes, tokenizer.")
    # encoder_options comes after encoder: its validator reads the encoder's name
    encoder_options: dict[str, Any] = Field(
        default_factory=lambda: {"eos": True},
        validate_default=True,
        description="The encoder's options; default appends EOS to each document (S4).",
    )
    max_length: int | None = Field(
        4000,
        ge=1,
        le=MAX_TOKENS,
        description="Tokens per document at most, EOS included (LRA 4000).",
    )
    unwrap_bytes_literals: bool = Field(
        False,
        description="Texts written as Python bytes literals (b'...') are decoded to their "
        "text first; LRA and S4 read them as they are.",
    )
    head_hidden: int | None = Field(
        None,
        ge=1,
        le=16_384,
        description="Hidden width of the pair head's MLP (default d_model, as S4).",
    )
    seed: int = Field(0, ge=0, le=2**32 - 1, description="Seed of the limit subsets.")
    limit_train: int | None = Field(
        None, ge=1, le=MAX_EXAMPLES, description="Use N train pairs at most."
    )
    limit_validation: int | None = Field(
        None, ge=1, le=MAX_EXAMPLES, description="Validation pairs at most."
    )
    limit_test: int | None = Field(None, ge=1, le=MAX_EXAMPLES, description="Test pairs at most.")
    cache_dir: Path | None = Field(None, description="datasets' cache folder.")

    def limit(self, split: str) -> int | None:
        return getattr(self, f"limit_{split}")

    @field_validator("files")
    @classmethod
    def _every_split_has_a_file(cls, value: dict[str, str]) -> dict[str, str]:
        return {**AAN_FILES, **value}

    @field_validator("encoder_options")
    @classmethod
    def _check_encoder_options(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        """Built-in encoders' options are checked (and their defaults filled in) while the
        config resolves; a plugin encoder's when the task is built."""
        model = _TEXT_ENCODERS.get(info.data.get("encoder", ""))
        if model is None:
            return value
        return filled_options(model, value, f"encoder {info.data['encoder']!r}", exclude_none=True)
