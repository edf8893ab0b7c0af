"""LRA Retrieval: do two AAN papers cite each other? Two byte-level towers, shared weights.

Data: LRA's `new_aan_pairs.{train,eval,test}.tsv`, read as LRA's input pipeline reads
them: tab-separated `label, id1, id2, text1, text2`, no header, no quoting (a `"` is an
ordinary character), the label a number (`1`, `0`, `1.0`). There is no canonical Hugging
Face copy, so the files are local only. Each document is encoded on its own (bytes, EOS
appended, at most 4000 tokens, as LRA and S4).

Model: both documents go through the same embedding and backbone with the same adapter
state (one tower, applied twice), are pooled with the model's pooling, and the head is an
MLP over `[x1, x2, x1 * x2, x1 - x2]` (4 d -> hidden -> 2, GELU), S4's retrieval decoder.
"""

from __future__ import annotations

import ast
import math
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from attd_core import Batch, ClassificationTask, ConfigError, InputSpec, PluginManager
from attd_tasks_lra.natural.options import AAN_FILES, LraRetrievalOptions
from attd_text import TextCollator, build_encoder

SPLITS = tuple(AAN_FILES)
COLUMNS = ("label", "id1", "id2", "text1", "text2")
"""LRA's column names for the five fields of a line."""
SECOND = ("inputs2", "mask2")
"""`Batch.aux` keys of the second document's `(B, L2)` tokens and mask."""


class LraRetrievalTask(ClassificationTask):
    """AAN document pairs, 2 classes; the model runs the shared tower on both documents.

    A batch carries document 1 as `inputs`/`mask` and document 2 in `aux["inputs2"]` and
    `aux["mask2"]` (`(B, L2)`, batch first, so `Batch.select` keeps the pairs together).
    `ModelOutput.features`, `embedded` and `pooled` are document 1's (`(B, L1, D)` and
    `(B, D)`, what the inner objectives read); the head's `(B, 4 D)` input is
    `pair_towers(x1, x2)`. Inner objectives that perturb the input perturb document 1
    only: `entropy-kl`, `entropy`, `consistency`, `next-step` and `masked-reconstruction`
    (which blanks and reconstructs document 1's tokens) run on pairs; `next-token` needs
    per-token logits and fails with a ValueError saying so. Token shifts that move tokens
    (deletion, insertion) refuse batches with aux tensors; substitution corrupts
    document 1 only, which is also what `memo`'s views apply (`augmentations`).
    """

    num_classes = 2
    augmentations: tuple[str, ...] = ("token-substitution:1",)

    def __init__(
        self, options: LraRetrievalOptions | None = None, *, manager: PluginManager | None = None
    ) -> None:
        self.options = options = options or LraRetrievalOptions()
        self.encoder = build_encoder(
            options.encoder,
            options.encoder_options,
            max_length=options.max_length,
            manager=manager,
        )
        self.input_spec = InputSpec(vocab_size=self.encoder.vocab_size, pad_id=self.encoder.pad_id)
        self.collator = TextCollator(self.encoder.pad_id)
        self._files = self._check_files()
        self._splits: dict[str, Any] | None = None

    # -- data --------------------------------------------------------------------------

    def _check_files(self) -> dict[str, Any]:
        """The three files, checked before anything trains: a ConfigError names what is
        missing and where LRA's files come from."""
        data_dir = self.options.data_dir
        if data_dir is None:
            raise ConfigError(
                "lra-retrieval needs task.data_dir: a folder with LRA's "
                f"{', '.join(AAN_FILES.values())} (the tsv_data/ folder of LRA's "
                "lra_release archive); there is no canonical Hugging Face copy of AAN"
            )
        folder = data_dir.expanduser()
        if not folder.is_dir():
            raise ConfigError(f"task.data_dir: folder {str(data_dir)!r} not found")
        files = {split: folder / name for split, name in self.options.files.items()}
        missing = [f"{split}: {path.name}" for split, path in files.items() if not path.is_file()]
        if missing:
            raise ConfigError(
                f"task.data_dir: {str(data_dir)!r} lacks {', '.join(missing)} "
                "(task.files names another file for a split)"
            )
        return files

    def load_split(self, split: str) -> Any:
        """A `datasets.Dataset` of string columns `label, id1, id2, text1, text2`."""
        if split not in SPLITS:
            raise ConfigError(f"lra-retrieval has no split {split!r}; splits: {', '.join(SPLITS)}")
        if self._splits is None:
            self._splits = self._load()
        return self._splits[split]

    def _load(self) -> dict[str, Any]:
        options = self.options
        splits = {}
        for split in SPLITS:
            data = _limit(self._read(split), options.limit(split), options.seed)
            if len(data) == 0:
                raise ConfigError(f"task.data_dir: {self._files[split].name} holds no pairs")
            for value in dict.fromkeys(data["label"]):
                self._label(value, split)
            splits[split] = data
        return splits

    def _read(self, split: str) -> Any:
        """One file as an Arrow-backed `datasets.Dataset`, cached by `datasets` (keyed by
        the file's path, size and modification time), so the 8.5 GB train file is parsed
        once and then memory-mapped."""
        import datasets

        path = self._files[split]
        stat = path.stat()
        features = datasets.Features({column: datasets.Value("string") for column in COLUMNS})
        cache_dir = self.options.cache_dir
        try:
            return datasets.Dataset.from_generator(
                _read_pairs,
                features=features,
                cache_dir=None if cache_dir is None else str(cache_dir),
                gen_kwargs={"path": str(path), "stamp": (stat.st_size, stat.st_mtime_ns)},
                split=datasets.NamedSplit(split),
            )
        except Exception as exc:  # datasets wraps what the reader raises
            cause = exc
            while cause is not None and not isinstance(cause, ConfigError):
                cause = cause.__cause__ or cause.__context__
            if cause is not None:
                raise ConfigError(str(cause)) from None
            message = " ".join(str(exc).split()) or type(exc).__name__
            raise ConfigError(f"cannot read the AAN file {str(path)!r}: {message}") from None

    def _label(self, value: Any, split: str | None = None) -> int:
        """0 or 1 from LRA's label field (a number: `1`, `0.0`); anything else is an error."""
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if number not in (0.0, 1.0):
            where = f" in {self._files[split].name}" if split else ""
            raise ConfigError(f"AAN label {value!r}{where} is not 0 or 1")
        return int(number)

    # -- batches -----------------------------------------------------------------------

    def _text(self, example: dict[str, Any], column: str) -> str:
        text = example[column] or ""
        if self.options.unwrap_bytes_literals:
            text = _unwrap_bytes_literal(text)
        return text

    def encode(self, text: str) -> list[int]:
        """A document's token ids (EOS kept within max_length); an empty document is one
        real pad token, so every sample has something to pool."""
        tokens = list(self.encoder.encode(text)[0])
        cap = self.options.max_length
        tokens = tokens if cap is None else tokens[:cap]
        return tokens or [self.encoder.pad_id]

    def _length(self, text: str) -> int:
        measure = getattr(self.encoder, "length", None)
        if measure is None:
            return len(self.encode(text))
        cap = self.options.max_length
        length = measure(text)
        return max(1, length if cap is None else min(length, cap))

    def sequence_length(self, example: dict[str, Any]) -> int:
        """The longer document's tokens: the runtime batches pairs of similar lengths."""
        return max(self._length(self._text(example, column)) for column in ("text1", "text2"))

    def preprocess(self, raw_batch: list[dict[str, Any]]) -> Batch:
        labels = [self._label(example["label"]) for example in raw_batch]
        first = self.collator([self.encode(self._text(row, "text1")) for row in raw_batch], labels)
        second = self.collator([self.encode(self._text(row, "text2")) for row in raw_batch])
        aux = {
            "lengths": first.aux["lengths"],
            "inputs2": second.inputs,
            "mask2": second.mask,
            "lengths2": second.aux["lengths"],
        }
        return Batch(inputs=first.inputs, mask=first.mask, labels=first.labels, aux=aux)

    def export_record(self, example: dict[str, Any]) -> dict[str, Any]:
        """One raw pair as JSON-ready data: `{"text1", "text2", "label"}` (texts as read)."""
        return {
            "text1": example["text1"] or "",
            "text2": example["text2"] or "",
            "label": self._label(example["label"]),
        }

    # -- the model ---------------------------------------------------------------------

    def build_head(self, d_model: int) -> nn.Module:
        """S4's retrieval decoder: `[x1, x2, x1 * x2, x1 - x2]` -> hidden -> 2 classes."""
        hidden = self.options.head_hidden or d_model
        return nn.Sequential(
            nn.Linear(4 * d_model, hidden), nn.GELU(), nn.Linear(hidden, self.num_classes)
        )

    def second_tower(self, batch: Batch) -> Batch:
        """Document 2 (`aux["inputs2"]`, `aux["mask2"]`): the model runs it through the
        same embedding, backbone, adapter state and pooling as document 1."""
        missing = [key for key in SECOND if key not in batch.aux]
        if missing:
            raise ValueError(
                f"an lra-retrieval batch carries document 2 in aux {', '.join(SECOND)}; "
                f"missing: {', '.join(missing)} (collate it with the task's preprocess)"
            )
        return Batch(inputs=batch.aux["inputs2"], mask=batch.aux["mask2"])

    @staticmethod
    def pair_towers(x1: Tensor, x2: Tensor) -> Tensor:
        """The head's input `(B, 4 D)` from the two pooled documents `(B, D)`."""
        return torch.cat([x1, x2, x1 * x2, x1 - x2], dim=-1)


