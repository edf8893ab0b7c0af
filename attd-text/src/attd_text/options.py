"""Option models of attd-text's encoders and tasks.

pydantic only (no torch, no datasets), so registering them keeps `attd list-plugins` fast.
Built-in encoder options are checked here too, so a typo in `task.encoder_options` is
reported while the run config resolves, before anything is loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from attd_core import filled_options

SPLITS = ("train", "validation", "test")
"""The splits every attd task serves."""

FORMATS = ("csv", "tsv", "json", "parquet", "text")
"""Local file formats, each read by a `datasets` packaged builder (tsv is csv with tabs)."""

MAX_TOKENS = 2**20
"""Tokens per text or block: 256x LRA's 4,096, the longest contexts Mamba is tried on."""
MAX_EXAMPLES = 1_000_000_000
"""Examples a `limit_*` keeps."""
MAX_CLASSES = 1_000_000
"""Classes of a classification head."""
MAX_SEED = 2**32 - 1
"""What numpy's and torch's generators all take."""


class _Options(BaseModel):
    # Built on first use, not at import: listing plugins imports every options model.
    # Floats must be finite; counts have upper bounds (MAX_*), stated in the error.
    model_config = ConfigDict(extra="forbid", defer_build=True, allow_inf_nan=False)


class _EncoderOptions(_Options):
    eos: bool = Field(False, description="Append an end-of-sequence token.")
    cls: bool = Field(
        False,
        description="Prepend a CLS token, read by model.pooling=cls (a bidirectional or "
        "attention backbone); a causal Mamba sees the whole text at its end: use eos "
        "with model.pooling=last.",
    )
    max_length: int | None = Field(
        None, ge=1, le=MAX_TOKENS, description="Keep at most this many tokens, specials included."
    )


class ByteEncoderOptions(_EncoderOptions):
    """UTF-8 bytes: ids 0 pad, 1 eos, 2 cls, 3 + b for byte b (259 ids)."""


class TokenizerEncoderOptions(_EncoderOptions):
    """A Hugging Face `tokenizers` tokenizer from a tokenizer.json file or a hub id."""

    path: Path | None = Field(None, description="A tokenizer.json file (works offline).")
    hub_id: str | None = Field(
        None, min_length=1, description="A Hub repo with a tokenizer.json (bert-base-uncased)."
    )
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit).")
    add_special_tokens: bool = Field(
        False, description="Let the tokenizer's post-processor add its own specials."
    )
    pad_token: str | None = Field(
        None, description="The pad token; default the first of [PAD], <pad> found, else a new id."
    )
    eos_token: str | None = Field(
        None, description="The EOS token; default [SEP], </s>, <|endoftext|>... or a new id."
    )
    cls_token: str | None = Field(
        None, description="The CLS token; default [CLS], <s>, <cls>... or a new id."
    )

    @model_validator(mode="after")
    def _one_source(self) -> TokenizerEncoderOptions:
        if (self.path is None) == (self.hub_id is None):
            raise ValueError("give exactly one of path (a tokenizer.json file) or hub_id")
        return self


BUILT_IN_ENCODERS: dict[str, type[_EncoderOptions]] = {
    "bytes": ByteEncoderOptions,
    "tokenizer": TokenizerEncoderOptions,
}


class _DataOptions(_Options):
    """Where a text task's data come from: a Hub dataset or local files, via `datasets`."""

    dataset: str | None = Field(
        None,
        min_length=1,
        description="A Hugging Face dataset id (stanfordnlp/imdb), loaded with datasets.",
    )
    subset: str | None = Field(
        None, description="The dataset's subset (configuration), e.g. sst2 of nyu-mll/glue."
    )
    data_files: str | list[str] | dict[str, str | list[str]] | None = Field(
        None,
        description="Local files: one path or list (the train split) or split -> path(s); "
        "csv, tsv, json, jsonl, parquet (txt for language-modeling).",
    )
    format: Literal["csv", "tsv", "json", "parquet", "text"] | None = Field(
        None, description="Format of data_files; default from their extension."
    )
    splits: dict[Literal["train", "validation", "test"], str] = Field(
        default_factory=dict,
        description="attd split -> the dataset's split name, e.g. {validation: dev}.",
    )
    validation_fraction: float = Field(
        0.1, ge=0, lt=1, description="Carved from train when there is no validation split."
    )
    test_fraction: float = Field(
        0.1, ge=0, lt=1, description="Carved from train when there is no test split."
    )
    seed: int = Field(
        0, ge=0, le=MAX_SEED, description="Seed of carved splits and of limit subsets."
    )
    limit_train: int | None = Field(
        None, ge=1, le=MAX_EXAMPLES, description="Use N train examples at most."
    )
    limit_validation: int | None = Field(
        None, ge=1, le=MAX_EXAMPLES, description="Validation examples at most."
    )
    limit_test: int | None = Field(
        None, ge=1, le=MAX_EXAMPLES, description="Test examples at most."
    )
    cache_dir: Path | None = Field(None, description="datasets' cache folder.")

    def limit(self, split: str) -> int | None:
        return getattr(self, f"limit_{split}")


