"""The listops task plugin: registration, data loading (generated and LRA TSV), collation."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from attd_core import ConfigError, get_plugin_manager

TINY = {"num_train": 24, "num_val": 8, "num_test": 8, "max_length": 120}


@pytest.fixture
def task():
    return get_plugin_manager().create("task", "listops", TINY)


def test_listops_is_registered_with_its_options():
    spec = get_plugin_manager().get("task", "listops")
    assert spec.factory == "attd_tasks_lra.listops.task:ListOpsTask"
    with pytest.raises(ValidationError, match="max_dpth"):
        spec.config.model_validate({"max_dpth": 3})


def test_generated_splits_have_the_requested_sizes(task):
    sizes = {split: len(task.load_split(split)) for split in ("train", "validation", "test")}
    assert sizes == {"train": 24, "validation": 8, "test": 8}
    assert task.load_split("train").column_names == ["Source", "Target"]


def test_preprocess_pads_masks_and_appends_eos(task):
    rows = [task.load_split("train")[i] for i in range(4)]
    batch = task.preprocess(rows)
    lengths = batch.mask.sum(dim=1)
    assert batch.inputs.shape == (4, int(lengths.max()))
    for row, length in zip(batch.inputs, lengths, strict=True):
        assert row[length - 1] == task.tokenizer.eos_id
        assert (row[length:] == task.tokenizer.pad_id).all()
    assert batch.labels.tolist() == [row["Target"] for row in rows]


def test_max_tokens_truncates_keeping_eos():
    task = get_plugin_manager().create("task", "listops", {**TINY, "max_tokens": 16})
    batch = task.preprocess([task.load_split("test")[0]])
    assert batch.inputs.shape == (1, 16) and batch.inputs[0, -1] == task.tokenizer.eos_id


def test_lra_tsv_files_load_from_a_folder(tmp_path):
    rows = {"train": "( ( [MAX 2 ) 9 ) ]\t9", "val": "( ( [MIN 2 ) 9 ) ]\t2", "test": "3\t3"}
    for split, row in rows.items():
        (tmp_path / f"basic_{split}.tsv").write_text(f"Source\tTarget\n{row}\n")
    task = get_plugin_manager().create("task", "listops", {"dataset": str(tmp_path)})
    assert task.load_split("validation")[0] == {"Source": "( ( [MIN 2 ) 9 ) ]", "Target": 2}
    assert task.preprocess([task.load_split("train")[0]]).labels.tolist() == [9]


def test_missing_tsv_files_are_named(tmp_path):
    task = get_plugin_manager().create("task", "listops", {"dataset": str(tmp_path)})
    with pytest.raises(ConfigError, match="basic_train.tsv"):
        task.load_split("train")


def test_unknown_split_is_refused(task):
    with pytest.raises(ConfigError, match="no split 'dev'; splits: train, validation, test"):
        task.load_split("dev")


def test_sequence_length_matches_the_encoded_length():
    task = get_plugin_manager().create("task", "listops", {**TINY, "max_tokens": 64})
    for example in task.load_split("train"):
        batch = task.preprocess([example])
        assert task.sequence_length(example) == batch.inputs.shape[1]


def test_an_unreachable_hub_dataset_is_a_config_error():
    task = get_plugin_manager().create("task", "listops", {"dataset": "nobody-here/no-listops"})
    with pytest.raises(ConfigError, match="cannot load Hub dataset 'nobody-here/no-listops'"):
        task.load_split("test")


def test_generated_splits_are_cached_and_read_back(tmp_path):
    options = {**TINY, "cache_dir": tmp_path}
    first = get_plugin_manager().create("task", "listops", options).load_split("test")
    (folder,) = (tmp_path / "listops").iterdir()
    assert sorted(path.name for path in folder.iterdir()) == ["config.json", "test.arrow"]
    again = get_plugin_manager().create("task", "listops", options).load_split("test")
    assert again.cache_files[0]["filename"] == str(folder / "test.arrow")
    assert again.to_list() == first.to_list()
    reseeded = get_plugin_manager().create("task", "listops", {**options, "seed": 1})
    reseeded.load_split("test")
    assert len(list((tmp_path / "listops").iterdir())) == 2


def test_memo_gets_no_token_edits_from_listops_and_says_which_option_to_set(task):
    """Editing a ListOps token changes the expression's value: no default augmentations."""
    objective = get_plugin_manager().create("objective", "memo")
    with pytest.raises(ConfigError, match="ListOpsTask provides none.*augmentations"):
        objective.check(task)
