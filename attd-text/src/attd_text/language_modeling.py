"""`language-modeling`: byte-level next-token prediction on any text.

Bytes need no vocabulary, so any file (any language, code, markup) is a task. The text
is cut into blocks of `block_size` bytes; the head maps every position's features to
logits over the byte vocabulary, and position t predicts byte t + 1, the same contract
as the `next-token` inner objective, which the task's run defaults pick for TTA.
A file (or a dataset without validation and test splits) is split in order, train
first and test last, so no test text leaks into training.
"""

from __future__ import annotations

import glob
import math
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attd_core import Batch, ConfigError, InputSpec, ModelOutput
from attd_text.collate import TextCollator
from attd_text.data import (
    check_column,
    check_data_files,
    choose_splits,
    data_file_map,
    describe_source,
    file_format,
    is_glob,
    load_raw,
)
from attd_text.encoders import BYTE_OFFSET, BYTE_VOCAB_SIZE, PAD_ID, ByteEncoder
from attd_text.options import SPLITS, LanguageModelingOptions

IGNORE = -100
"""The label of a padding position (PyTorch's and Hugging Face's ignore index)."""


class ByteBlocks:
    """The examples of one split: consecutive `block_size`-byte slices of its text.

    A short last block is kept when it holds at least two bytes (one prediction).
    Each example is `{"offset": start byte, "bytes": the block}`.
    """

    def __init__(self, data: bytes, block_size: int, limit: int | None = None) -> None:
        self.data, self.block_size = data, block_size
        count = len(data) // block_size + (len(data) % block_size >= 2)
        self.count = count if limit is None else min(count, limit)

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -self.count <= index < self.count:
            raise IndexError(f"block {index} of {self.count}")
        start = (index % self.count) * self.block_size
        return {"offset": start, "bytes": self.data[start : start + self.block_size]}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (self[index] for index in range(self.count))


