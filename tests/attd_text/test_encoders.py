"""The byte and tokenizer encoders: ids, specials, truncation, unicode, the optional extra."""

from __future__ import annotations

import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from attd_core import ConfigError, Encoder, EncoderSpec, InputSpec, hookimpl
from attd_text.encoders import (
    BYTE_OFFSET,
    BYTE_VOCAB_SIZE,
    CLS_ID,
    EOS_ID,
    PAD_ID,
    ByteEncoder,
    TokenizerEncoder,
    build_encoder,
)
from attd_text.options import ByteEncoderOptions, TokenizerEncoderOptions


def byte_encoder(**options) -> ByteEncoder:
    return ByteEncoder(ByteEncoderOptions(**options))


def test_byte_ids_are_documented_and_follow_the_encoder_protocol():
    encoder = byte_encoder()
    assert isinstance(encoder, Encoder)
    assert (PAD_ID, EOS_ID, CLS_ID, BYTE_OFFSET, BYTE_VOCAB_SIZE) == (0, 1, 2, 3, 259)
    assert encoder.input_spec == InputSpec(vocab_size=259, pad_id=0)
    tokens, mask, metadata = encoder.encode("AB")
    assert tokens == [3 + 65, 3 + 66] and mask == [True, True]
    assert metadata == {"length": 2, "truncated": False, "num_bytes": 2}


@given(st.text(max_size=40))
def test_bytes_round_trip_any_unicode(text):
    encoder = byte_encoder()
    tokens, _, _ = encoder.encode(text)
    assert len(tokens) == len(text.encode("utf-8")) == encoder.length(text)
    assert all(BYTE_OFFSET <= token < BYTE_VOCAB_SIZE for token in tokens)
    assert encoder.decode(tokens) == text


def test_multibyte_characters_take_their_utf8_bytes():
    tokens, _, metadata = byte_encoder().encode("é😀")
    assert [token - BYTE_OFFSET for token in tokens] == list("é😀".encode())
    assert metadata["num_bytes"] == 6
    assert byte_encoder().encode(b"\xff\x00")[0] == [3 + 255, 3]  # raw bytes pass through


def test_eos_and_cls_wrap_the_text_and_decode_drops_them():
    encoder = byte_encoder(eos=True, cls=True)
    tokens, mask, _ = encoder.encode("hi")
    assert tokens == [CLS_ID, 3 + ord("h"), 3 + ord("i"), EOS_ID]
    assert mask == [True] * 4 and encoder.length("hi") == 4
    assert encoder.decode([*tokens, PAD_ID, PAD_ID]) == "hi"
    assert encoder.encode("")[0] == [CLS_ID, EOS_ID]


def test_truncation_keeps_the_specials():
    encoder = byte_encoder(eos=True, cls=True, max_length=5)
    tokens, _, metadata = encoder.encode("abcdefgh")
    assert tokens == [CLS_ID, 3 + ord("a"), 3 + ord("b"), 3 + ord("c"), EOS_ID]
    assert metadata["truncated"] and metadata["num_bytes"] == 8
    assert encoder.length("abcdefgh") == 5
    short = byte_encoder(max_length=3).encode("abcdefgh")[0]
    assert short == [3 + ord("a"), 3 + ord("b"), 3 + ord("c")]
    assert not byte_encoder(max_length=3).encode("abc")[2]["truncated"]


def test_truncation_may_split_a_character_and_decoding_survives():
    tokens, _, _ = byte_encoder(max_length=1).encode("é")
    assert byte_encoder().decode(tokens) == "\ufffd"


def test_bytes_encoder_rejects_non_text():
    with pytest.raises(TypeError, match="str or bytes"):
        byte_encoder().encode(3)


def test_build_encoder_caps_max_length_and_reports_bad_options():
    assert build_encoder("bytes", {"max_length": 10}, max_length=4).max_length == 4
    assert build_encoder("bytes", {"max_length": 3}, max_length=4).max_length == 3
    assert build_encoder("bytes", {}, max_length=None).max_length is None
    with pytest.raises(ConfigError, match="invalid options for encoder 'bytes': eso"):
        build_encoder("bytes", {"eso": True})


def test_bytes_plugin_spec_builds_the_encoder(manager):
    encoder = manager.create("encoder", "bytes", {"eos": True})
    assert isinstance(encoder, ByteEncoder) and encoder.eos_id == EOS_ID


class _Upper(ByteEncoder):
    """A third-party encoder: the bytes of the upper-cased text."""

    def encode(self, raw):
        return super().encode(raw.upper())


class _UpperPlugin:
    @hookimpl
    def attd_register(self, register):
        register(
            EncoderSpec(
                name="upper",
                summary="upper",
                factory=f"{__name__}:_Upper",
                config=ByteEncoderOptions,
            )
        )


