"""`language-modeling` evaluates dynamically: TTA adapts on a block's prefix, the rest is scored.

The inner objective must never see a scored byte: next-token TTA on the scored block
itself memorises it, and the perplexity gain is then a leak (the first test shows it).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import attd_core
from attd_core import ConfigError, parse_component
from attd_core.runtime.evaluator import evaluate, evaluation_views
from attd_text.encoders import PAD_ID
from attd_text.language_modeling import IGNORE

BLOCK = 32
MEMORISER = "fixed:20,lr=0.1,optimizer=adam,grad_clip=100"
"""Big Adam steps on a LoRA of every projection: enough to learn a block by heart."""


@pytest.fixture
def make(manager, corpus, tmp_path):
    def make(**options):
        options = {"path": str(corpus), "block_size": BLOCK, **options}
        options.setdefault("cache_dir", str(tmp_path / "hf-cache"))
        return manager.create("task", "language-modeling", options)

    return make


@pytest.fixture
def bound(manager, make):
    """A tiny untrained Mamba LM with a per-sample LoRA on every projection."""
    torch.manual_seed(0)
    backbone = manager.create("backbone", "mamba", {"d_model": 16, "n_layers": 1, "d_state": 4})
    model = attd_core.AttdModel(make(), backbone).eval()
    return attd_core.BoundModel(model, {"lora": manager.create("adapter", "lora", {"rank": 4})})


class Recording:
    """The next-token objective, keeping every batch it is called with."""

    def __init__(self) -> None:
        self.objective = attd_core.NextToken()
        self.seen: list[attd_core.Batch] = []

    def __call__(self, model, batch, state, reference):
        self.seen.append(batch)
        return self.objective(model, batch, state, reference)


def run(manager, bound, spec, examples, objective):
    strategy = parse_component(spec, "strategy", manager).create()
    cpu = torch.device("cpu")
    return evaluate(
        bound, strategy, objective, examples, tta=spec, split="test", batch_size=8, device=cpu
    )


def test_the_inner_objective_never_sees_a_scored_byte_nor_a_label(manager, bound):
    task = bound.task
    examples = list(task.load_split("test"))[:8]
    batch = task.preprocess(examples)
    _, scored = evaluation_views(task, batch, labels=False)
    objective = Recording()
    none = run(manager, bound, "none", examples, objective)

    # Adapting on the whole block, as evaluation used to, learns the scored bytes by heart.
    strategy = parse_component(MEMORISER, "strategy", manager).create()
    bound.reset_generator()
    leaked = strategy.adapt(bound, batch, attd_core.NextToken()).state
    with torch.no_grad():
        leaked_loss = task.compute_metrics(bound(scored, leaked), scored)["loss"]
    assert leaked_loss < none.metrics["loss"] - 1.0

    honest = run(manager, bound, MEMORISER, examples, objective)
    assert honest.metrics["loss"] > leaked_loss + 1.0
    assert objective.seen and all(seen.labels is None for seen in objective.seen)
    prefix = batch.inputs[:, : BLOCK // 2]
    for seen in objective.seen:
        assert seen.inputs.shape == prefix.shape and seen.mask.all()
        assert torch.equal(seen.inputs, prefix)  # the first half of each block, nothing more


def test_every_strategy_is_scored_on_the_bytes_after_the_prefix(manager, bound, monkeypatch):
    task = bound.task
    examples = list(task.load_split("test"))[:8]
    scored_labels = []
    compute_metrics = task.compute_metrics

    def recorded(output, batch):
        scored_labels.append(batch.labels)
        return compute_metrics(output, batch)

    monkeypatch.setattr(task, "compute_metrics", recorded)
    none = run(manager, bound, "none", examples, attd_core.NextToken())
    run(manager, bound, "fixed:1,lr=0.01", examples, attd_core.NextToken())

    batch = task.preprocess(examples)
    expected = batch.labels.clone()
    expected[:, : BLOCK // 2] = IGNORE
    assert len(scored_labels) == 2 and all(torch.equal(s, expected) for s in scored_labels)
    with torch.no_grad():
        logits = bound(batch).logits[:, BLOCK // 2 - 1 : -1]
    by_hand = F.cross_entropy(logits.transpose(1, 2), batch.inputs[:, BLOCK // 2 :])
    assert none.metrics["loss"] == pytest.approx(float(by_hand), rel=1e-5)


def test_views_cut_each_block_at_its_own_prefix(make):
    task = make(context_fraction=0.25)
    test = task.load_split("test")
    batch = task.preprocess([test[0], test[len(test) - 1]])  # a whole block and a short one
    short = int(batch.mask[1].sum())
    cuts = [BLOCK // 4, short // 4]
    context, scored = evaluation_views(task, batch, labels=True)
    assert context.inputs.shape == (2, BLOCK // 4) and context.aux["lengths"].tolist() == cuts
    for row, cut in enumerate(cuts):
        assert context.mask[row].tolist() == [i < cut for i in range(BLOCK // 4)]
        assert torch.equal(context.inputs[row, :cut], batch.inputs[row, :cut])
        assert (context.inputs[row, cut:] == PAD_ID).all()  # no later byte, even as padding
        assert (context.labels[row, cut:] == IGNORE).all()
        assert (scored.labels[row, :cut] == IGNORE).all()
        assert torch.equal(scored.labels[row, cut:], batch.labels[row, cut:])
    assert torch.equal(scored.inputs, batch.inputs) and batch.labels.ne(IGNORE).sum() > 0


def test_without_context_every_byte_is_scored_and_nothing_is_adapted_on(manager, make):
    task = make(context_fraction=0)
    batch = task.preprocess(list(task.load_split("test"))[:3])
    context, scored = evaluation_views(task, batch, labels=False)
    assert context.inputs.shape == (3, 1) and not context.mask.any()
    assert context.labels is None and torch.equal(scored.labels, batch.labels)


@pytest.mark.parametrize("value", ["1", "-0.1", "1.5"])
def test_a_context_fraction_outside_0_to_1_is_an_error_naming_it(manager, corpus, value):
    overrides = [f"task.path={corpus}", f"task.context_fraction={value}"]
    with pytest.raises(ConfigError, match=r"task\.context_fraction"):
        attd_core.resolve_run_config(manager, task="language-modeling", overrides=overrides)


def test_without_context_adapting_changes_no_score(manager, make, bound):
    bound.model.task = make(context_fraction=0)
    examples = list(bound.task.load_split("test"))[:4]
    none = run(manager, bound, "none", examples, attd_core.NextToken())
    fixed = run(manager, bound, MEMORISER, examples, attd_core.NextToken())
    assert fixed.mean_k == 20 and fixed.metrics == pytest.approx(none.metrics)
