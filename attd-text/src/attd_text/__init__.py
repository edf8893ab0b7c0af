"""attd-text: the text modality for attd (byte and tokenizer encoders, text tasks).

Importing it stays light (no torch, no datasets): the plugin registry imports this
package to list its components. Torch-backed names load on first attribute access.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "ByteEncoder": "attd_text.encoders",
    "TokenizerEncoder": "attd_text.encoders",
    "build_encoder": "attd_text.encoders",
    "TextCollator": "attd_text.collate",
    "TextClassificationTask": "attd_text.classification",
    "LanguageModelingTask": "attd_text.language_modeling",
    "ByteEncoderOptions": "attd_text.options",
    "TokenizerEncoderOptions": "attd_text.options",
    "TextClassificationOptions": "attd_text.options",
    "LanguageModelingOptions": "attd_text.options",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'attd_text' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = ["__version__", *_LAZY]
