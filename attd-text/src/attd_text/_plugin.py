"""attd-text's registrations: light, so `attd list-plugins` imports no torch or datasets."""

from __future__ import annotations

from collections.abc import Callable

from attd_core import EncoderSpec, PluginSpec, TaskSpec, hookimpl
from attd_text.options import (
    ByteEncoderOptions,
    LanguageModelingOptions,
    TextClassificationOptions,
    TokenizerEncoderOptions,
)

SPECS: tuple[PluginSpec, ...] = (
    EncoderSpec(
        name="bytes",
        summary="UTF-8 bytes: 256 byte ids plus pad, EOS and CLS; no vocabulary needed",
        factory="attd_text.encoders:ByteEncoder",
        config=ByteEncoderOptions,
    ),
    EncoderSpec(
        name="tokenizer",
        summary="A Hugging Face tokenizers tokenizer (tokenizer.json or Hub id; extra: tokenizers)",
        factory="attd_text.encoders:TokenizerEncoder",
        config=TokenizerEncoderOptions,
    ),
    TaskSpec(
        name="text-classification",
        summary="Text and label columns of a Hub dataset or csv/json/parquet files",
        factory="attd_text.classification:TextClassificationTask",
        config=TextClassificationOptions,
    ),
    TaskSpec(
        name="language-modeling",
        summary="Byte-level next-token prediction on a text file or Hub text dataset",
        factory="attd_text.language_modeling:LanguageModelingTask",
        config=LanguageModelingOptions,
        # Per-token logits (B, L, V): the entropy objectives need (B, C) class logits,
        # next-token cross-entropy on the test text itself is the natural inner loss.
        run_defaults={"eval.objective": "next-token"},
    ),
)


@hookimpl
def attd_register(register: Callable[[PluginSpec], None]) -> None:
    for spec in SPECS:
        register(spec)
