"""The ListOps task: evaluate nested list operations, 10 classes (LRA)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from attd_core import Batch, ClassificationTask, ConfigError, InputSpec
from attd_tasks_lra.cache import Chunk, cached_split, columns
from attd_tasks_lra.listops.generator import SPLITS, ListOpsGeneratorConfig, iter_examples
from attd_tasks_lra.listops.options import GENERATED, ListOpsOptions
from attd_tasks_lra.listops.tokenizer import ListOpsTokenizer, source_to_symbols
from attd_tasks_lra.sources import load_hub_splits, load_tsv_splits

GENERATOR_VERSION = 1
"""Bump when the generator's output changes for a config: cached splits are then redone."""
_TSV_NAMES = {"train": "basic_train.tsv", "validation": "basic_val.tsv", "test": "basic_test.tsv"}
_CHUNK = 1000


class ListOpsTask(ClassificationTask):
    """Generated (or LRA's on-disk, or the Hub's) ListOps, tokenised the LRA way with EOS.

    It offers no `augmentations` for `memo`: editing any token of an expression changes
    its value or breaks its syntax, so views would not keep the label.
    """

    num_classes = 10

    def __init__(self, options: ListOpsOptions) -> None:
        self.options = options
        self.tokenizer = ListOpsTokenizer()
        self.input_spec = InputSpec(
            vocab_size=self.tokenizer.vocab_size, pad_id=self.tokenizer.pad_id
        )
        self._splits: dict[str, Any] = {}

    @property
    def generator_config(self) -> ListOpsGeneratorConfig:
        """The generator's share of the options (what keys the cache)."""
        fields = set(ListOpsGeneratorConfig.model_fields)
        return ListOpsGeneratorConfig(**self.options.model_dump(include=fields))

    def load_split(self, split: str) -> Any:
        """A Hugging Face `datasets.Dataset` with LRA's `Source` and `Target` columns."""
        if split not in SPLITS:
            raise ConfigError(f"listops has no split {split!r}; splits: {', '.join(SPLITS)}")
        if split not in self._splits:
            dataset = self.options.dataset
            if dataset == GENERATED:
                self._splits[split] = self._generated(split)
            elif Path(dataset).expanduser().is_dir():
                self._splits.update(load_tsv_splits(Path(dataset).expanduser(), _TSV_NAMES))
            else:
                self._splits.update(load_hub_splits(dataset, SPLITS))
        return self._splits[split]

    def harder_split(self, split: str, severity: int) -> Any:
        """`split` regenerated with trees `severity` levels deeper and longer.

        The length window moves up by `severity` halves of its width, so that every
        harder tree is longer than any the model trained on; the test split keeps its size.
        """
        config = self.generator_config
        if self.options.dataset != GENERATED:
            raise ConfigError(
                f"shift 'harder' regenerates ListOps; task.dataset is {self.options.dataset!r}, "
                f"not {GENERATED!r}"
            )
        step = severity * (config.max_length - config.min_length) // 2
        harder = config.model_validate(
            {
                **config.model_dump(),
                "max_depth": config.max_depth + severity,
                "min_length": config.min_length + step,
                "max_length": config.max_length + step,
            }
        )
        return self._generated(split, harder)

    def _generated(self, split: str, config: ListOpsGeneratorConfig | None = None) -> Any:
        import datasets

        config = config or self.generator_config
        total = {"train": config.num_train, "validation": config.num_val, "test": config.num_test}

        def chunks() -> Iterator[Chunk]:
            return columns(iter_examples(config, split), _CHUNK)

        features = datasets.Features(
            {"Source": datasets.Value("string"), "Target": datasets.Value("int64")}
        )
        return cached_split(
            generator="listops",
            version=GENERATOR_VERSION,
            config=config,
            split=split,
            features=features,
            chunks=chunks,
            total=total[split],
            root=self.options.cache_dir,
        )

    def sequence_length(self, example: dict[str, Any]) -> int:
        """Tokens after encoding (EOS included), without encoding: for length grouping."""
        return min(len(source_to_symbols(example["Source"])) + 1, self.options.max_tokens)

    def export_record(self, example: dict[str, Any]) -> dict[str, Any]:
        """One example as LRA's TSV row: `{"Source": str, "Target": int}`."""
        return {"Source": example["Source"], "Target": int(example["Target"])}

    def preprocess(self, raw_batch: list[dict[str, Any]]) -> Batch:
        sequences = [
            self.tokenizer.encode(row["Source"], max_length=self.options.max_tokens)
            for row in raw_batch
        ]
        return self.collate_tokens(sequences, [int(row["Target"]) for row in raw_batch])
