"""The `majority` task: does token A occur more often than token B in a random sequence?

Imported only when the task is used (its factory string names this module), so listing
plugins stays free of torch.
"""

from __future__ import annotations

import random
from typing import Any

from attd_core import Batch, ClassificationTask, ConfigError, InputSpec

from attd_plugin_example.options import MajorityOptions

TOKEN_A, TOKEN_B = 1, 2  # id 0 is padding; ids from 3 up are distractors


class MajorityTask(ClassificationTask):
    """Binary classification: label 1 when token A occurs strictly more often than token B.

    Tokens are drawn uniformly from the non-pad vocabulary; splits are deterministic in
    the seed and drawn from separate random streams.
    """

    num_classes = 2

    def __init__(self, options: MajorityOptions) -> None:
        self.options = options
        self.input_spec = InputSpec(vocab_size=options.vocab_size, pad_id=0)

    def load_split(self, split: str) -> list[dict[str, Any]]:
        sizes = {
            "train": self.options.num_train,
            "validation": self.options.num_val,
            "test": self.options.num_test,
        }
        if split not in sizes:
            raise ConfigError(f"unknown split {split!r}; splits: {', '.join(sizes)}")
        rng = random.Random(f"{self.options.seed}:{split}")
        return [self._example(rng) for _ in range(sizes[split])]

    def _example(self, rng: random.Random) -> dict[str, Any]:
        tokens = [rng.randrange(1, self.options.vocab_size) for _ in range(self.options.seq_len)]
        return {"tokens": tokens, "label": int(tokens.count(TOKEN_A) > tokens.count(TOKEN_B))}

    def preprocess(self, raw_batch: list[dict[str, Any]]) -> Batch:
        return self.collate_tokens(
            [example["tokens"] for example in raw_batch],
            [example["label"] for example in raw_batch],
        )