class LanguageModelingTask:
    """Next-byte prediction; metrics: loss, perplexity, bits_per_byte, accuracy (next byte).

    Metrics are per-token means within a batch, which the evaluator averages weighted by
    batch size; blocks share one length, so `loss` is the split's per-byte loss and
    `exp(loss)` its perplexity (`perplexity` itself averages per-batch perplexities).

    Evaluation is dynamic evaluation (`evaluation_views`): a strategy adapts on the first
    `context_fraction` of each block and only the bytes after it are scored, for every
    strategy (`none` included), so a perplexity gain never comes from training on the
    scored bytes. Mamba is causal, so a scored prediction reads the prefix in any case;
    adaptation changes only how the model reads it. Training uses whole blocks.
    """

    splits = SPLITS

    def __init__(self, options: LanguageModelingOptions) -> None:
        self.options = options
        self.encoder = ByteEncoder()
        self.input_spec = InputSpec(vocab_size=BYTE_VOCAB_SIZE, pad_id=PAD_ID)
        self.num_classes = BYTE_VOCAB_SIZE
        self.collator = TextCollator(PAD_ID)
        if options.path is not None and not Path(options.path).expanduser().is_file():
            raise ConfigError(f"task.path: file not found: {str(options.path)!r}")
        if options.data_files is not None:
            check_data_files(options.data_files)
        self._texts: dict[str, bytes] | None = None

    # -- data --------------------------------------------------------------------------

    def load_split(self, split: str) -> ByteBlocks:
        if split not in SPLITS:
            raise ConfigError(
                f"language-modeling has no split {split!r}; splits: {', '.join(SPLITS)}"
            )
        if self._texts is None:
            self._texts = self._load_texts()
        limit = self.options.limit(split)
        return ByteBlocks(self._texts[split], self.options.block_size, limit)

    def _load_texts(self) -> dict[str, bytes]:
        options = self.options
        if options.path is not None:
            path = Path(options.path).expanduser()
            return self._carve(path.read_bytes(), f"task.path {str(path)!r}")
        source = describe_source(options)
        texts = choose_splits(self._raw_texts(), options, _split_in_order)
        for split, text in texts.items():
            if len(text) < 2:
                raise ConfigError(
                    f"the {split} split of {source} holds {len(text)} bytes; a split needs "
                    "at least 2 (one prediction)"
                )
        return texts

    def _raw_texts(self) -> dict[str, bytes]:
        """Each of the dataset's splits as one byte string.

        Text files (or files of unknown type) are read as bytes, unchanged; table files
        and Hub datasets join their `text_column` rows with newlines.
        """
        options = self.options
        if options.data_files is not None:
            files = data_file_map(options.data_files)
            if file_format(files, options.format, unknown="text") == "text":
                return {split: _read_files(paths) for split, paths in files.items()}
        column = options.text_column
        texts = {}
        for split, data in load_raw(options).items():
            check_column(data, column, "task.text_column", split, describe_source(options))
            texts[split] = "\n".join(row or "" for row in data[column]).encode("utf-8")
        return texts

    def _carve(self, data: bytes, source: str) -> dict[str, bytes]:
        options = self.options
        fractions = (options.validation_fraction, options.test_fraction)
        train, validation, test = _split_in_order(data, *fractions)
        for split, text in (("train", train), ("validation", validation), ("test", test)):
            if len(text) < 2:
                raise ConfigError(
                    f"{source} holds {len(data)} bytes: too few for a {split} split of at "
                    f"least 2 bytes (validation_fraction={fractions[0]}, "
                    f"test_fraction={fractions[1]})"
                )
        return {"train": train, "validation": validation, "test": test}

    def sequence_length(self, example: Mapping[str, Any]) -> int:
        return len(example["bytes"])

    def preprocess(self, raw_batch: list[dict[str, Any]]) -> Batch:
        """Byte ids (3 + byte), padded; labels are the same ids with `IGNORE` at padding.

        Labels are the targets (position t predicts label t + 1), so a test-time shift
        that corrupts `inputs` is still scored against the clean text.
        """
        sequences = [[BYTE_OFFSET + b for b in example["bytes"]] for example in raw_batch]
        batch = self.collator(sequences)
        batch.labels = batch.inputs.masked_fill(~batch.mask, IGNORE)
        return batch

    def evaluation_views(self, batch: Batch) -> tuple[Batch, Batch]:
        """`(context, scored)`: each block's first `context_fraction` of bytes, and the
        block with only the bytes after them as targets.

        A block of n bytes gets `floor(context_fraction * n)` context bytes; the context
        is cut to the longest of them, and any later byte in it becomes padding, so it
        holds no byte that is scored. The scored view keeps the whole input (the
        predictions read the prefix) and marks the context bytes `IGNORE` in its labels.
        """
        mask = batch.mask
        if mask is None:
            mask = torch.ones(batch.inputs.shape, dtype=torch.bool, device=batch.inputs.device)
        labels = batch.inputs.masked_fill(~mask, IGNORE) if batch.labels is None else batch.labels
        cut = torch.floor(mask.sum(dim=1).double() * self.options.context_fraction).long()
        seen = (torch.arange(mask.shape[1], device=mask.device) < cut.unsqueeze(1)) & mask
        width = max(int(cut.max()) if len(batch) else 0, 1)
        context = Batch(
            inputs=batch.inputs.masked_fill(~seen, PAD_ID)[:, :width],
            mask=seen[:, :width],
            labels=labels.masked_fill(~seen, IGNORE)[:, :width],
            aux={**batch.aux, "lengths": cut},
        )
        return context, replace(batch, labels=labels.masked_fill(seen, IGNORE))

    # -- model -------------------------------------------------------------------------

    token_level = True
    """The head reads every position's features: logits `(B, L, V)`, no pooling."""

    def build_head(self, d_model: int) -> nn.Module:
        return nn.Linear(d_model, BYTE_VOCAB_SIZE)

    def _token_losses(self, output: ModelOutput, batch: Batch) -> tuple[Tensor, Tensor]:
        """`(B, L - 1)` cross-entropies of predicting token t + 1 at t, and where both are real."""
        mask = batch.mask
        if mask is None:
            mask = torch.ones(batch.inputs.shape, dtype=torch.bool, device=batch.inputs.device)
        labels = batch.inputs if batch.labels is None else batch.labels
        pairs = mask[:, :-1] & mask[:, 1:] & (labels[:, 1:] != IGNORE)
        targets = torch.where(pairs, labels[:, 1:], 0)
        logits = output.logits[:, :-1]
        losses = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
        return torch.where(pairs, losses, torch.zeros_like(losses)), pairs

    def compute_loss(self, output: ModelOutput, batch: Batch) -> Tensor:
        """The mean of `sample_losses` (blocks share one length, so per token as well)."""
        return self.sample_losses(output, batch).mean()

    def sample_losses(self, output: ModelOutput, batch: Batch) -> Tensor:
        losses, pairs = self._token_losses(output, batch)
        return losses.sum(dim=1) / pairs.sum(dim=1).clamp_min(1)

    @torch.no_grad()
    def compute_metrics(self, output: ModelOutput, batch: Batch) -> dict[str, float]:
        losses, pairs = self._token_losses(output, batch)
        count = int(pairs.sum())
        loss = float(losses.sum()) / max(count, 1)
        predicted = output.logits[:, :-1].argmax(dim=-1)
        labels = batch.inputs if batch.labels is None else batch.labels
        correct = int(((predicted == labels[:, 1:]) & pairs).sum())
        return {
            "loss": loss,
            "perplexity": math.exp(min(loss, 50.0)),
            "bits_per_byte": loss / math.log(2),
            "accuracy": correct / max(count, 1),
        }


def _split_in_order(data: bytes, validation: float, test: float) -> tuple[bytes, bytes, bytes]:
    """Train first, then validation, then test: contiguous, so nothing leaks."""
    n_test = round(test * len(data))
    n_validation = round(validation * len(data))
    end = len(data) - n_test - n_validation
    return data[:end], data[end : end + n_validation], data[end + n_validation :]


def _read_files(paths: list[str]) -> bytes:
    found: list[str] = []
    for path in paths:
        matches = sorted(glob.glob(path)) if is_glob(path) else [path]
        if not matches:
            raise ConfigError(f"task.data_files: no file matches {path!r}")
        found += matches
    return b"".join(Path(path).read_bytes() for path in found)
