"""`language-modeling`: byte blocks in order, per-token logits, losses, next-token TTA."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

import attd_core
from attd_core import ConfigError, ModelOutput
from attd_text.encoders import BYTE_OFFSET, BYTE_VOCAB_SIZE
from attd_text.options import LanguageModelingOptions

TINY_MAMBA = {"d_model": 16, "n_layers": 1, "d_state": 4}


@pytest.fixture
def make(manager, tmp_path):
    def make(**options):
        options.setdefault("cache_dir", str(tmp_path / "hf-cache"))
        return manager.create("task", "language-modeling", options)

    return make


@pytest.fixture
def bound(manager, make, corpus):
    """A tiny untrained Mamba LM bound to the task with a per-sample Delta-SSM adapter."""
    task = make(path=str(corpus), block_size=32)
    torch.manual_seed(0)
    backbone = manager.create("backbone", "mamba", TINY_MAMBA)
    model = attd_core.AttdModel(task, backbone).eval()
    adapter = manager.create("adapter", "delta-ssm", {"rank": 1})
    return attd_core.BoundModel(model, {"delta-ssm": adapter})


def test_registered_with_next_token_run_defaults(manager):
    spec = manager.get("task", "language-modeling")
    assert spec.factory == "attd_text.language_modeling:LanguageModelingTask"
    assert spec.run_defaults["eval.objective"] == "next-token"


def test_file_splits_in_order_into_blocks(make, corpus):
    data = corpus.read_bytes()
    task = make(path=str(corpus), block_size=64)
    splits = {split: task.load_split(split) for split in ("train", "validation", "test")}
    n_test = n_val = round(0.05 * len(data))
    train_end = len(data) - n_test - n_val
    assert len(splits["train"]) == -(-train_end // 64)
    assert splits["train"][0] == {"offset": 0, "bytes": data[:64]}
    joined = {split: b"".join(ex["bytes"] for ex in blocks) for split, blocks in splits.items()}
    assert joined["train"] + joined["validation"] + joined["test"] == data  # in order, no gap
    assert all(len(ex["bytes"]) == 64 for ex in list(splits["train"])[:-1])
    assert len(splits["test"][-1]["bytes"]) >= 2
    with pytest.raises(IndexError):
        splits["test"][len(splits["test"])]


def test_limits_keep_the_first_blocks(make, corpus):
    task = make(path=str(corpus), block_size=16, limit_train=5, limit_test=2)
    assert len(task.load_split("train")) == 5 and len(task.load_split("test")) == 2
    assert task.load_split("train")[4]["offset"] == 64


def test_preprocess_gives_byte_ids_and_lengths(make, corpus):
    task = make(path=str(corpus), block_size=16)
    examples = [task.load_split("test")[-1], task.load_split("test")[0]]
    batch = task.preprocess(examples)
    assert batch.inputs.shape == (2, 16)
    assert torch.equal(batch.labels[batch.mask], batch.inputs[batch.mask])
    assert (batch.labels[~batch.mask] == -100).all() and (~batch.mask).any()
    assert batch.aux["lengths"].tolist() == [len(ex["bytes"]) for ex in examples]
    assert [task.sequence_length(ex) for ex in examples] == batch.aux["lengths"].tolist()
    first = batch.inputs[1].tolist()
    assert bytes(token - BYTE_OFFSET for token in first) == examples[1]["bytes"]


def test_forward_gives_per_token_logits_and_consistent_losses(bound):
    task = bound.task
    batch = task.preprocess([task.load_split("test")[-1], task.load_split("test")[0]])
    output = bound(batch)
    assert output.logits.shape == (2, batch.inputs.shape[1], BYTE_VOCAB_SIZE)
    assert output.pooled is None and output.features.shape[:2] == batch.inputs.shape
    per_sample = task.sample_losses(output, batch)
    objective = attd_core.NextToken()
    assert torch.allclose(per_sample, objective(bound, batch, None, output), atol=1e-6)
    assert torch.allclose(task.compute_loss(output, batch), per_sample.mean())
    metrics = task.compute_metrics(output, batch)  # per token: every prediction once
    pairs = batch.mask[:, :-1] & batch.mask[:, 1:]
    token_loss = F.cross_entropy(output.logits[:, :-1][pairs], batch.inputs[:, 1:][pairs])
    assert metrics["loss"] == pytest.approx(token_loss.item(), rel=1e-5)
    assert set(metrics) == {"loss", "perplexity", "bits_per_byte", "accuracy"}
    assert metrics["perplexity"] == pytest.approx(math.exp(metrics["loss"]), rel=1e-5)
    assert metrics["bits_per_byte"] == pytest.approx(metrics["loss"] / math.log(2), rel=1e-5)
    assert 0 <= metrics["accuracy"] <= 1
    assert metrics["loss"] == pytest.approx(math.log(BYTE_VOCAB_SIZE), rel=0.2)  # untrained


def test_labels_are_the_targets_when_inputs_are_corrupted(bound):
    task = bound.task
    batch = task.preprocess([task.load_split("test")[0]])
    corrupted = dataclasses.replace(batch, inputs=torch.full_like(batch.inputs, BYTE_OFFSET))
    output = bound(corrupted)
    clean = dataclasses.replace(corrupted, labels=None)  # targets fall back to the inputs
    assert not torch.allclose(
        task.sample_losses(output, corrupted), task.sample_losses(output, clean)
    )


def test_padding_changes_no_sample_loss(bound):
    task = bound.task
    short = task.load_split("test")[-1]
    alone = task.preprocess([short])
    padded = task.preprocess([short, task.load_split("test")[0]])
    loss_alone = task.sample_losses(bound(alone), alone)[0]
    loss_padded = task.sample_losses(bound(padded), padded)[0]
    assert torch.allclose(loss_alone, loss_padded, atol=1e-5)


def test_fixed_tta_with_next_token_adapts_every_sample(manager, bound):
    task = bound.task
    batch = task.preprocess(list(task.load_split("validation"))[:4])
    strategy = manager.create("strategy", "fixed", {"k": 2})
    adaptation = strategy.adapt(bound, batch, attd_core.NextToken())
    assert adaptation.steps.tolist() == [2, 2, 2, 2] and adaptation.state is not None
    moved = [value for key, value in adaptation.state.items() if key.endswith(".U")]
    assert moved and all(bool((u.flatten(1).abs().sum(1) > 0).all()) for u in moved)
    assert not adaptation.flags["nonfinite"].any()
    assert torch.isfinite(task.sample_losses(bound(batch, adaptation.state), batch)).all()


def test_entropy_filter_needs_class_logits(manager, bound):
    task = bound.task
    batch = task.preprocess(list(task.load_split("validation"))[:2])
    strategy = manager.create("strategy", "fixed", {"k": 1, "entropy_filter": 0.5})
    with pytest.raises(ValueError, match=r"entropy_filter needs classification logits \(B, C\)"):
        strategy.adapt(bound, batch, attd_core.NextToken())


def test_per_split_text_files_and_jsonl(make, tmp_path, corpus):
    (tmp_path / "valid.md").write_bytes(b"validation text " * 10)
    task = make(data_files={"train": str(corpus), "validation": str(tmp_path / "valid.md")},
                block_size=32)  # fmt: skip
    assert task.load_split("validation")[0]["bytes"] == (b"validation text " * 2)
    assert len(task.load_split("test")) > 0  # carved from the end of train
    rows = [{"text": f"line {i} of the corpus"} for i in range(40)]
    path = tmp_path / "lines.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    task = make(data_files=str(path), block_size=16)
    train = b"".join(ex["bytes"] for ex in task.load_split("train"))
    assert train.startswith(b"line 0 of the corpus\nline 1 of")


# -- errors ------------------------------------------------------------------------------


def test_missing_file_and_unknown_split(make, corpus, tmp_path):
    with pytest.raises(ConfigError, match=r"task.path: file not found: '.*absent.txt'"):
        make(path=str(tmp_path / "absent.txt"))
    with pytest.raises(ConfigError, match=r"no split 'dev'; splits: train, validation, test"):
        make(path=str(corpus)).load_split("dev")
    with pytest.raises(ConfigError, match=r"task.data_files.test: file not found"):
        make(data_files={"train": str(corpus), "test": str(tmp_path / "t.txt")})


def test_file_too_small_for_its_splits(make, tmp_path):
    path = tmp_path / "tiny.txt"
    path.write_bytes(b"abcdefghij")
    with pytest.raises(ConfigError, match=r"holds 10 bytes: too few for a validation split"):
        make(path=str(path)).load_split("train")
    task = make(path=str(path), validation_fraction=0.3, test_fraction=0.3, block_size=2)
    assert [len(task.load_split(s)) for s in ("train", "validation", "test")] == [2, 1, 1]


def test_missing_text_column_lists_the_columns(make, tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"body": "x"}\n' * 5)
    with pytest.raises(ConfigError, match=r"column 'text' not found .* columns: body"):
        make(data_files=str(path)).load_split("train")


def test_options_need_one_source():
    with pytest.raises(ValidationError, match="exactly one of dataset or data_files or path"):
        LanguageModelingOptions()
    with pytest.raises(ValidationError, match="block_size"):
        LanguageModelingOptions(path="a.txt", block_size=1)


def test_forward_output_is_a_model_output(bound):
    task = bound.task
    batch = task.preprocess([task.load_split("train")[0]])
    assert isinstance(bound(batch), ModelOutput)