def test_a_plugin_encoder_comes_from_the_manager_that_creates_the_task(manager, tmp_path):
    with pytest.raises(ConfigError, match="encoder 'upper' is a plugin: create the task"):
        build_encoder("upper")
    manager.add_plugin(_UpperPlugin(), name="upper")
    data = tmp_path / "reviews.csv"
    data.write_text("text,label\na,0\n", encoding="utf-8")
    options = {"data_files": str(data), "encoder": "upper"}
    task = manager.create("task", "text-classification", options)
    assert isinstance(task.encoder, _Upper)
    assert task.encoder.encode("a")[0] == [BYTE_OFFSET + ord("A")]


# -- tokenizer ---------------------------------------------------------------------------


def write_tokenizer(path, vocab):
    tokenizers = pytest.importorskip("tokenizers")
    tokenizer = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tokenizer.decoder = tokenizers.decoders.WordPiece()
    tokenizer.save(str(path))
    return path


VOCAB = {"[UNK]": 0, "[PAD]": 1, "[CLS]": 2, "[SEP]": 3, "hello": 4, "world": 5, "good": 6}


@pytest.fixture
def tokenizer_json(tmp_path):
    return write_tokenizer(tmp_path / "tokenizer.json", VOCAB)


def test_tokenizer_encoder_reads_a_tokenizer_json(tokenizer_json):
    encoder = TokenizerEncoder(TokenizerEncoderOptions(path=tokenizer_json))
    assert isinstance(encoder, Encoder)
    assert (encoder.vocab_size, encoder.pad_id) == (7, 1)
    assert encoder.input_spec == InputSpec(vocab_size=7, pad_id=1)
    tokens, mask, metadata = encoder.encode("hello world unseen")
    assert tokens == [4, 5, 0] and mask == [True] * 3
    assert metadata == {"length": 3, "truncated": False}
    assert encoder.decode(tokens[:2]) == "hello world"


def test_tokenizer_specials_come_from_its_vocabulary(tokenizer_json):
    options = TokenizerEncoderOptions(path=tokenizer_json, eos=True, cls=True, max_length=4)
    encoder = TokenizerEncoder(options)
    assert (encoder.cls_id, encoder.eos_id) == (2, 3)
    tokens, _, metadata = encoder.encode("hello world good hello")
    assert tokens == [2, 4, 5, 3] and metadata["truncated"]
    assert encoder.length("hello world good hello") == 4


def test_tokenizer_without_specials_gets_new_ids(tmp_path):
    path = write_tokenizer(tmp_path / "plain.json", {"[UNK]": 0, "hello": 1, "world": 2})
    encoder = TokenizerEncoder(TokenizerEncoderOptions(path=path, eos=True))
    assert (encoder.pad_id, encoder.eos_id, encoder.vocab_size) == (3, 4, 5)
    assert encoder.encode("hello")[0] == [1, 4]
    assert encoder.decode([1, 4, 3]) == "hello"


def test_tokenizer_named_special_must_exist(tokenizer_json):
    options = TokenizerEncoderOptions(path=tokenizer_json, pad_token="<nope>")
    with pytest.raises(ConfigError, match="pad_token: '<nope>' is not in the tokenizer"):
        TokenizerEncoder(options)


def test_tokenizer_file_errors_name_the_file(tmp_path):
    pytest.importorskip("tokenizers")
    missing = tmp_path / "missing.json"
    with pytest.raises(ConfigError, match="tokenizer file not found.*missing.json"):
        build_encoder("tokenizer", {"path": str(missing)})
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ConfigError, match="broken.json' is not a tokenizer.json file"):
        build_encoder("tokenizer", {"path": str(broken)})


def test_tokenizer_hub_id_offline_is_a_config_error(monkeypatch):
    pytest.importorskip("tokenizers")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match="cannot load tokenizer 'nobody/no-such-tokenizer'"):
        build_encoder("tokenizer", {"hub_id": "nobody/no-such-tokenizer"})


def test_tokenizer_options_need_exactly_one_source():
    with pytest.raises(ValueError, match="exactly one of path"):
        TokenizerEncoderOptions()
    with pytest.raises(ValueError, match="exactly one of path"):
        TokenizerEncoderOptions(path="a.json", hub_id="bert-base-uncased")


def test_missing_tokenizers_extra_is_named(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tokenizers", None)  # `import tokenizers` now fails
    with pytest.raises(ConfigError, match=r"pip install 'attd-text\[tokenizers\]'"):
        build_encoder("tokenizer", {"path": str(tmp_path / "tokenizer.json")})
