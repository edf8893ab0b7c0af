"""The Arrow cache of generated splits: keyed by config, never half-written."""

from __future__ import annotations

import threading

import datasets
import pytest
from pydantic import BaseModel

from attd_core import lock_folder
from attd_tasks_lra import cache
from attd_tasks_lra.cache import CACHE_ENV, cache_root, cached_split, columns, config_key

FEATURES = datasets.Features({"x": datasets.Value("int64")})


class Config(BaseModel):
    size: int = 3
    seed: int = 0


def rows(n: int):
    return lambda: columns(({"x": i} for i in range(n)), 2)


def make(tmp_path, chunks=None, total=3):
    return cached_split(
        generator="demo",
        version=1,
        config=Config(),
        split="train",
        features=FEATURES,
        chunks=chunks or rows(total),
        total=total,
        root=tmp_path,
    )


def test_columns_regroups_rows_in_chunks():
    assert list(columns(({"a": i, "b": -i} for i in range(3)), 2)) == [
        {"a": [0, 1], "b": [0, -1]},
        {"a": [2], "b": [-2]},
    ]


def test_key_depends_on_generator_version_and_every_field():
    base = config_key("demo", 1, Config())
    assert base == config_key("demo", 1, Config())
    others = {
        config_key("other", 1, Config()),
        config_key("demo", 2, Config()),
        config_key("demo", 1, Config(seed=1)),
        config_key("demo", 1, Config(size=4)),
    }
    assert base not in others and len(others) == 4


def test_a_cached_split_is_generated_once(tmp_path):
    calls = []

    def counted():
        calls.append(1)
        return rows(3)()

    assert make(tmp_path, chunks=counted)["x"] == [0, 1, 2]
    assert make(tmp_path, chunks=counted)["x"] == [0, 1, 2]
    assert len(calls) == 1


def test_an_interrupted_generation_leaves_no_cache(tmp_path):
    def broken():
        yield {"x": [0, 1]}
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        make(tmp_path, chunks=broken)
    (folder,) = (tmp_path / "demo").iterdir()
    assert [path.name for path in folder.iterdir()] == ["config.json"]
    assert make(tmp_path)["x"] == [0, 1, 2]


def test_a_short_generator_is_refused_not_cached(tmp_path):
    with pytest.raises(RuntimeError, match="gave 2 rows, expected 3"):
        make(tmp_path, chunks=rows(2), total=3)
    assert not list((tmp_path / "demo").glob("*/*.arrow"))


def test_cache_root_prefers_the_option_then_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "env"))
    assert cache_root(tmp_path / "opt") == tmp_path / "opt"
    assert cache_root() == tmp_path / "env"
    monkeypatch.delenv(CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "attd"


def test_a_generation_removes_what_killed_generations_left(tmp_path):
    folder = tmp_path / "demo" / config_key("demo", 1, Config())
    folder.mkdir(parents=True)
    (folder / ".train.arrow.4242.tmp").write_bytes(b"")  # kill -9 during a generation
    (folder / ".test.arrow.4243.tmp").write_bytes(b"\x00")
    (folder / ".config.json.tmp-4244").write_text("{")
    assert make(tmp_path)["x"] == [0, 1, 2]
    assert sorted(path.name for path in folder.iterdir()) == ["config.json", "train.arrow"]


def test_a_split_another_process_is_generating_is_waited_for_and_reused(tmp_path, monkeypatch):
    """The second of two runs that need the same data waits, then reads the first's file."""
    folder = tmp_path / "demo" / config_key("demo", 1, Config())
    waiting = threading.Event()
    monkeypatch.setattr(cache, "_waiting", lambda folder: waiting.set)
    calls: list[int] = []

    def counted():
        calls.append(1)
        return rows(3)()

    read: list[list[int]] = []
    with lock_folder(folder):  # another process, generating
        thread = threading.Thread(target=lambda: read.append(make(tmp_path, chunks=counted)["x"]))
        thread.start()
        assert waiting.wait(timeout=60)
        cache._generate(folder / "train.arrow", FEATURES, rows(3), 3, "the other process")
    thread.join(timeout=60)
    assert read == [[0, 1, 2]] and calls == []  # read back, not generated again
