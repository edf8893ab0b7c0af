"""Generated splits cached as Arrow files, keyed by a hash of the generator's config.

Full-size ListOps or Pathfinder take minutes to generate; a later run with the same
config (seed included) memory-maps the Arrow file instead. A split is written to a
temporary file and renamed into place only when complete, so an interrupted generation
never leaves a file that a later run would read as a finished cache.

One process generates into a config's folder at a time: it holds the folder's lock
(`attd_core.lock_folder`), and a second process that needs a split meanwhile waits for
it, then reads what the first one wrote instead of generating it again. Holding the
lock, a process removes the temporary files that killed generations left.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from itertools import islice
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from attd_core import (
    atomic_write_text,
    fsync_file,
    is_staging_name,
    json_text,
    lock_folder,
    progress_bar,
)

CACHE_ENV = "ATTD_CACHE_DIR"
"""Overrides the cache root (default `$XDG_CACHE_HOME/attd`, else `~/.cache/attd`)."""

Chunk = dict[str, list[Any]]
"""Columns of consecutive rows, as `datasets` writes them."""


def cache_root(configured: Path | None = None) -> Path:
    """Where generated data live: `configured`, else `$ATTD_CACHE_DIR`, else the user cache."""
    if configured is not None:
        return configured.expanduser()
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "attd"


def config_key(generator: str, version: int, config: BaseModel) -> str:
    """A short hash of everything that decides the data: the generator, its version, config."""
    payload = {"generator": generator, "version": version, "config": config.model_dump(mode="json")}
    text = json.dumps(payload, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def columns(rows: Iterable[Mapping[str, Any]], size: int) -> Iterator[Chunk]:
    """Rows regrouped as column chunks of up to `size` rows."""
    iterator = iter(rows)
    while block := list(islice(iterator, size)):
        yield {key: [row[key] for row in block] for key in block[0]}


def cached_split(
    *,
    generator: str,
    version: int,
    config: BaseModel,
    split: str,
    features: Any,
    chunks: Callable[[], Iterable[Chunk]],
    total: int,
    root: Path | None = None,
) -> Any:
    """The split as a memory-mapped `datasets.Dataset`, generated first if not cached.

    `chunks()` yields the split's rows as column chunks, `total` rows in all (for the
    progress bar). Bump `version` whenever the generator's output changes for a config,
    so that stale caches are not read.
    """
    import datasets

    folder = cache_root(root) / generator / config_key(generator, version, config)
    path = folder / f"{split}.arrow"
    if not path.is_file():
        label = f"generate {generator} {split}"
        with lock_folder(folder, what="data cache", wait=True, on_wait=_waiting(folder)) as lock:
            lock.remove_leftovers(_is_leftover)
            if not path.is_file():  # else another process generated it while this one waited
                _write_config(folder / "config.json", generator, version, config)
                _generate(path, features, chunks, total, label)
    return datasets.Dataset.from_file(str(path))


def _is_leftover(name: str) -> bool:
    """A temporary file of a generation (`.SPLIT.arrow.PID.tmp`) or of the config's
    atomic write: in a folder this process holds, a killed process left it."""
    return (name.startswith(".") and name.endswith(".tmp")) or is_staging_name(name)


def _waiting(folder: Path) -> Callable[[], None]:
    def tell() -> None:
        sys.stderr.write(f"attd: waiting for another process writing the data cache {folder}\n")

    return tell


def _write_config(path: Path, generator: str, version: int, config: BaseModel) -> None:
    """What the folder holds, for people browsing the cache."""
    if not path.is_file():
        record = {
            "generator": generator,
            "version": version,
            "config": config.model_dump(mode="json"),
        }
        atomic_write_text(path, json_text(record, indent=2, sort_keys=True) + "\n")


def _generate(
    path: Path, features: Any, chunks: Callable[[], Iterable[Chunk]], total: int, label: str
) -> None:
    from datasets.arrow_writer import ArrowWriter
    from rich.console import Console

    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with progress_bar(Console(stderr=True)) as progress:
            bar = progress.add_task(label, total=total, status="")
            with ArrowWriter(features=features, path=str(temporary)) as writer:
                for chunk in chunks():
                    writer.write_batch(chunk)
                    progress.update(bar, advance=len(next(iter(chunk.values()))))
                written, _ = writer.finalize()
        if written != total:
            raise RuntimeError(f"{label}: the generator gave {written} rows, expected {total}")
        fsync_file(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
