"""attd-core's Task conformance suite, run on both text tasks with tiny local data."""

from __future__ import annotations

import pytest

from attd_text import _plugin

testing = pytest.importorskip("attd_core.testing")

SENTENCE = "the quick brown fox jumps over the lazy dog; héllo wörld. "


class _TextTask(testing.TaskConformance):
    splits = ("train", "validation", "test")

    @pytest.fixture(autouse=True)
    def _data_dir(self, tmp_path_factory):
        """A folder for the data files; autouse fixtures run before the suite's."""
        if "data_dir" not in type(self).__dict__:
            type(self).data_dir = tmp_path_factory.mktemp(type(self).__name__)

    def create(self, name, **options):
        manager = testing.new_plugin_manager(text=_plugin)
        return manager.create("task", name, {"cache_dir": str(self.data_dir / "hf"), **options})


class TestTextClassification(_TextTask):
    def make_task(self):
        lines = ["text,label"]
        for i in range(30):  # lengths vary, so batches are padded
            lines.append(
                f"{'great ' * (1 + i % 5)}film,pos" if i % 2 else f"{'dull ' * (i % 7)}plot,neg"
            )
        (self.data_dir / "reviews.csv").write_text("\n".join(lines) + "\n")
        return self.create(
            "text-classification",
            data_files=str(self.data_dir / "reviews.csv"),
            encoder_options={"eos": True},
        )


class TestLanguageModeling(_TextTask):
    splits = ("test", "train", "validation")  # test ends in a short block: padding is checked

    def make_task(self):
        (self.data_dir / "corpus.txt").write_text(SENTENCE * 40)
        return self.create(
            "language-modeling", path=str(self.data_dir / "corpus.txt"), block_size=25
        )
