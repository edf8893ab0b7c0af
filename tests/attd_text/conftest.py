"""Fixtures of attd-text's tests: a plugin manager with core and text, tiny data files."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

import attd_core
import attd_core._plugin as core_plugin
from attd_text import _plugin as text_plugin

POSITIVE = ["good", "great", "lovely", "fine", "superb"]
NEGATIVE = ["bad", "awful", "poor", "dull", "boring"]


@pytest.fixture
def manager(fresh_plugin_manager: attd_core.PluginManager) -> attd_core.PluginManager:
    """attd-core's built-ins and attd-text, nothing else installed."""
    fresh_plugin_manager.add_plugin(core_plugin, name="core", distribution="attd-core")
    fresh_plugin_manager.add_plugin(text_plugin, name="text", distribution="attd-text")
    return fresh_plugin_manager


def reviews(n: int = 40, seed: int = 0) -> list[dict[str, str]]:
    """Short reviews whose words give the label away: `pos` or `neg`."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        positive = i % 2 == 0
        words = rng.choices(POSITIVE if positive else NEGATIVE, k=rng.randint(2, 6))
        rows.append(
            {"text": "a " + " ".join(words) + " film", "label": "pos" if positive else "neg"}
        )
    return rows


def write_csv(path: Path, rows: list[dict], delimiter: str = ",") -> Path:
    columns = list(rows[0])
    lines = [delimiter.join(columns)]
    lines += [delimiter.join(str(row[column]) for column in columns) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


class Files:
    """Writers of small data files, handed to tests by the `files` fixture."""

    reviews = staticmethod(reviews)
    csv = staticmethod(write_csv)
    jsonl = staticmethod(write_jsonl)


@pytest.fixture
def files() -> type[Files]:
    return Files


@pytest.fixture
def reviews_csv(tmp_path: Path) -> Path:
    return write_csv(tmp_path / "reviews.csv", reviews())


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """About 6 kB of repetitive English text."""
    path = tmp_path / "corpus.txt"
    sentence = "the quick brown fox jumps over the lazy dog; héllo wörld. "
    path.write_text(sentence * 100, encoding="utf-8")
    return path
