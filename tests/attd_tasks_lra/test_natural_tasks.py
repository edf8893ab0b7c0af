"""LRA's natural-data tasks (lra-text, lra-image, lra-retrieval) on tiny offline fixtures.

Local files stand in for IMDB, CIFAR-10 and AAN; the Hub loaders are exercised by
replacing `datasets.load_dataset` with an in-memory copy of each Hub dataset's layout.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

import attd_tasks_lra._plugin as lra_plugin
from attd_core import Batch, ConfigError, resolve_run_config
from attd_core.testing import TaskConformance, new_plugin_manager, tiny_bound_model, tiny_model

WORDS = {0: ["dull", "bad", "boring", "poor"], 1: ["great", "superb", "lovely", "fine"]}
CLASSES = {"bird": (200, 40, 40), "cat": (40, 200, 40), "dog": (40, 40, 200)}


def create(name: str, **options):
    return new_plugin_manager(lra=lra_plugin).create("task", name, options)


# -- fixtures written to disk -------------------------------------------------------------


def review_rows(n: int, seed: int) -> list[dict]:
    """Reviews of varied length whose words give the label (0 or 1) away."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = i % 2
        words = rng.choices(WORDS[label], k=rng.randint(1, 8))
        rows.append({"text": "the film was " + " ".join(words), "label": label})
    return rows


