"""`text-classification` on local csv/tsv/json/jsonl/parquet files: splits, labels, errors."""

from __future__ import annotations

import json

import datasets
import pytest
import torch
from pydantic import ValidationError

from attd_core import ConfigError
from attd_text.encoders import BYTE_OFFSET, CLS_ID, EOS_ID
from attd_text.options import TextClassificationOptions


@pytest.fixture
def make(manager, tmp_path):
    def make(**options):
        options.setdefault("cache_dir", str(tmp_path / "hf-cache"))
        return manager.create("task", "text-classification", options)

    return make


def split_sizes(task):
    return {split: len(task.load_split(split)) for split in ("train", "validation", "test")}


def test_registered_with_its_options(manager):
    spec = manager.get("task", "text-classification")
    assert spec.factory == "attd_text.classification:TextClassificationTask"
    assert spec.config is TextClassificationOptions
    with pytest.raises(ValidationError, match="text_colum"):
        spec.config.model_validate({"data_files": "x.csv", "text_colum": "t"})


def test_one_csv_file_is_a_whole_task_with_carved_splits(make, reviews_csv):
    task = make(data_files=str(reviews_csv))
    assert split_sizes(task) == {"train": 32, "validation": 4, "test": 4}
    assert task.num_classes == 2 and task.label_names == ["neg", "pos"]
    texts = [set(task.load_split(split)["text"]) for split in ("train", "validation", "test")]
    assert len(texts[0] | texts[1] | texts[2]) >= 1  # nothing lost
    again = make(data_files=str(reviews_csv))
    assert again.load_split("test")["text"] == task.load_split("test")["text"]  # seeded
    other = make(data_files=str(reviews_csv), seed=1)
    assert other.load_split("test")["text"] != task.load_split("test")["text"]


def test_preprocess_encodes_pads_and_maps_string_labels(make, reviews_csv):
    task = make(data_files=str(reviews_csv), encoder_options={"eos": True, "cls": True})
    rows = [task.load_split("train")[i] for i in range(4)]
    batch = task.preprocess(rows)
    lengths = batch.mask.sum(dim=1)
    assert batch.inputs.shape == (4, int(lengths.max()))
    assert batch.aux["lengths"].tolist() == lengths.tolist()
    for row, example, length in zip(batch.inputs, rows, lengths, strict=True):
        assert row[0] == CLS_ID and row[length - 1] == EOS_ID
        assert bytes(int(t) - BYTE_OFFSET for t in row[1 : length - 1]) == example["text"].encode()
        assert (row[length:] == 0).all()
    assert batch.labels.tolist() == [task.label_names.index(row["label"]) for row in rows]
    assert task.input_spec.vocab_size == 259 and task.input_spec.pad_id == 0


def test_sequence_length_matches_the_encoded_length(make, reviews_csv):
    task = make(data_files=str(reviews_csv), max_length=12, encoder_options={"eos": True})
    for example in task.load_split("train"):
        assert task.sequence_length(example) == task.preprocess([example]).inputs.shape[1]
    assert max(task.sequence_length(example) for example in task.load_split("train")) == 12


@pytest.mark.parametrize("fmt", ["csv", "tsv", "json", "jsonl", "parquet"])
def test_every_file_format_loads_per_split(files, make, tmp_path, fmt):
    rows = files.reviews(30)
    parts = {"train": rows[:20], "validation": rows[20:25], "test": rows[25:]}
    paths = {}
    for split, part in parts.items():
        path = tmp_path / f"{split}.{fmt}"
        if fmt == "csv":
            files.csv(path, part)
        elif fmt == "tsv":
            files.csv(path, part, delimiter="\t")
        elif fmt == "json":
            path.write_text(json.dumps(part))
        elif fmt == "jsonl":
            files.jsonl(path, part)
        else:
            datasets.Dataset.from_list(part).to_parquet(str(path))
        paths[split] = str(path)
    task = make(data_files=paths)
    assert split_sizes(task) == {"train": 20, "validation": 5, "test": 5}
    assert task.load_split("test")[0] == parts["test"][0]
    assert task.preprocess(list(task.load_split("validation"))).labels.shape == (5,)


