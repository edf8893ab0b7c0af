"""Options of the `listops` task: the generator's knobs plus where data come from."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from attd_tasks_lra.listops.generator import ListOpsGeneratorConfig


class ListOpsOptions(ListOpsGeneratorConfig):
    """Generated data by default; `data_dir` reads LRA's `basic_{train,val,test}.tsv` instead."""

    max_tokens: int = Field(
        2048, ge=2, description="Truncate token sequences (EOS included) to this length."
    )
    data_dir: Path | None = Field(
        None, description="A folder with LRA's basic_*.tsv files; the generator is then unused."
    )
