"""Reading published copies of LRA data: local TSV files and Hugging Face Hub datasets.

Both end as `datasets.Dataset` splits named train, validation and test; failures become
one `ConfigError` that names the file or Hub id, never a traceback from `datasets`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from attd_core import ConfigError

SPLIT_ALIASES = {
    "train": ("train",),
    "validation": ("validation", "val", "valid", "dev", "eval"),
    "test": ("test",),
}


def load_tsv_splits(folder: Path, names: Mapping[str, str]) -> dict[str, Any]:
    """`names` maps each split to a tab-separated file (with a header row) in `folder`."""
    import datasets

    files = {split: folder / name for split, name in names.items()}
    missing = [str(path) for path in files.values() if not path.is_file()]
    if missing:
        raise ConfigError(f"task.dataset: {str(folder)!r} lacks {', '.join(missing)}")
    try:
        loaded = datasets.load_dataset(
            "csv", data_files={split: str(path) for split, path in files.items()}, delimiter="\t"
        )
    except Exception as exc:  # datasets raises many types; all mean "cannot read these"
        raise ConfigError(
            f"cannot read the TSV files in {str(folder)!r}: {_one_line(exc)}"
        ) from None
    return dict(loaded)


def load_hub_splits(hub_id: str, splits: Sequence[str]) -> dict[str, Any]:
    """A Hub dataset's splits, renamed to `splits` (e.g. its `val` becomes validation)."""
    import datasets

    try:
        loaded = datasets.load_dataset(hub_id)
    except Exception as exc:  # datasets raises many types; all mean "cannot load this"
        raise ConfigError(
            f"cannot load Hub dataset {hub_id!r}: {_one_line(exc)} (it needs network access the "
            "first time; HF_DATASETS_OFFLINE=1 allows only cached ones)"
        ) from None
    found = {}
    for split in splits:
        name = next((alias for alias in SPLIT_ALIASES[split] if alias in loaded), None)
        if name is None:
            raise ConfigError(
                f"Hub dataset {hub_id!r} has no {split} split (it has {', '.join(loaded)})"
            )
        found[split] = loaded[name]
    return found


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