def test_int_labels_and_renamed_columns_and_splits(files, make, tmp_path):
    rows = [{"review": r["text"], "stars": int(r["label"] == "pos")} for r in files.reviews(24)]
    files.jsonl(tmp_path / "a.jsonl", rows[:16])
    files.jsonl(tmp_path / "b.jsonl", rows[16:20])
    files.jsonl(tmp_path / "c.jsonl", rows[20:])
    task = make(
        data_files={"fit": str(tmp_path / "a.jsonl"), "dev": str(tmp_path / "b.jsonl"),
                    "eval": str(tmp_path / "c.jsonl")},
        splits={"train": "fit", "validation": "dev", "test": "eval"},
        text_column="review",
        label_column="stars",
    )  # fmt: skip
    assert split_sizes(task) == {"train": 16, "validation": 4, "test": 4}
    assert task.num_classes == 2 and task.label_names is None
    batch = task.preprocess(list(task.load_split("test")))
    assert batch.labels.tolist() == [row["stars"] for row in rows[20:]]


def test_given_labels_fix_the_order_and_num_classes_may_exceed_them(make, reviews_csv):
    task = make(data_files=str(reviews_csv), labels=["pos", "neg"], num_classes=3)
    assert task.label_names == ["pos", "neg"] and task.num_classes == 3
    example = task.load_split("train")[0]
    assert task.preprocess([example]).labels.item() == ["pos", "neg"].index(example["label"])


def test_given_labels_name_numeric_values_too(files, make, tmp_path):
    rows = [
        {"text": r["text"], "label": 5 if r["label"] == "pos" else 1} for r in files.reviews(20)
    ]
    task = make(data_files=str(files.csv(tmp_path / "stars.csv", rows)), labels=["1", "5"])
    assert task.num_classes == 2
    batch = task.preprocess(list(task.load_split("train")))
    assert batch.labels.tolist() == [int(row["label"] == 5) for row in task.load_split("train")]


def test_class_label_features_give_the_names(files, make, tmp_path):
    features = datasets.Features(
        {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])}
    )
    rows = [{"text": r["text"], "label": int(r["label"] == "pos")} for r in files.reviews(20)]
    path = tmp_path / "data.parquet"
    datasets.Dataset.from_list(rows, features=features).to_parquet(str(path))
    task = make(data_files=str(path))
    assert task.label_names == ["neg", "pos"] and task.num_classes == 2


def test_limits_take_a_seeded_subset_of_every_class(files, make, tmp_path):
    rows = sorted(files.reviews(60), key=lambda row: row["label"])  # sorted by label, like IMDB
    path = files.csv(tmp_path / "sorted.csv", rows)
    task = make(data_files=str(path), limit_train=10, limit_test=3, test_fraction=0.2)
    assert split_sizes(task) == {"train": 10, "validation": 6, "test": 3}
    assert set(task.load_split("train")["label"]) == {"neg", "pos"}


def test_tokenizer_encoder_through_the_task(files, make, reviews_csv, tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    words = [
        "[UNK]",
        "[PAD]",
        "a",
        "film",
        *sorted(set(" ".join(r["text"] for r in files.reviews()).split())),
    ]
    vocab = {word: index for index, word in enumerate(dict.fromkeys(words))}
    tokenizer = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    task = make(
        data_files=str(reviews_csv),
        encoder="tokenizer",
        encoder_options={"path": str(tmp_path / "tokenizer.json"), "eos": True},
    )
    assert task.input_spec.vocab_size == len(vocab) + 1  # a new EOS id
    assert task.input_spec.pad_id == 1
    example = task.load_split("train")[0]
    batch = task.preprocess([example])
    assert batch.inputs.shape[1] == len(example["text"].split()) + 1
    assert task.encoder.max_length == 1024  # task.max_length caps the encoder's
    assert task.options.encoder_options["add_special_tokens"] is False  # defaults filled in


# -- errors ------------------------------------------------------------------------------


def test_missing_file_is_named(make, reviews_csv, tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match=r"task.data_files.test: file not found: '.*nope.csv'"):
        make(data_files={"train": str(reviews_csv), "test": str(tmp_path / "nope.csv")})
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        ConfigError,
        match=r"task.data_files: file not found: 'data/x.csv' \(looked at /.*/data/x.csv\)",
    ):
        make(data_files="data/x.csv")


