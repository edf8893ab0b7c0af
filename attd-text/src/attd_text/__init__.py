"""attd-text: the text modality for attd (byte and tokenizer encoders, text tasks).

The package is laid out and installable; its encoders and tasks are not written yet.
"""

__version__ = "0.1.0"