def _read_pairs(path: str, stamp: Any = None) -> Iterator[dict[str, str]]:
    """LRA's reader: one pair per line, five tab-separated fields, no quoting; `stamp`
    only keys the cache. Bytes that are not UTF-8 become U+FFFD."""
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            line = raw.rstrip(b"\r\n")
            if not line.strip():
                continue
            fields = line.decode("utf-8", errors="replace").split("\t")
            if len(fields) != len(COLUMNS):
                raise ConfigError(
                    f"cannot read the AAN files: {Path(path).name} line {number} has "
                    f"{len(fields)} tab-separated fields; LRA's lines have {len(COLUMNS)} "
                    f"({', '.join(COLUMNS)})"
                )
            yield dict(zip(COLUMNS, fields, strict=True))


def _limit(dataset: Any, limit: int | None, seed: int) -> Any:
    """A seeded random `limit` rows, kept in file order."""
    if limit is None or limit >= len(dataset):
        return dataset
    rows = sorted(random.Random(seed).sample(range(len(dataset)), limit))
    return dataset.select(rows, keep_in_memory=True)


def _unwrap_bytes_literal(text: str) -> str:
    """`b'...'` (a Python bytes literal) as the UTF-8 text it holds; other text as is."""
    if len(text) >= 3 and text[0] == "b" and text[1] in "'\"" and text[-1] == text[1]:
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return text
        if isinstance(value, bytes):
            return value.decode("utf-8", errors="replace")
    return text