def test_missing_column_lists_the_columns(make, reviews_csv):
    task = make(data_files=str(reviews_csv), text_column="body")
    with pytest.raises(
        ConfigError, match=r"task.text_column: column 'body' not found .* columns: text, label"
    ):
        task.load_split("train")
    task = make(data_files=str(reviews_csv), label_column="sentiment")
    with pytest.raises(ConfigError, match="column 'sentiment' not found"):
        task.num_classes  # noqa: B018  (the labels load with the data)


def test_non_text_column_is_refused(files, make, tmp_path):
    path = files.csv(tmp_path / "ints.csv", [{"text": 3, "label": 0}, {"text": 4, "label": 1}] * 5)
    with pytest.raises(ConfigError, match="column 'text' .* holds int64 values, not text"):
        make(data_files=str(path)).load_split("train")


def test_unknown_split_is_refused(make, reviews_csv):
    task = make(data_files=str(reviews_csv))
    with pytest.raises(ConfigError, match="no split 'dev'; splits: train, validation, test"):
        task.load_split("dev")


def test_split_named_in_options_must_exist(make, reviews_csv):
    task = make(data_files={"train": str(reviews_csv)}, splits={"validation": "dev"})
    with pytest.raises(
        ConfigError, match=r"task.splits.validation: .* no split 'dev'; its splits: train"
    ):
        task.load_split("train")


def test_missing_split_without_a_fraction_says_how_to_fix_it(make, reviews_csv):
    task = make(data_files=str(reviews_csv), test_fraction=0)
    with pytest.raises(ConfigError, match=r"no split 'test'.*task.test_fraction > 0"):
        task.load_split("train")


def test_unknown_string_label_in_another_split_is_named(files, make, tmp_path):
    train = files.csv(tmp_path / "train.csv", files.reviews(10))
    test = files.csv(tmp_path / "test.csv", [{"text": "so so", "label": "meh"}, *files.reviews(3)])
    task = make(data_files={"train": str(train), "test": str(test)})
    with pytest.raises(
        ConfigError, match=r"label 'meh' in split 'test' is not a known label \('neg', 'pos'\)"
    ):
        task.load_split("train")


def test_out_of_range_and_fractional_int_labels_are_named(files, make, tmp_path):
    rows = [{"text": "x", "label": i % 2} for i in range(10)]
    train = files.jsonl(tmp_path / "train.jsonl", rows)
    test = files.jsonl(tmp_path / "test.jsonl", [{"text": "y", "label": -1}])
    task = make(data_files={"train": str(train), "test": str(test)})
    with pytest.raises(ConfigError, match=r"label -1 in split 'test' is outside 0..1"):
        task.num_classes  # noqa: B018
    frac = files.jsonl(
        tmp_path / "frac.jsonl", [{"text": "x", "label": 0.5}, {"text": "y", "label": 1.0}] * 5
    )
    with pytest.raises(ConfigError, match=r"label 0.5 in split 'train' is not a class"):
        make(data_files=str(frac)).num_classes  # noqa: B018


def test_num_classes_too_small_and_single_class_are_refused(files, make, reviews_csv, tmp_path):
    with pytest.raises(ValidationError, match="num_classes"):
        TextClassificationOptions(data_files="x.csv", num_classes=1)
    task = make(data_files=str(reviews_csv), labels=["neg", "pos", "mixed"], num_classes=2)
    with pytest.raises(ConfigError, match=r"task.num_classes is 2, but the labels need 3"):
        task.num_classes  # noqa: B018
    one = files.csv(tmp_path / "one.csv", [{"text": "x", "label": "pos"}] * 10)
    with pytest.raises(ConfigError, match="only 1 class"):
        make(data_files=str(one)).num_classes  # noqa: B018


