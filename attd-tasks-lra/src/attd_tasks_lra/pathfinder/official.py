"""Reader for the official LRA Pathfinder / Path-X files, for users who have the archive.

The release lays each resolution and difficulty out as::

    pathfinder32/curv_baseline/imgs/<batch>/sample_<i>.png
    pathfinder32/curv_baseline/metadata/<batch>.npy

Despite the extension, a metadata file is space-separated text, one line per image:
``imgs/0 sample_0.png 0 1 ...``: the image's folder and file name (relative to the
difficulty folder), its number, and the label (field 3). The rest describes the generator's
settings and is ignored.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from attd_tasks_lra.pathfinder.options import DIFFICULTY_FOLDERS

RESOLUTIONS = (32, 64, 128, 256)

_LABEL_FIELD = 3


def load_png(path: Path) -> np.ndarray:
    """A PNG as a uint8 (H, W) grayscale array; the file is closed before returning."""
    with Image.open(path) as image:
        return np.array(image if image.mode == "L" else image.convert("L"))


def _is_empty(path: Path) -> bool:
    """Whether every pixel is 0 (the release has such images; they carry no task)."""
    with Image.open(path) as image:
        return image.getbbox() is None


def _batch_key(path: Path) -> tuple[int, int | str]:
    """Numeric batches in numeric order (2 before 10), then any others by name."""
    return (0, int(path.stem)) if path.stem.isdigit() else (1, path.stem)


def _read_metadata(metadata: Path, folder: Path) -> list[tuple[Path, int]]:
    pairs = []
    for number, line in enumerate(metadata.read_text(encoding="utf-8").splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) <= _LABEL_FIELD or fields[_LABEL_FIELD] not in ("0", "1"):
            raise ValueError(
                f"{metadata}:{number}: expected space-separated fields 'imgs/<batch> "
                f"sample_<i>.png <i> <label 0|1> ...', got {line.strip()!r}"
            )
        image = folder / fields[0] / fields[1]
        if not image.is_file():
            raise FileNotFoundError(f"{metadata}:{number} lists {image}, which does not exist")
        pairs.append((image, int(fields[_LABEL_FIELD])))
    return pairs


def read_official_index(root: Path, resolution: int, difficulty: str) -> list[tuple[Path, int]]:
    """(PNG path, label) pairs of one resolution and difficulty of the official release under
    `root` (the folder holding ``pathfinder32`` etc.), in a fixed order: metadata batches in
    numeric order, lines in file order. All-zero images are skipped; each PNG is opened once
    to check that, and closed. `difficulty` is a folder name such as ``curv_baseline`` (see
    DIFFICULTY_FOLDERS)."""
    if resolution not in RESOLUTIONS:
        raise ValueError(f"resolution must be one of {RESOLUTIONS}, got {resolution}")
    base = Path(root) / f"pathfinder{resolution}"
    folder = base / difficulty
    if not folder.is_dir():
        found = sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
        raise FileNotFoundError(
            f"no Pathfinder folder {folder}: expected the LRA release layout "
            f"{base}/<difficulty>/{{imgs,metadata}} with <difficulty> one of "
            f"{sorted(DIFFICULTY_FOLDERS.values())}; found {found or 'nothing'} in {base}"
        )
    metadata_dir = folder / "metadata"
    files = sorted(metadata_dir.glob("*.npy"), key=_batch_key) if metadata_dir.is_dir() else []
    if not files:
        raise FileNotFoundError(
            f"no metadata files in {metadata_dir}: expected <batch>.npy files (space-separated "
            "text, one line per image) next to imgs/"
        )
    pairs = [pair for metadata in files for pair in _read_metadata(metadata, folder)]
    return [(path, label) for path, label in pairs if not _is_empty(path)]
