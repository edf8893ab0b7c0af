"""The ListOps task: evaluate nested list operations, 10 classes (LRA)."""

from __future__ import annotations

from typing import Any

from attd_core import Batch, ClassificationTask, ConfigError, InputSpec
from attd_tasks_lra.listops.generator import ListOpsGeneratorConfig, generate_splits
from attd_tasks_lra.listops.options import ListOpsOptions
from attd_tasks_lra.listops.tokenizer import ListOpsTokenizer, source_to_symbols

_TSV_NAMES = {"train": "basic_train.tsv", "validation": "basic_val.tsv", "test": "basic_test.tsv"}


class ListOpsTask(ClassificationTask):
    """Generated (or LRA's on-disk) ListOps, tokenised the LRA way with EOS appended."""

    num_classes = 10

    def __init__(self, options: ListOpsOptions) -> None:
        self.options = options
        self.tokenizer = ListOpsTokenizer()
        self.input_spec = InputSpec(
            vocab_size=self.tokenizer.vocab_size, pad_id=self.tokenizer.pad_id
        )
        self._splits: dict[str, Any] | None = None

    def load_split(self, split: str) -> Any:
        """A Hugging Face `datasets.Dataset` with LRA's `Source` and `Target` columns."""
        if split not in _TSV_NAMES:
            raise ConfigError(f"listops has no split {split!r}; splits: {', '.join(_TSV_NAMES)}")
        if self._splits is None:
            self._splits = self._load_splits()
        return self._splits[split]

    def _load_splits(self) -> dict[str, Any]:
        import datasets

        if self.options.data_dir is None:
            generator_fields = ListOpsGeneratorConfig.model_fields
            config = ListOpsGeneratorConfig(
                **self.options.model_dump(include=set(generator_fields))
            )
            return {
                split: datasets.Dataset.from_list(rows)
                for split, rows in generate_splits(config).items()
            }
        files = {split: self.options.data_dir / name for split, name in _TSV_NAMES.items()}
        missing = [str(path) for path in files.values() if not path.is_file()]
        if missing:
            raise ConfigError(f"task.data_dir: missing ListOps files: {', '.join(missing)}")
        loaded = datasets.load_dataset(
            "csv", data_files={split: str(path) for split, path in files.items()}, delimiter="\t"
        )
        return dict(loaded)

    def sequence_length(self, example: dict[str, Any]) -> int:
        """Tokens after encoding (EOS included), without encoding: for length grouping."""
        return min(len(source_to_symbols(example["Source"])) + 1, self.options.max_tokens)

    def preprocess(self, raw_batch: list[dict[str, Any]]) -> Batch:
        sequences = [
            self.tokenizer.encode(row["Source"], max_length=self.options.max_tokens)
            for row in raw_batch
        ]
        return self.collate_tokens(sequences, [int(row["Target"]) for row in raw_batch])