def test_options_need_one_source_and_known_encoder_options():
    with pytest.raises(ValidationError, match="exactly one of dataset or data_files"):
        TextClassificationOptions()
    with pytest.raises(ValidationError, match="exactly one of dataset or data_files"):
        TextClassificationOptions(dataset="stanfordnlp/imdb", data_files="a.csv")
    with pytest.raises(ValidationError, match="eso"):
        TextClassificationOptions(data_files="a.csv", encoder_options={"eso": True})
    filled = TextClassificationOptions(data_files="a.csv", encoder_options={"eos": True})
    assert filled.encoder_options == {"eos": True, "cls": False}


def test_unknown_encoder_lists_the_installed_ones(make, reviews_csv, monkeypatch):
    from attd_core import PluginError

    with pytest.raises(PluginError, match="unknown encoder 'words'; available: .*bytes"):
        make(data_files=str(reviews_csv), encoder="words")


def test_unreadable_extension_and_mixed_formats_ask_for_format(files, make, tmp_path):
    data = tmp_path / "data.dat"
    data.write_text("text,label\nx,1\n")
    with pytest.raises(ConfigError, match=r"are not tables with named columns"):
        make(data_files=str(data)).load_split("train")
    csv = files.csv(tmp_path / "a.csv", files.reviews(4))
    with pytest.raises(ConfigError, match="cannot tell one format .*set task.format"):
        make(data_files=[str(csv), str(data)]).load_split("train")
    task = make(data_files=str(data), format="csv", validation_fraction=0, test_fraction=0,
                splits={})  # fmt: skip
    with pytest.raises(ConfigError, match="no split 'validation'"):
        task.load_split("train")


def test_hub_dataset_offline_is_a_config_error(make):
    task = make(dataset="nobody/no-such-dataset-attd")
    with pytest.raises(ConfigError, match="cannot load dataset 'nobody/no-such-dataset-attd'"):
        task.load_split("train")


def test_empty_text_is_one_real_pad_token(files, make, tmp_path):
    rows = [{"text": None, "label": 0}, {"text": "", "label": 1}] * 5
    task = make(data_files=str(files.jsonl(tmp_path / "d.jsonl", rows)))
    examples = list(task.load_split("train"))[:2]
    batch = task.preprocess(examples)
    assert batch.inputs.tolist() == [[0], [0]] and batch.mask.all()
    assert [task.sequence_length(example) for example in examples] == [1, 1]
    assert torch.equal(batch.aux["lengths"], torch.tensor([1, 1]))


def test_memo_takes_the_tasks_token_edits_and_keeps_each_texts_length(make, manager, reviews_csv):
    from attd_core import sample_views
    from attd_core.testing import task_batch, tiny_backbone, tiny_bound_model

    task = make(data_files=str(reviews_csv), max_length=24)
    assert task.augmentations == ("token-substitution:1",)
    objective = manager.create("objective", "memo", {"views": 3})
    objective.check(task)
    batch = task_batch(task, "test", 4)
    views = sample_views(batch, objective.augmentations(task), 3, 0, task.input_spec.fill_id)
    lengths = batch.mask.sum(dim=1).repeat_interleave(3)
    assert torch.equal(views.mask.sum(dim=1), lengths)
    assert not torch.equal(views.inputs[0], views.inputs[1])  # 5 % of ~24 bytes edited
    backbone = tiny_backbone(d_model=8)
    bound = tiny_bound_model(task=task, backbone=backbone)
    loss = objective(bound, batch, bound.init_adapter_state(len(batch)), bound(batch))
    assert loss.shape == (4,) and torch.isfinite(loss).all()
