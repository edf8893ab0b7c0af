"""`text-classification`: any dataset with a text column and a label column.

The forward pass, loss and accuracy are `attd_core.ClassificationTask`'s, so pooling is
the model's (`model.pooling`). Labels are checked once when the data load: every value
of every split must map to a class id, or the error names the value and the split.
"""

from __future__ import annotations

import math
from typing import Any

from attd_core import Batch, ClassificationTask, ConfigError, InputSpec, PluginManager
from attd_text.collate import TextCollator
from attd_text.data import (
    carve_rows,
    check_column,
    check_data_files,
    choose_splits,
    describe_source,
    limit_rows,
    load_raw,
)
from attd_text.encoders import build_encoder
from attd_text.options import SPLITS, TextClassificationOptions


class TextClassificationTask(ClassificationTask):
    """Texts encoded by an encoder plugin (bytes by default), one label per text.

    `manager` (passed by `PluginManager.create`) builds an encoder that is a plugin.
    `augmentations` (what the `memo` objective's views apply): a mild token substitution,
    which keeps the text's length (deletion would refuse the batch's `aux` lengths).
    """

    augmentations: tuple[str, ...] = ("token-substitution:1",)

    def __init__(
        self, options: TextClassificationOptions, *, manager: PluginManager | None = None
    ) -> None:
        self.options = options
        self.encoder = build_encoder(
            options.encoder,
            options.encoder_options,
            max_length=options.max_length,
            manager=manager,
        )
        self.input_spec = InputSpec(vocab_size=self.encoder.vocab_size, pad_id=self.encoder.pad_id)
        self.collator = TextCollator(self.encoder.pad_id)
        if options.data_files is not None:  # fail before training starts, not after
            check_data_files(options.data_files)
        self._splits: dict[str, Any] | None = None
        self._label_names: list[str] | None = None
        self._label_ids: dict[str, int] = {}
        self._num_classes: int | None = None

    # -- data --------------------------------------------------------------------------

    def load_split(self, split: str) -> Any:
        """A `datasets.Dataset` with (at least) the text and label columns."""
        if split not in SPLITS:
            raise ConfigError(
                f"text-classification has no split {split!r}; splits: {', '.join(SPLITS)}"
            )
        return self._loaded()[split]

    @property
    def num_classes(self) -> int:
        self._loaded()
        assert self._num_classes is not None
        return self._num_classes

    @property
    def label_names(self) -> list[str] | None:
        """Class names in id order, when the labels have names (strings or a ClassLabel)."""
        self._loaded()
        return self._label_names

    def _loaded(self) -> dict[str, Any]:
        if self._splits is None:
            options = self.options
            source = describe_source(options)
            raw = load_raw(options)
            splits = choose_splits(
                raw,
                options,
                lambda train, v, t: carve_rows(train, v, t, options.seed),
            )
            splits = {
                split: limit_rows(data, options.limit(split), options.seed)
                for split, data in splits.items()
            }
            for split, data in splits.items():
                check_column(data, options.text_column, "task.text_column", split, source)
                check_column(data, options.label_column, "task.label_column", split, source)
                _check_text_feature(data, options.text_column, split)
            self._set_labels(splits)
            self._splits = splits
        return self._splits

    def _set_labels(self, splits: dict[str, Any]) -> None:
        options = self.options
        column = options.label_column
        values = {split: list(dict.fromkeys(data[column])) for split, data in splits.items()}
        feature = splits["train"].features[column]
        names: list[str] | None = None
        if options.labels is not None:
            names = list(options.labels)
        elif hasattr(feature, "names") and hasattr(feature, "str2int"):  # a ClassLabel
            names = list(feature.names)
        elif any(isinstance(value, str) for value in values["train"]):
            names = sorted({str(value) for value in values["train"] if value is not None})
        if names is not None:
            self._label_names = names
            self._label_ids = {name: index for index, name in enumerate(names)}
            count = len(names)
        else:
            train = [self._as_int(value, "train") for value in values["train"] if value is not None]
            count = max(train, default=-1) + 1
        if options.num_classes is not None:
            if options.num_classes < count:
                raise ConfigError(
                    f"task.num_classes is {options.num_classes}, but the labels need "
                    f"{count} classes" + (f" ({', '.join(names)})" if names is not None else "")
                )
            count = options.num_classes
        if count < 2:
            raise ConfigError(
                f"task.label_column {column!r}: the train split has only {count} class(es); "
                "a classifier needs two or more (set task.num_classes or task.labels)"
            )
        self._num_classes = count
        for split, split_values in values.items():
            for value in split_values:
                self._label_id(value, split)

    def _label_id(self, value: Any, split: str | None = None) -> int:
        """The class id of a label value; a ConfigError names a value that has none."""
        where = f" in split {split!r}" if split else ""
        column = self.options.label_column
        if value is None:
            raise ConfigError(f"task.label_column {column!r}: a label is missing{where}")
        named = self.options.labels is not None and str(value) in self._label_ids
        if isinstance(value, str) or named:  # task.labels names csv's numbers too: 3 is "3"
            index = self._label_ids.get(str(value))
            if index is None:
                known = ", ".join(repr(n) for n in self._label_names or []) or "none (ints)"
                raise ConfigError(
                    f"task.label_column {column!r}: label {value!r}{where} is not a known "
                    f"label ({known}); list every label in task.labels"
                )
            return index
        index = self._as_int(value, split)
        if not 0 <= index < (self._num_classes or 0):
            raise ConfigError(
                f"task.label_column {column!r}: label {value!r}{where} is outside "
                f"0..{(self._num_classes or 0) - 1} (num_classes {self._num_classes})"
            )
        return index

    def _as_int(self, value: Any, split: str | None) -> int:
        """An int label from an int, bool or integral float (csv readers make 1.0 of 1)."""
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, int):
            return value
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return int(value)
        where = f" in split {split!r}" if split else ""
        raise ConfigError(
            f"task.label_column {self.options.label_column!r}: label {value!r}{where} is not "
            "a class: labels are ints 0..C-1 or strings (task.labels names the classes)"
        )

    # -- batches -----------------------------------------------------------------------

    def _text(self, example: dict[str, Any]) -> str:
        text = example[self.options.text_column]
        return "" if text is None else text

    def sequence_length(self, example: dict[str, Any]) -> int:
        """Tokens after encoding, specials included: the runtime batches similar lengths."""
        length = self.encoder.length(self._text(example))
        cap = self.options.max_length
        return max(1, length if cap is None else min(length, cap))

    def encode(self, example: dict[str, Any]) -> list[int]:
        """The example's token ids; an empty text is one real pad token (its embedding is
        zero), so every sample has something to pool."""
        tokens = list(self.encoder.encode(self._text(example))[0])
        cap = self.options.max_length
        tokens = tokens if cap is None else tokens[:cap]
        return tokens or [self.encoder.pad_id]

    def export_record(self, example: dict[str, Any]) -> dict[str, Any]:
        """One raw example as JSON-ready data for `attd data export`: `{"text", "label"}`,
        the label as its class id."""
        self._loaded()
        label = self._label_id(example[self.options.label_column])
        return {"text": self._text(example), "label": label}

    def preprocess(self, raw_batch: list[dict[str, Any]]) -> Batch:
        self._loaded()
        column = self.options.label_column
        labels = [self._label_id(example[column]) for example in raw_batch]
        return self.collator([self.encode(example) for example in raw_batch], labels)


def _check_text_feature(dataset: Any, column: str, split: str) -> None:
    feature = dataset.features[column]
    dtype = getattr(feature, "dtype", None)
    if dtype not in ("string", "large_string"):
        raise ConfigError(
            f"task.text_column: column {column!r} of split {split!r} holds "
            f"{dtype or type(feature).__name__} values, not text"
        )
