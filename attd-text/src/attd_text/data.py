"""Loading a text task's data with Hugging Face `datasets`: Hub ids or local files.

Every failure a user can cause (a missing file, an unknown format or split, a dataset
the Hub does not have) is a `ConfigError` naming the option, file or split, with what is
available. Missing validation and test splits are carved from train with a seed, so a
single csv file is a complete task.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from attd_core import ConfigError
from attd_text.options import FORMATS, SPLITS

_SUFFIXES = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".json": "json",
    ".jsonl": "json",
    ".ndjson": "json",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".txt": "text",
    ".text": "text",
}
_COMPRESSION = {".gz", ".bz2", ".xz", ".zst", ".zip", ".lz4"}
_BUILDERS: dict[str, tuple[str, dict[str, Any]]] = {
    "csv": ("csv", {}),
    "tsv": ("csv", {"delimiter": "\t"}),
    "json": ("json", {}),
    "parquet": ("parquet", {}),
    "text": ("text", {}),
}


def data_file_map(data_files: Any) -> dict[str, list[str]]:
    """`data_files` as split -> paths; a bare path or list is the train split."""
    if isinstance(data_files, Mapping):
        return {str(key): _as_list(value) for key, value in data_files.items()}
    return {"train": _as_list(data_files)}


def _as_list(value: str | Sequence[str]) -> list[str]:
    paths = [value] if isinstance(value, (str, Path)) else list(value)
    return [str(Path(path).expanduser()) for path in paths]


def is_glob(path: str) -> bool:
    return any(char in path for char in "*?[")


def check_data_files(data_files: Any) -> None:
    """Every named (non-glob) file exists: the error names the option key and the file."""
    for split, paths in data_file_map(data_files).items():
        key = f"task.data_files.{split}" if isinstance(data_files, Mapping) else "task.data_files"
        if not paths:
            raise ConfigError(f"{key}: no files given")
        for path in paths:
            if not is_glob(path) and not Path(path).is_file():
                where = "" if Path(path).is_absolute() else f" (looked at {Path(path).resolve()})"
                raise ConfigError(f"{key}: file not found: {path!r}{where}")


def file_format(
    files: Mapping[str, list[str]], explicit: str | None, unknown: str = ""
) -> str | None:
    """The files' format from their extensions (`.csv.gz` reads as csv); None if unknown.

    `unknown` is the format of an extension not in the table (language-modeling reads
    any such file as plain text).
    """
    if explicit is not None:
        return explicit
    found: dict[str, str] = {}
    for paths in files.values():
        for path in paths:
            suffixes = [s.lower() for s in Path(path).suffixes if s.lower() not in _COMPRESSION]
            found[path] = _SUFFIXES.get(suffixes[-1] if suffixes else "", unknown)
    formats = set(found.values())
    if formats == {""}:
        return None
    if "" in formats or len(formats) > 1:
        listed = ", ".join(f"{path} ({fmt or '?'})" for path, fmt in found.items())
        raise ConfigError(
            f"task.data_files: cannot tell one format from the extensions ({listed}); "
            f"set task.format to one of {', '.join(FORMATS)}"
        )
    return formats.pop()


def describe_source(options: Any) -> str:
    if options.dataset is not None:
        name = f" ({options.subset})" if options.subset else ""
        return f"dataset {options.dataset!r}{name}"
    files = data_file_map(options.data_files)
    return "task.data_files (" + ", ".join(path for paths in files.values() for path in paths) + ")"


def load_raw(options: Any) -> dict[str, Any]:
    """The dataset's splits by their own names, as `datasets.Dataset`s.

    Local files go through `datasets`' packaged builders (csv, json, parquet, text);
    a Hub id through `load_dataset(id, name)`.
    """
    import datasets

    kwargs: dict[str, Any] = {}
    if options.cache_dir is not None:
        kwargs["cache_dir"] = str(options.cache_dir)
    if options.dataset is not None:
        path, name = options.dataset, options.subset
    else:
        check_data_files(options.data_files)
        files = data_file_map(options.data_files)
        fmt = file_format(files, options.format)
        if fmt is None or fmt == "text":
            raise ConfigError(
                f"task.data_files: {describe_source(options)} are not tables with named "
                "columns; use .csv, .tsv, .json, .jsonl or .parquet files, or set "
                f"task.format ({', '.join(f for f in FORMATS if f != 'text')})"
            )
        path, extra = _BUILDERS[fmt]
        name = None
        kwargs.update(extra, data_files=files)
    try:
        loaded = datasets.load_dataset(path, name, **kwargs)
    except ConfigError:
        raise
    except Exception as exc:  # datasets raises many types; all mean "cannot load this"
        message = " ".join(str(exc).split()) or type(exc).__name__
        hint = (
            " (a Hub dataset needs network access the first time; HF_DATASETS_OFFLINE=1 "
            "allows only cached ones)"
            if options.dataset is not None
            else ""
        )
        raise ConfigError(f"cannot load {describe_source(options)}: {message}{hint}") from None
    return dict(loaded)


def choose_splits(
    raw: Mapping[str, Any],
    options: Any,
    carve: Any,
) -> dict[str, Any]:
    """attd's train/validation/test from the dataset's splits (renamed by `task.splits`).

    A validation or test split the dataset lacks is carved from train by
    `carve(train, validation_fraction, test_fraction) -> (train, validation, test)`,
    unless `task.splits` named it explicitly.
    """
    source = describe_source(options)
    available = ", ".join(raw) or "none"
    chosen: dict[str, Any] = {}
    missing: list[str] = []
    for split in SPLITS:
        name = options.splits.get(split, split)
        if name in raw:
            chosen[split] = raw[name]
            continue
        fraction = getattr(options, f"{split}_fraction", 0.0)
        if split == "train" or split in options.splits or fraction == 0:
            hint = f"; set task.splits.{split} to one of them"
            if split != "train" and split not in options.splits:
                hint += f", or task.{split}_fraction > 0 to carve it from train"
            raise ConfigError(
                f"task.splits.{split}: {source} has no split {name!r}; its splits: "
                f"{available}{hint}"
            )
        missing.append(split)
    if missing:
        fractions = {split: getattr(options, f"{split}_fraction") for split in missing}
        train, validation, test = carve(
            chosen["train"], fractions.get("validation", 0.0), fractions.get("test", 0.0)
        )
        chosen["train"] = train
        if "validation" in missing:
            chosen["validation"] = validation
        if "test" in missing:
            chosen["test"] = test
    return chosen


def carve_rows(dataset: Any, validation: float, test: float, seed: int) -> tuple[Any, Any, Any]:
    """Seeded random rows of `dataset` for test and validation; the rest stays train."""
    size = len(dataset)
    n_test = max(1, round(test * size)) if test > 0 else 0
    n_validation = max(1, round(validation * size)) if validation > 0 else 0
    if size - n_test - n_validation < 1:
        raise ConfigError(
            f"the train split has {size} examples: too few to carve {n_validation} for "
            f"validation and {n_test} for test (add data or set task.splits)"
        )
    order = list(range(size))
    random.Random(seed).shuffle(order)
    test_rows = sorted(order[:n_test])
    validation_rows = sorted(order[n_test : n_test + n_validation])
    train_rows = sorted(order[n_test + n_validation :])
    return (
        dataset.select(train_rows, keep_in_memory=True),
        dataset.select(validation_rows, keep_in_memory=True) if n_validation else None,
        dataset.select(test_rows, keep_in_memory=True) if n_test else None,
    )


def limit_rows(dataset: Any, limit: int | None, seed: int) -> Any:
    """A seeded random `limit` rows (in their original order): files sorted by label
    (IMDB's are) still give every class."""
    if limit is None or limit >= len(dataset):
        return dataset
    rows = sorted(random.Random(seed).sample(range(len(dataset)), limit))
    return dataset.select(rows, keep_in_memory=True)


def check_column(dataset: Any, column: str, key: str, split: str, source: str) -> None:
    if column not in dataset.column_names:
        raise ConfigError(
            f"{key}: column {column!r} not found in split {split!r} of {source}; "
            f"columns: {', '.join(dataset.column_names)}"
        )