def write_reviews(folder: Path, n_train: int = 16, n_test: int = 8) -> dict[str, str]:
    """IMDB-like jsonl files: `{"train": path, "test": path}`."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, n in (("train", n_train), ("test", n_test)):
        path = folder / f"{split}.jsonl"
        rows = review_rows(n, seed=len(split))
        path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
        paths[split] = str(path)
    return paths


def write_images(root: Path, per_class: dict[str, int], size: int = 32) -> Path:
    """`root/{split}/LABEL/N.png`: RGB images, each class its own tint plus noise."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in per_class.items():
        for label, color in CLASSES.items():
            (root / split / label).mkdir(parents=True, exist_ok=True)
            for index in range(count):
                noise = rng.integers(-30, 30, (size, size, 3))
                pixels = np.clip(np.array(color) + noise, 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(root / split / label / f"{index}.png")
    return root


def aan_line(label: str, first: str, second: str, index: int) -> str:
    return f"{label}\tid{index}a\tid{index}b\t{first}\t{second}"


def aan_pairs(n: int, seed: int) -> list[str]:
    """Pairs that share a topic word (label 1) or not (label 0); labels as LRA writes them
    (floats and ints), texts with quotes and varied lengths."""
    rng = random.Random(seed)
    topics = ["parsing", "tagging", "translation", "speech", "retrieval", "semantics"]
    lines = []
    for i in range(n):
        first, second = rng.sample(topics, 2)
        label = i % 2
        second = first if label else second
        text1 = f'b"we study {first} " ' + "with care " * rng.randint(0, 6)
        text2 = f"a paper on {second}" + " and more" * rng.randint(0, 9)
        lines.append(aan_line(["0", "1.0"][label], text1, text2, i))
    return lines


def write_aan(folder: Path, sizes: tuple[int, int, int] = (16, 8, 8)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for seed, (split, n) in enumerate(zip(("train", "eval", "test"), sizes, strict=True), 1):
        lines = aan_pairs(n, seed)
        (folder / f"new_aan_pairs.{split}.tsv").write_text("\n".join(lines) + "\n")
    return folder


def encoded(text: str) -> list[int]:
    """attd-text's byte ids: 3 + b for each UTF-8 byte b."""
    return [3 + byte for byte in text.encode("utf-8")]


EOS = 1


# -- conformance ---------------------------------------------------------------------------


class _OnDisk(TaskConformance):
    splits = ("train", "validation", "test")

    @pytest.fixture(autouse=True)
    def _data_dir(self, tmp_path_factory):
        """A folder for the data files; autouse fixtures run before the suite's."""
        if "data_dir" not in type(self).__dict__:
            type(self).data_dir = tmp_path_factory.mktemp(type(self).__name__)


class TestTextConformance(_OnDisk):
    def make_task(self):
        files = write_reviews(self.data_dir / "reviews")
        return create("lra-text", data_files=files, cache_dir=str(self.data_dir / "hf"))


class TestImageConformance(_OnDisk):
    sample_size = 6

    def make_task(self):
        root = write_images(self.data_dir / "images", {"train": 4, "test": 2}, size=8)
        return create(
            "lra-image",
            dataset=str(root),
            image_size=8,
            validation_fraction=0.25,
            cache_dir=str(self.data_dir / "hf"),
        )


class TestRetrievalConformance(_OnDisk):
    def make_task(self):
        folder = write_aan(self.data_dir / "aan")
        return create("lra-retrieval", data_dir=str(folder), cache_dir=str(self.data_dir / "hf"))

    def test_sequence_length_measures_an_example(self, attd_task, attd_examples):
        """Replaces the suite's check: a pair's length is its longer document's, since
        the runtime groups pairs by it and each document is padded on its own."""
        for example in attd_examples[:4]:
            batch = attd_task.preprocess([example])
            longer = max(int(batch.mask.sum()), int(batch.aux["mask2"].sum()))
            assert attd_task.sequence_length(example) == longer


# -- lra-text --------------------------------------------------------------------------------


@pytest.fixture
def text_task(tmp_path):
    files = write_reviews(tmp_path / "reviews")
    return create("lra-text", data_files=files, cache_dir=str(tmp_path / "hf"))


def test_text_encodes_bytes_with_eos_and_truncates(tmp_path):
    files = write_reviews(tmp_path / "reviews")
    task = create("lra-text", data_files=files, cache_dir=str(tmp_path / "hf"))
    assert task.input_spec.vocab_size == 259 and task.input_spec.pad_id == 0
    assert task.options.max_length == 4096
    assert task.encode({"text": "héllo"}) == [*encoded("héllo"), EOS]
    short = create("lra-text", data_files=files, cache_dir=str(tmp_path / "hf"), max_length=4)
    assert short.encode({"text": "héllo"}) == [*encoded("hé"), EOS]  # h, é (2 bytes), EOS
    assert short.sequence_length({"text": "héllo"}) == 4
    batch = short.preprocess([{"text": "héllo", "label": 1}, {"text": "a", "label": 0}])
    assert batch.inputs.tolist() == [[*encoded("hé"), EOS], [*encoded("a"), EOS, 0, 0]]
    assert batch.mask.sum(dim=1).tolist() == [4, 2] and batch.labels.tolist() == [1, 0]


def test_text_validation_is_the_test_split_by_default(text_task):
    assert list(text_task.load_split("validation")["text"]) == list(
        text_task.load_split("test")["text"]
    )
    assert len(text_task.load_split("train")) == 16  # nothing carved from train


def test_text_validation_can_come_from_the_source(tmp_path):
    files = write_reviews(tmp_path / "reviews", n_train=20)
    task = create(
        "lra-text",
        data_files=files,
        validation_split="source",
        validation_fraction=0.25,
        cache_dir=str(tmp_path / "hf"),
    )
    sizes = {split: len(task.load_split(split)) for split in ("train", "validation", "test")}
    assert sizes == {"train": 15, "validation": 5, "test": 8}


def test_text_single_file_needs_validation_from_the_source(tmp_path):
    files = write_reviews(tmp_path / "reviews")
    with pytest.raises(ValidationError, match="validation_split"):
        create("lra-text", data_files=files["train"])
    task = create(
        "lra-text",
        data_files=files["train"],
        validation_split="source",
        cache_dir=str(tmp_path / "hf"),
    )
    assert len(task.load_split("test")) == 2 and len(task.load_split("validation")) == 2


def test_text_reads_csv_and_limits_splits(tmp_path):
    rows = review_rows(12, seed=0)
    for split in ("train", "test"):
        lines = ["text,label"] + [f"{row['text']},{row['label']}" for row in rows]
        (tmp_path / f"{split}.csv").write_text("\n".join(lines) + "\n")
    files = {split: str(tmp_path / f"{split}.csv") for split in ("train", "test")}
    task = create(
        "lra-text", data_files=files, limit_train=5, limit_test=3, cache_dir=str(tmp_path / "hf")
    )
    assert len(task.load_split("train")) == 5 and len(task.load_split("test")) == 3
    assert task.num_classes == 2


def test_text_export_record(text_task):
    example = text_task.load_split("train")[1]
    record = text_task.export_record(example)
    assert record == {"text": example["text"], "label": 1}
    json.dumps(record)


def test_text_hub_copy_layout(monkeypatch, tmp_path):
    """The Hub's IMDB: train / test / unsupervised (label -1); unsupervised is never read."""
    import datasets

    label = datasets.ClassLabel(names=["neg", "pos"])
    features = datasets.Features({"text": datasets.Value("string"), "label": label})

    def split(n: int, labels: list[int]) -> datasets.Dataset:
        rows = {"text": [f"review {i}" for i in range(n)], "label": labels[:n]}
        return datasets.Dataset.from_dict(rows, features=features)

    calls = []

    def fake_load_dataset(path, name=None, **kwargs):
        calls.append(path)
        return datasets.DatasetDict(
            train=split(10, [0, 1] * 5),
            test=split(6, [1, 0] * 3),
            unsupervised=split(4, [-1] * 4),
        )

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    task = create("lra-text", cache_dir=str(tmp_path / "hf"))
    sizes = {name: len(task.load_split(name)) for name in ("train", "validation", "test")}
    assert calls == ["stanfordnlp/imdb"]
    assert sizes == {"train": 10, "validation": 6, "test": 6}
    assert task.label_names == ["neg", "pos"] and task.num_classes == 2


def test_text_hub_id_offline_is_a_config_error(tmp_path):
    task = create("lra-text", cache_dir=str(tmp_path / "hf"))
    with pytest.raises(ConfigError, match="stanfordnlp/imdb"):
        task.load_split("train")


# -- lra-image -------------------------------------------------------------------------------


def test_image_is_grayscale_1024_tokens(tmp_path):
    root = write_images(tmp_path / "images", {"train": 3, "test": 1})
    task = create(
        "lra-image", dataset=str(root), validation_fraction=0.2, cache_dir=str(tmp_path / "hf")
    )
    assert task.input_spec.vocab_size == 257 and task.input_spec.pad_id == 256
    assert task.options.image_column == "image" and task.num_classes == 3
    example = task.load_split("train")[0]
    batch = task.preprocess([example])
    assert batch.inputs.shape == (1, 1024) and batch.inputs.dtype == torch.long
    from PIL import Image

    from attd_vision import to_array

    rgb = to_array(example["image"], "rgb")
    gray = np.asarray(Image.fromarray(rgb).convert("L"), dtype=np.int64).reshape(-1)
    assert batch.inputs[0].tolist() == gray.tolist()
    assert 0 <= int(batch.inputs.min()) and int(batch.inputs.max()) <= 255


def test_image_float_pixels_through_encoder_options(tmp_path):
    root = write_images(tmp_path / "images", {"train": 3, "test": 1}, size=8)
    task = create(
        "lra-image",
        dataset=str(root),
        image_size=8,
        encoder_options={"dtype": "float", "mean": 0.5, "std": 0.5},
        validation_fraction=0.2,
        cache_dir=str(tmp_path / "hf"),
    )
    assert task.input_spec.channels == 1 and task.input_spec.vocab_size is None
    batch = task.preprocess([task.load_split("test")[0]])
    assert batch.inputs.shape == (1, 64, 1) and batch.inputs.is_floating_point()
    assert -1.0 <= float(batch.inputs.min()) and float(batch.inputs.max()) <= 1.0


def test_image_export_record(tmp_path):
    root = write_images(tmp_path / "images", {"train": 3, "test": 1}, size=8)
    task = create(
        "lra-image",
        dataset=str(root),
        image_size=8,
        validation_fraction=0.2,
        cache_dir=str(tmp_path / "hf"),
    )
    example = task.load_split("test")[0]
    record = task.export_record(example)
    assert (record["height"], record["width"], record["channels"]) == (8, 8, 1)
    assert len(record["pixels"]) == 64 and all(isinstance(v, int) for v in record["pixels"])
    assert record["pixels"] == task.preprocess([example]).inputs[0].tolist()
    assert record["label"] == int(example["label"])
    json.dumps(record)


def test_image_hub_copy_layout_carves_validation_from_train(monkeypatch, tmp_path):
    """The Hub's CIFAR-10 (`img`, `label`; train and test): validation is a seeded tenth
    of train, so 50 / 10 images split 45 / 5 / 10 as 50,000 / 10,000 split 45k / 5k / 10k."""
    import datasets
    from PIL import Image

    features = datasets.Features(
        {"img": datasets.Image(), "label": datasets.ClassLabel(names=list("abcdefghij"))}
    )

    def split(n: int) -> datasets.Dataset:
        images = [Image.new("RGB", (32, 32), (5 * i, 100, 200)) for i in range(n)]
        return datasets.Dataset.from_dict(
            {"img": images, "label": [i % 10 for i in range(n)]}, features=features
        )

    calls = []

    def fake_load_dataset(path, name=None, **kwargs):
        calls.append(path)
        return datasets.DatasetDict(train=split(50), test=split(10))

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    task = create("lra-image", cache_dir=str(tmp_path / "hf"))
    sizes = {name: len(task.load_split(name)) for name in ("train", "validation", "test")}
    assert calls == ["uoft-cs/cifar10"] and sizes == {"train": 45, "validation": 5, "test": 10}
    assert task.num_classes == 10
    assert task.preprocess([task.load_split("validation")[0]]).inputs.shape == (1, 1024)
    again = create("lra-image", cache_dir=str(tmp_path / "hf"))
    assert list(again.load_split("validation")["label"]) == list(
        task.load_split("validation")["label"]
    )


def test_image_hub_id_offline_is_a_config_error(tmp_path):
    task = create("lra-image", cache_dir=str(tmp_path / "hf"))
    with pytest.raises(ConfigError, match="uoft-cs/cifar10"):
        task.load_split("train")


# -- lra-retrieval ---------------------------------------------------------------------------


@pytest.fixture
def aan_task(tmp_path):
    folder = write_aan(tmp_path / "aan")
    return create("lra-retrieval", data_dir=str(folder), cache_dir=str(tmp_path / "hf"))


def test_retrieval_reads_lra_tsv_without_quoting(aan_task):
    sizes = {split: len(aan_task.load_split(split)) for split in ("train", "validation", "test")}
    assert sizes == {"train": 16, "validation": 8, "test": 8}
    first = aan_task.load_split("train")[0]
    assert first["text1"].startswith('b"we study ') and first["id1"] == "id0a"
    labels = [aan_task._label(row["label"]) for row in aan_task.load_split("train")]
    assert labels == [i % 2 for i in range(16)]


def test_retrieval_batches_both_documents_with_eos(tmp_path):
    folder = tmp_path / "aan"
    folder.mkdir()
    for split in ("train", "eval", "test"):
        lines = [aan_line("1", "héllo", "ab", 0), aan_line("0.0", "x", "a longer text", 1)]
        (folder / f"new_aan_pairs.{split}.tsv").write_text("\n".join(lines) + "\n")
    task = create("lra-retrieval", data_dir=str(folder), max_length=4, cache_dir=str(tmp_path))
    rows = [task.load_split("test")[i] for i in range(2)]
    batch = task.preprocess(rows)
    assert batch.inputs.tolist() == [[*encoded("hé"), EOS], [*encoded("x"), EOS, 0, 0]]
    assert batch.aux["inputs2"].tolist() == [[*encoded("ab"), EOS, 0], [*encoded("a l"), EOS]]
    assert batch.aux["mask2"].sum(dim=1).tolist() == [3, 4]
    assert batch.labels.tolist() == [1, 0]
    assert [task.sequence_length(row) for row in rows] == [4, 4]
    picked = batch.select(torch.tensor([1]))
    assert picked.aux["inputs2"].tolist() == [[*encoded("a l"), EOS]]


def test_retrieval_unwraps_bytes_literals_on_request(tmp_path):
    folder = write_aan(tmp_path / "aan")
    task = create(
        "lra-retrieval",
        data_dir=str(folder),
        unwrap_bytes_literals=True,
        cache_dir=str(tmp_path / "hf"),
    )
    row = {"label": "1", "text1": "b'caf\\xc3\\xa9'", "text2": "b'x"}
    batch = task.preprocess([row])
    assert batch.inputs[0].tolist() == [*encoded("café"), EOS]
    assert batch.aux["inputs2"][0].tolist() == [*encoded("b'x"), EOS]


def test_retrieval_export_record(aan_task):
    record = aan_task.export_record(aan_task.load_split("validation")[1])
    assert set(record) == {"text1", "text2", "label"} and record["label"] == 1
    json.dumps(record)


def test_retrieval_data_errors_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="task.data_dir"):
        create("lra-retrieval")
    folder = write_aan(tmp_path / "aan")
    (folder / "new_aan_pairs.eval.tsv").unlink()
    with pytest.raises(ConfigError, match="new_aan_pairs.eval.tsv"):
        create("lra-retrieval", data_dir=str(folder))
    bad = write_aan(tmp_path / "bad")
    (bad / "new_aan_pairs.test.tsv").write_text(aan_line("yes", "a", "b", 0) + "\n")
    task = create("lra-retrieval", data_dir=str(bad), cache_dir=str(tmp_path / "hf"))
    with pytest.raises(ConfigError, match="'yes'"):
        task.load_split("train")
    extra = write_aan(tmp_path / "extra")
    (extra / "new_aan_pairs.train.tsv").write_text(aan_line("1", "a\tstray tab", "b", 0) + "\n")
    task = create("lra-retrieval", data_dir=str(extra), cache_dir=str(tmp_path / "hf2"))
    with pytest.raises(ConfigError, match="cannot read the AAN files"):
        task.load_split("train")


@pytest.fixture
def aan_model(aan_task):
    return tiny_model(aan_task)


def test_retrieval_two_towers_share_every_weight(aan_task, aan_model):
    names = {name.partition(".")[0] for name, _ in aan_model.named_parameters()}
    assert names == {"embed", "backbone", "head"}  # one tower, applied twice
    d_model = aan_model.backbone.d_model
    assert aan_model.head[0].in_features == 4 * d_model
    assert aan_model.head[-1].out_features == 2

    calls = []

    def spy(module, args, kwargs, output):
        calls.append((tuple(args[0].shape), kwargs["adapter_state"]))

    batch = aan_task.preprocess([aan_task.load_split("train")[i] for i in range(4)])
    state = {}
    handle = aan_model.backbone.register_forward_hook(spy, with_kwargs=True)
    try:
        with torch.no_grad():
            aan_model(batch, state)
    finally:
        handle.remove()
    assert [shape for shape, _ in calls] == [
        (*batch.inputs.shape, d_model),
        (*batch.aux["inputs2"].shape, d_model),
    ]
    assert all(given is state for _, given in calls)


def test_retrieval_swapping_documents_swaps_the_towers(aan_task, aan_model):
    batch = aan_task.preprocess([aan_task.load_split("train")[i] for i in range(4)])
    swapped = Batch(
        inputs=batch.aux["inputs2"],
        mask=batch.aux["mask2"],
        labels=batch.labels,
        aux={"inputs2": batch.inputs, "mask2": batch.mask},
    )
    with torch.no_grad():
        out = aan_model(batch)
        out_swapped = aan_model(swapped)
        x1, x2 = out.pooled, out_swapped.pooled
        pair, pair_swapped = (aan_task.pair_towers(*xs) for xs in ((x1, x2), (x2, x1)))
        torch.testing.assert_close(aan_model.head(pair), out.logits)
        torch.testing.assert_close(aan_model.head(pair_swapped), out_swapped.logits)
    d = x1.shape[-1]
    torch.testing.assert_close(pair_swapped[:, 3 * d :], -pair[:, 3 * d :])  # x1 - x2 flips
    torch.testing.assert_close(pair_swapped[:, 2 * d : 3 * d], pair[:, 2 * d : 3 * d])
    assert not torch.equal(out.logits, out_swapped.logits)


def test_retrieval_gradient_reaches_the_shared_tower_from_both_documents(aan_task, aan_model):
    row = {"label": "1", "text1": "aaaa", "text2": "zzzzzz"}
    batch = aan_task.preprocess([row, {**row, "label": "0"}])
    output = aan_model(batch)
    loss = aan_task.compute_loss(output, batch)
    embedding = aan_model.embed.weight
    grad_embed, *grad_backbone = torch.autograd.grad(
        loss, [embedding, *aan_model.backbone.parameters()], allow_unused=True
    )
    only_in_doc2 = encoded("z")[0]
    assert float(grad_embed[only_in_doc2].abs().sum()) > 0  # document 2's tokens learn
    assert float(grad_embed[encoded("a")[0]].abs().sum()) > 0
    assert any(g is not None and float(g.abs().sum()) > 0 for g in grad_backbone)


@pytest.mark.parametrize("objective", ["entropy-kl", "consistency", "masked-reconstruction"])
def test_retrieval_inner_objectives_adapt_through_both_towers(aan_task, objective):
    """The objectives run on pairs. masked-reconstruction blanks document 1's tokens with
    the pad id, whose embedding is zero: Mamba's gate zeroes those positions' features
    whatever the adapter, so its gradient is zero here as on any task (not checked)."""
    manager = new_plugin_manager()
    bound = tiny_bound_model(aan_task)
    batch = aan_task.preprocess([aan_task.load_split("test")[i] for i in range(4)])
    loss_fn = manager.create("objective", objective)
    with torch.no_grad():
        reference = bound(batch)
    state = {k: v.requires_grad_(True) for k, v in bound.init_adapter_state(4).items()}
    losses = loss_fn(bound, batch, state, reference)
    assert losses.shape == (4,) and bool(torch.isfinite(losses).all())
    grads = torch.autograd.grad(losses.sum(), list(state.values()), allow_unused=True)
    if objective != "masked-reconstruction":
        assert any(g is not None and float(g.abs().sum()) > 0 for g in grads)
    strategy = manager.create("strategy", "fixed", {"k": 1})
    result = strategy.adapt(bound, batch, loss_fn)
    assert result.steps.tolist() == [1, 1, 1, 1]


def test_retrieval_next_token_fails_clearly(aan_task):
    bound = tiny_bound_model(aan_task)
    batch = aan_task.preprocess([aan_task.load_split("test")[0]])
    loss_fn = new_plugin_manager().create("objective", "next-token")
    with torch.no_grad():
        reference = bound(batch)
    with pytest.raises(ValueError, match="per-token logits"):
        loss_fn(bound, batch, bound.init_adapter_state(1), reference)


# -- registration and presets ----------------------------------------------------------------

TASKS = ("lra-text", "lra-image", "lra-retrieval")


@pytest.mark.parametrize("name", TASKS)
@pytest.mark.parametrize("preset", [None, "cpu", "paper"])
def test_presets_resolve(name, preset):
    manager = new_plugin_manager(lra=lra_plugin)
    resolved = resolve_run_config(manager, task=name, preset=preset)
    config = resolved.config
    options = config.task.options()
    if preset == "paper":
        backbone = config.model.backbone.options()
        assert (backbone["d_model"], backbone["n_layers"], backbone["d_state"]) == (256, 6, 64)
        assert config.model.pooling == "masked-mean" and config.train.lr == 0.01
        assert config.train.warmup_ratio == 0.1
        assert all(options[f"limit_{s}"] is None for s in ("train", "validation", "test"))
    else:
        assert options["limit_train"] is not None
    lengths = {"lra-text": (512, 4096), "lra-retrieval": (512, 4000)}
    if name in lengths:
        assert options["max_length"] == lengths[name][preset == "paper"]
    else:
        assert options["image_size"] == (32 if preset == "paper" else 16)


def test_paper_presets_use_s4_batches_and_epochs():
    manager = new_plugin_manager(lra=lra_plugin)
    expected = {"lra-text": (16, 32), "lra-image": (50, 200), "lra-retrieval": (64, 20)}
    for name, (batch_size, epochs) in expected.items():
        train = resolve_run_config(manager, task=name, preset="paper").config.train
        assert (train.batch_size, train.epochs) == (batch_size, epochs)
    image = resolve_run_config(manager, task="lra-image", preset="paper").config.task.options()
    assert image["encoder_options"]["dtype"] == "float"


def test_local_text_files_replace_the_hub_id_in_the_config(tmp_path):
    files = write_reviews(tmp_path / "reviews")
    manager = new_plugin_manager(lra=lra_plugin)
    overrides = [f"task.data_files={json.dumps(files)}"]
    options = resolve_run_config(manager, task="lra-text", overrides=overrides).config.task
    assert options.options()["dataset"] is None


def test_registration_imports_no_torch():
    import subprocess
    import sys

    code = (
        "import sys; import attd_tasks_lra.natural.specs as s; "
        "assert len(s.SPECS) == 3; "
        "bad = [m for m in ('torch', 'datasets') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_retrieval_rereads_a_changed_file(tmp_path):
    folder = write_aan(tmp_path / "aan")
    cache = str(tmp_path / "hf")
    first = create("lra-retrieval", data_dir=str(folder), cache_dir=cache)
    assert len(first.load_split("test")) == 8
    (folder / "new_aan_pairs.test.tsv").write_text(aan_line("1", "new", "pair", 9) + "\n")
    second = create("lra-retrieval", data_dir=str(folder), cache_dir=cache)
    assert second.load_split("test")["text1"] == ["new"]
