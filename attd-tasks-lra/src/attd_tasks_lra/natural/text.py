"""LRA Text: IMDB sentiment from UTF-8 bytes, at most 4096 tokens with EOS (2 classes).

attd-text's `text-classification` with LRA's defaults: the byte encoder with EOS
appended, 4096 tokens, and the test split doubling as validation (LRA has no other).
"""

from __future__ import annotations

from typing import Any

from attd_core import ConfigError, PluginManager
from attd_tasks_lra.natural.options import LraTextOptions
from attd_text import TextClassificationTask


class LraTextTask(TextClassificationTask):
    """IMDB (or local files) as LRA's Text task; `options.validation_split` picks validation.

    With `validation_split=test` the validation split is the test split itself (after
    `limit_validation`, drawn with the same seed as `limit_test`), exactly as LRA and S4
    evaluate IMDB; `source` uses the data's own validation split or carves one from train.
    """

    def __init__(
        self, options: LraTextOptions | None = None, *, manager: PluginManager | None = None
    ) -> None:
        options = options or LraTextOptions()
        self.lra_options = options
        if options.validation_split == "test":
            test = options.splits.get("test", "test")
            options = options.model_copy(update={"splits": {**options.splits, "validation": test}})
        super().__init__(options, manager=manager)

    def _loaded(self) -> dict[str, Any]:
        try:
            return super()._loaded()
        except ConfigError as exc:
            if self.lra_options.validation_split == "test" and str(exc).startswith(
                "task.splits.validation"
            ):
                raise ConfigError(
                    f"task.validation_split=test reads the test split as validation, but: {exc}. "
                    "Name the test split with task.splits.test, or set "
                    "task.validation_split=source"
                ) from None
            raise