class TextClassificationOptions(_DataOptions):
    """A text column and a label column from any dataset `datasets` can read."""

    text_column: str = Field("text", min_length=1, description="Column holding the text.")
    label_column: str = Field("label", min_length=1, description="Column holding the label.")
    labels: list[str] | None = Field(
        None,
        min_length=2,
        description="Label names in id order; string labels map to their index "
        "(default: a ClassLabel's names, or the train split's sorted string labels).",
    )
    num_classes: int | None = Field(
        None,
        ge=2,
        le=MAX_CLASSES,
        description="Number of classes (default inferred from the labels).",
    )
    encoder: str = Field("bytes", min_length=1, description="Encoder plugin: bytes, tokenizer.")
    # encoder_options comes after encoder: its validator reads the encoder's name
    encoder_options: dict[str, Any] = Field(
        default_factory=dict, description="The encoder's options (eos, cls, path, ...)."
    )
    max_length: int | None = Field(
        1024,
        ge=1,
        le=MAX_TOKENS,
        description="Keep at most this many tokens per text, specials included.",
    )

    @model_validator(mode="after")
    def _check(self) -> TextClassificationOptions:
        _one_source(self)
        if self.labels is not None and len(set(self.labels)) != len(self.labels):
            raise ValueError(f"labels repeat a name: {self.labels}")
        return self

    @field_validator("encoder_options")
    @classmethod
    def _check_encoder_options(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        """Built-in encoders' options are checked (and their defaults filled in, so
        config.yaml shows them) while the config resolves; a plugin's when it is built."""
        model = BUILT_IN_ENCODERS.get(info.data.get("encoder", ""))
        if model is None:
            return value
        return filled_options(model, value, f"encoder {info.data['encoder']!r}", exclude_none=True)


class LanguageModelingOptions(_DataOptions):
    """Byte-level next-token prediction on text cut into blocks of `block_size` bytes."""

    path: Path | None = Field(
        None, description="A local file, read as bytes and split train/validation/test in order."
    )
    text_column: str = Field(
        "text", min_length=1, description="Column joined into one text (dataset, data_files)."
    )
    block_size: int = Field(256, ge=2, le=MAX_TOKENS, description="Bytes per example.")
    context_fraction: float = Field(
        0.5,
        ge=0,
        lt=1,
        description="Dynamic evaluation: TTA adapts on this leading fraction of each block "
        "and only the bytes after it are scored (0: no context, every byte scored).",
    )
    test_fraction: float = Field(
        0.05, ge=0, lt=1, description="Tail of the text kept for test when no test split."
    )
    validation_fraction: float = Field(
        0.05, ge=0, lt=1, description="Text before the test part kept for validation."
    )

    @model_validator(mode="after")
    def _check(self) -> LanguageModelingOptions:
        _one_source(self, extra="path")
        return self


def _one_source(options: _DataOptions, extra: str | None = None) -> None:
    fields = ["dataset", "data_files", *([extra] if extra else [])]
    given = [name for name in fields if getattr(options, name) is not None]
    if len(given) != 1:
        listed = " or ".join(fields)
        raise ValueError(
            f"give exactly one of {listed} (got {', '.join(given) or 'none'}): a Hub id such "
            "as stanfordnlp/imdb, or local files"
        )
    if options.validation_fraction + options.test_fraction >= 1:
        raise ValueError("validation_fraction + test_fraction must leave some train data")
