"""Text encoders: raw text to token ids (plain lists, no torch), with the specials attd needs.

Both follow `attd_core.Encoder`: `encode(raw) -> (tokens, mask, metadata)`, and expose
`vocab_size`, `pad_id` and `input_spec`. Truncation keeps the CLS and EOS tokens, so a
`last` (or first-token) pooling always sees them. `tokenizers` is an optional extra,
imported only when a tokenizer encoder is built.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from attd_core import ConfigError, InputSpec, PluginManager, describe_validation_error
from attd_text.options import (
    BUILT_IN_ENCODERS,
    ByteEncoderOptions,
    TokenizerEncoderOptions,
)

PAD_ID, EOS_ID, CLS_ID = 0, 1, 2
BYTE_OFFSET = 3
"""Byte `b` is token `BYTE_OFFSET + b`; ids below it are the specials."""
BYTE_VOCAB_SIZE = BYTE_OFFSET + 256

TOKENIZERS_EXTRA = "pip install 'attd-text[tokenizers]'"


class _SpecialsMixin:
    """CLS/EOS placement and truncation shared by the encoders."""

    eos_id: int | None
    cls_id: int | None
    max_length: int | None
    vocab_size: int
    pad_id: int

    @property
    def input_spec(self) -> InputSpec:
        return InputSpec(vocab_size=self.vocab_size, pad_id=self.pad_id)

    @property
    def num_specials(self) -> int:
        return (self.eos_id is not None) + (self.cls_id is not None)

    def _finish(self, body: list[int]) -> tuple[list[int], list[bool], dict[str, Any]]:
        budget = None if self.max_length is None else max(0, self.max_length - self.num_specials)
        truncated = budget is not None and len(body) > budget
        if truncated:
            body = body[:budget]
        head = [] if self.cls_id is None else [self.cls_id]
        tail = [] if self.eos_id is None else [self.eos_id]
        tokens = (head + body + tail)[: self.max_length]
        metadata = {"length": len(tokens), "truncated": truncated}
        return tokens, [True] * len(tokens), metadata

    def _capped(self, body_length: int) -> int:
        total = body_length + self.num_specials
        return total if self.max_length is None else min(total, self.max_length)


class ByteEncoder(_SpecialsMixin):
    """UTF-8 bytes, so any text (any language, emoji, markup) encodes with no vocabulary.

    Ids: 0 pad, 1 EOS, 2 CLS, and `3 + b` for byte `b`: 259 in all. `bytes` input is
    taken as is, `str` is UTF-8 encoded.
    """

    def __init__(self, options: ByteEncoderOptions | None = None) -> None:
        self.options = options or ByteEncoderOptions()
        self.vocab_size, self.pad_id = BYTE_VOCAB_SIZE, PAD_ID
        self.eos_id = EOS_ID if self.options.eos else None
        self.cls_id = CLS_ID if self.options.cls else None
        self.max_length = self.options.max_length

    @staticmethod
    def to_bytes(raw: Any) -> bytes:
        if isinstance(raw, str):
            return raw.encode("utf-8")
        if isinstance(raw, (bytes, bytearray, memoryview)):
            return bytes(raw)
        raise TypeError(f"the bytes encoder takes str or bytes, got {type(raw).__name__}")

    def encode(self, raw: str | bytes) -> tuple[list[int], list[bool], dict[str, Any]]:
        data = self.to_bytes(raw)
        tokens, mask, metadata = self._finish([BYTE_OFFSET + b for b in data])
        metadata["num_bytes"] = len(data)
        return tokens, mask, metadata

    def length(self, raw: str | bytes) -> int:
        """`len(encode(raw)[0])`, without building the list."""
        return self._capped(len(self.to_bytes(raw)))

    def decode(self, ids: Sequence[int]) -> str:
        """The text of the byte tokens in `ids` (specials and padding dropped)."""
        data = bytes(i - BYTE_OFFSET for i in ids if BYTE_OFFSET <= i < BYTE_VOCAB_SIZE)
        return data.decode("utf-8", errors="replace")


_PAD_NAMES = ("[PAD]", "<pad>", "<|pad|>", "<|padding|>", "<PAD>")
_EOS_NAMES = ("[SEP]", "</s>", "<|endoftext|>", "<eos>", "[EOS]", "<|eos|>")
_CLS_NAMES = ("[CLS]", "<s>", "<cls>", "[BOS]", "<bos>", "<|startoftext|>")


def import_tokenizer_class() -> Any:
    """`tokenizers.Tokenizer`, or a ConfigError saying which extra to install."""
    try:
        from tokenizers import Tokenizer
    except ImportError as exc:
        raise ConfigError(
            f"the tokenizer encoder needs the optional 'tokenizers' library ({exc}); "
            f"install it with: {TOKENIZERS_EXTRA}"
        ) from None
    return Tokenizer


class TokenizerEncoder(_SpecialsMixin):
    """A `tokenizers` tokenizer (BPE, WordPiece, Unigram) from tokenizer.json or the Hub.

    The tokenizer's own truncation and padding are switched off: attd pads in the
    collator and truncates here. A special the tokenizer lacks (no pad token, say) gets
    a new id after its vocabulary, and `vocab_size` counts it.
    """

    def __init__(self, options: TokenizerEncoderOptions) -> None:
        self.options = options
        self.tokenizer = _load_tokenizer(options)
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self.base_vocab_size = self.tokenizer.get_vocab_size(with_added_tokens=True)
        self.vocab_size = self.base_vocab_size
        self.pad_id = self._special("pad_token", _PAD_NAMES)
        self.eos_id = self._special("eos_token", _EOS_NAMES) if options.eos else None
        self.cls_id = self._special("cls_token", _CLS_NAMES) if options.cls else None
        self.max_length = options.max_length

    def _special(self, option: str, candidates: Sequence[str]) -> int:
        chosen = getattr(self.options, option)
        if chosen is not None:
            token_id = self.tokenizer.token_to_id(chosen)
            if token_id is None:
                raise ConfigError(
                    f"encoder option {option}: {chosen!r} is not in the tokenizer's vocabulary"
                )
            return token_id
        for name in candidates:
            token_id = self.tokenizer.token_to_id(name)
            if token_id is not None:
                return token_id
        self.vocab_size += 1  # a fresh id after the tokenizer's own
        return self.vocab_size - 1

    def _ids(self, raw: str) -> list[int]:
        if not isinstance(raw, str):
            raise TypeError(f"the tokenizer encoder takes str, got {type(raw).__name__}")
        encoding = self.tokenizer.encode(raw, add_special_tokens=self.options.add_special_tokens)
        return list(encoding.ids)

    def encode(self, raw: str) -> tuple[list[int], list[bool], dict[str, Any]]:
        return self._finish(self._ids(raw))

    def length(self, raw: str) -> int:
        return self._capped(len(self._ids(raw)))

    def decode(self, ids: Sequence[int]) -> str:
        """The text of `ids`, without padding or the specials this encoder added."""
        drop = {self.pad_id, self.eos_id, self.cls_id}
        return self.tokenizer.decode([i for i in ids if i not in drop and i < self.base_vocab_size])


def _load_tokenizer(options: TokenizerEncoderOptions) -> Any:
    tokenizer_class = import_tokenizer_class()
    if options.path is not None:
        path = Path(options.path)
        if not path.is_file():
            raise ConfigError(f"encoder option path: tokenizer file not found: {str(path)!r}")
        try:
            return tokenizer_class.from_file(str(path))
        except Exception as exc:  # tokenizers raises its own Exception subclass
            raise ConfigError(
                f"encoder option path: {str(path)!r} is not a tokenizer.json file: {exc}"
            ) from None
    try:
        return tokenizer_class.from_pretrained(options.hub_id, revision=options.revision or "main")
    except Exception as exc:
        raise ConfigError(
            f"encoder option hub_id: cannot load tokenizer {options.hub_id!r} from the "
            f"Hugging Face Hub (offline, or no tokenizer.json there?): {exc}"
        ) from None


ENCODER_CLASSES: dict[str, type] = {"bytes": ByteEncoder, "tokenizer": TokenizerEncoder}


def build_encoder(
    name: str,
    options: dict[str, Any] | None = None,
    *,
    max_length: int | None = None,
    manager: PluginManager | None = None,
) -> Any:
    """The encoder `name` with `options`; `max_length` caps a built-in encoder's own.

    attd-text's encoders are built directly (so a task works even when plugins are
    filtered); other names are `encoder` plugins of `manager` (the one that creates the
    task), and the caller truncates their output.
    """
    options = dict(options or {})
    model = BUILT_IN_ENCODERS.get(name)
    if model is None:
        if manager is None:
            raise ConfigError(
                f"encoder {name!r} is a plugin: create the task through a PluginManager "
                "(manager.create), so that it can build the encoder"
            )
        encoder = manager.create("encoder", name, options)
        missing = [a for a in ("encode", "vocab_size", "pad_id") if not hasattr(encoder, a)]
        if missing:
            raise ConfigError(
                f"encoder {name!r} lacks {', '.join(missing)}: a text task needs encode(), "
                "vocab_size and pad_id"
            )
        return encoder
    if max_length is not None:
        own = options.get("max_length")
        options["max_length"] = max_length if own is None else min(own, max_length)
    try:
        validated = model.model_validate(options)
    except ValidationError as exc:
        problems = describe_validation_error(exc)
        raise ConfigError(f"invalid options for encoder {name!r}: {problems}") from None
    return ENCODER_CLASSES[name](validated)
