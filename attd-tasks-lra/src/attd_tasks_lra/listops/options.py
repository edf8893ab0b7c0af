"""Options of the `listops` task: the generator's knobs plus where data come from."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from attd_tasks_lra.listops.generator import ListOpsGeneratorConfig

GENERATED = "generated"
HUB_ID = "long-range-arena/listops"


class ListOpsOptions(ListOpsGeneratorConfig):
    """Generated data by default; `dataset` may name LRA's files or the Hub copy instead."""

    dataset: str = Field(
        GENERATED,
        min_length=1,
        description=f"{GENERATED} (this config's generator, cached as Arrow), a folder with "
        f"LRA's basic_{{train,val,test}}.tsv, or a Hugging Face Hub id such as {HUB_ID}.",
    )
    max_tokens: int = Field(
        2048, ge=2, le=2**20, description="Truncate token sequences (EOS included) to this length."
    )
    cache_dir: Path | None = Field(
        None,
        description="Where generated splits are cached (default $ATTD_CACHE_DIR or ~/.cache/attd).",
    )
