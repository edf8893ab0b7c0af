"""attd-text: the text modality for attd (byte and tokenizer encoders, text tasks).

Importing it stays light (no torch, no datasets): the plugin registry imports this
package to list its components. Torch-backed names load on first attribute access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from attd_core import lazy_exports

__version__ = "0.1.0"

if TYPE_CHECKING:
    from attd_text.classification import TextClassificationTask as TextClassificationTask
    from attd_text.collate import TextCollator as TextCollator
    from attd_text.encoders import ByteEncoder as ByteEncoder
    from attd_text.encoders import TokenizerEncoder as TokenizerEncoder
    from attd_text.encoders import build_encoder as build_encoder
    from attd_text.language_modeling import LanguageModelingTask as LanguageModelingTask
    from attd_text.options import ByteEncoderOptions as ByteEncoderOptions
    from attd_text.options import LanguageModelingOptions as LanguageModelingOptions
    from attd_text.options import TextClassificationOptions as TextClassificationOptions
    from attd_text.options import TokenizerEncoderOptions as TokenizerEncoderOptions


_LAZY_NAMES = lazy_exports(
    globals(),
    {
        "attd_text.classification": ("TextClassificationTask",),
        "attd_text.collate": ("TextCollator",),
        "attd_text.encoders": ("ByteEncoder", "TokenizerEncoder", "build_encoder"),
        "attd_text.language_modeling": ("LanguageModelingTask",),
        "attd_text.options": (
            "ByteEncoderOptions",
            "LanguageModelingOptions",
            "TextClassificationOptions",
            "TokenizerEncoderOptions",
        ),
    },
)


__all__ = ["__version__", *_LAZY_NAMES]
