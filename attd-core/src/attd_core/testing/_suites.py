"""Conformance suites: the contracts of `attd_core.interfaces`, as tests to subclass.

The module imports no torch: every test imports it when it runs. Shared objects (the
component under test, a tiny model, a batch) are class-scoped fixtures, built once per
subclass; tests never change them (gradients go through `torch.autograd.grad`, so no
parameter's `.grad` fills up).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any, ClassVar

import pytest

from attd_core.interfaces import (
    SLOT_KINDS,
    Adaptation,
    Adapter,
    AdapterSlot,
    Backbone,
    Batch,
    InputSpec,
    ModelOutput,
    Task,
    TTAStrategy,
)

if TYPE_CHECKING:
    from torch import Tensor

    from attd_core.interfaces import AdapterState, InnerObjective
    from attd_core.model import AttdModel, BoundModel

_VECTOR_KINDS = ("dt_bias", "D", "norm_weight", "norm_bias")
_MATRIX_KINDS = ("A", "A_log", "weight")


def _factories() -> Any:
    from attd_core.testing import _factories

    return _factories


def _close(
    actual: Tensor, expected: Tensor, atol: float, rtol: float, why: str | Callable[[], str]
) -> None:
    import torch

    def message(default: str) -> str:
        return f"{why() if callable(why) else why}\n{default}"

    torch.testing.assert_close(actual, expected, atol=atol, rtol=rtol, msg=message)


def _differs(a: Tensor, b: Tensor) -> bool:
    """Whether anything changed at all: an unread delta leaves the output bitwise equal,
    while a read one may change it very little (A barely matters at small step sizes)."""
    import torch

    return not torch.equal(a.detach(), b.detach())


def _snapshot(module: Any) -> dict[str, Tensor]:
    return {key: value.detach().clone() for key, value in module.state_dict().items()}


def _changed(module: Any, before: Mapping[str, Tensor]) -> list[str]:
    import torch

    after = module.state_dict()
    return sorted(
        key
        for key in set(before) | set(after)
        if key not in before or key not in after or not torch.equal(before[key], after[key])
    )


def _once(owner: object, key: str, build: Callable[[], Any]) -> Any:
    """`build()` once per test class (not shared with subclasses), then the same object.

    Function-scoped fixtures memoised on the class: the suites' shared objects are built
    once per subclass, with no class-scoped fixture methods (whose form differs between
    pytest versions).
    """
    cls = type(owner)
    built = cls.__dict__.get("_attd_built")
    if built is None:
        built = {}
        cls._attd_built = built  # type: ignore[attr-defined]
    if key not in built:
        built[key] = build()
    return built[key]


def _generator(seed: int) -> Any:
    import torch

    return torch.Generator().manual_seed(seed)


def _like(tensor: Tensor, seed: int, scale: float = 1.0) -> Tensor:
    import torch

    noise = torch.randn(tensor.shape, generator=_generator(seed), dtype=tensor.dtype)
    return scale * noise.to(tensor.device)


def _describe(value: Any) -> str:
    shape = getattr(value, "shape", None)
    if shape is not None:
        return f"tensor of shape {tuple(shape)} and dtype {value.dtype}"
    return type(value).__name__


def _dtype_and_device(module: Any, default: Any) -> Any:
    parameters = getattr(module, "parameters", None)
    first = next(iter(parameters()), None) if callable(parameters) else None
    return (first.dtype, first.device) if first is not None else default


# -- tasks -------------------------------------------------------------------------------


class TaskConformance:
    """The `Task` contract: data, collation, head, losses, metrics, padding.

    Subclass it and define `make_task()`. The forward checks run a tiny real `AttdModel`
    with the task's head and hooks (`make_backbone()`, default a tiny Mamba; pooling
    `pooling`) on the first `sample_size` examples of the first of `splits`.
    """

    splits: ClassVar[tuple[str, ...]] = ("train", "test")
    sample_size: ClassVar[int] = 8
    pooling: ClassVar[str] = "masked-mean"
    loss_reduction: ClassVar[str | None] = "mean"
    atol: ClassVar[float] = 1e-5
    rtol: ClassVar[float] = 1e-4

    def make_task(self) -> Task:
        raise NotImplementedError(f"{type(self).__name__} must define make_task() -> Task")

    def make_backbone(self) -> Backbone:
        return _factories().tiny_backbone()

    @pytest.fixture
    def attd_task(self) -> Task:
        return _once(self, "task", self.make_task)

    @pytest.fixture
    def attd_examples(self, attd_task: Task) -> list[Any]:
        return _once(
            self,
            "examples",
            lambda: _factories().first_examples(attd_task, self.splits[0], self.sample_size),
        )

    @pytest.fixture
    def attd_batch(self, attd_task: Task, attd_examples: list[Any]) -> Batch:
        return _once(self, "batch", lambda: attd_task.preprocess(attd_examples))

    @pytest.fixture
    def attd_model(self, attd_task: Task) -> AttdModel:
        return _once(
            self,
            "model",
            lambda: _factories().tiny_model(attd_task, self.make_backbone(), pooling=self.pooling),
        )

    def _forward(self, model: AttdModel, batch: Batch, state: Any = None) -> Any:
        import torch

        with torch.no_grad():
            return model(batch, state)

    # protocol and data

    def test_satisfies_the_task_protocol(self, attd_task: Task) -> None:
        missing = [
            name
            for name in (
                "input_spec",
                "num_classes",
                "splits",
                "load_split",
                "preprocess",
                "build_head",
                "compute_loss",
                "sample_losses",
                "compute_metrics",
            )
            if not hasattr(attd_task, name)
        ]
        assert not missing, f"a Task needs {', '.join(missing)} (see attd_core.Task)"
        assert isinstance(attd_task, Task)
        num_classes = attd_task.num_classes
        assert isinstance(num_classes, int) and not isinstance(num_classes, bool), (
            f"Task.num_classes must be an int; got {_describe(num_classes)}"
        )
        assert num_classes >= 1, f"Task.num_classes must be positive; got {num_classes}"
        assert not hasattr(attd_task, "forward"), (
            "a Task has no forward: attd_core.AttdModel runs embedding, backbone, pooling "
            "and the task's head; a token-level task sets token_level = True, a two-tower "
            "task defines second_tower and pair_towers (see attd_core.Task)"
        )

    def test_input_spec_says_tokens_or_channels(self, attd_task: Task) -> None:
        spec = attd_task.input_spec
        assert isinstance(spec, InputSpec), (
            f"Task.input_spec must be an attd_core.InputSpec; got {type(spec).__name__}"
        )
        assert (spec.vocab_size is None) != (spec.channels is None), (
            "Task.input_spec must set exactly one of vocab_size (integer tokens) and "
            f"channels (float features); got {spec}"
        )
        if spec.vocab_size is not None and spec.pad_id is not None:
            assert 0 <= spec.pad_id < spec.vocab_size, (
                f"input_spec.pad_id ({spec.pad_id}) must be a token id below vocab_size "
                f"({spec.vocab_size}): the embedding keeps it at zero"
            )

    def test_real_tokens_never_use_the_pad_id(self, attd_task: Task) -> None:
        spec = attd_task.input_spec
        if spec.vocab_size is None or spec.pad_id is None:
            pytest.skip("the task reserves no pad id")
        for split in self.splits:
            batch = _factories().task_batch(attd_task, split, self.sample_size)
            real = batch.inputs if batch.mask is None else batch.inputs[batch.mask]
            used = int((real == spec.pad_id).sum())
            assert used == 0, (
                f"{used} real tokens (mask True) of split {split!r} have the pad id "
                f"{spec.pad_id}, whose embedding is a frozen zero vector: the model can "
                "neither learn them nor tell them from padding; reserve another id as "
                "input_spec.pad_id, or set pad_id=None to reserve none"
            )

    def test_declares_the_splits_it_serves(self, attd_task: Task) -> None:
        declared = attd_task.splits
        assert (
            isinstance(declared, tuple)
            and declared
            and all(isinstance(split, str) for split in declared)
        ), f"Task.splits must be a non-empty tuple of split names; got {declared!r}"
        undeclared = [split for split in self.splits if split not in declared]
        assert not undeclared, (
            f"the suite loads {', '.join(undeclared)}, which Task.splits {declared} does not "
            "name: declare every split load_split serves (the runtime checks eval.split "
            "against them)"
        )

    def test_an_undeclared_split_is_a_config_error(self, attd_task: Task) -> None:
        from attd_core.errors import ConfigError

        split = "no-such-split"
        try:
            attd_task.load_split(split)
        except ConfigError:
            return
        except Exception as exc:
            pytest.fail(
                f"load_split({split!r}) must raise attd_core.ConfigError for a split not in "
                f"Task.splits (the CLI shows it as one error line); got {type(exc).__name__}: "
                f"{exc}"
            )
        pytest.fail(f"load_split({split!r}) returned data for a split not in Task.splits")

    def test_splits_load_and_are_not_empty(self, attd_task: Task) -> None:
        for split in self.splits:
            examples = attd_task.load_split(split)
            assert hasattr(examples, "__len__") and hasattr(examples, "__getitem__"), (
                f"load_split({split!r}) must return a datasets.Dataset or a sequence of "
                f"examples; got {type(examples).__name__}"
            )
            assert len(examples) > 0, f"load_split({split!r}) returned no examples"

    def test_preprocess_collates_a_batch(self, attd_examples: list[Any], attd_batch: Batch) -> None:
        import torch

        batch, size = attd_batch, len(attd_examples)
        assert isinstance(batch, Batch), (
            f"Task.preprocess must return an attd_core.Batch; got {type(batch).__name__}"
        )
        assert isinstance(batch.inputs, torch.Tensor) and batch.inputs.shape[0] == size, (
            f"preprocess of {size} examples must give inputs with {size} rows; got "
            f"{_describe(batch.inputs)}"
        )
        length = batch.inputs.shape[1] if batch.inputs.dim() >= 2 else None
        assert length is not None and length >= 1, (
            f"Batch.inputs must be (B, L) tokens or (B, L, C) floats; got {_describe(batch.inputs)}"
        )
        if batch.mask is not None:
            assert batch.mask.dtype == torch.bool and tuple(batch.mask.shape) == (size, length), (
                f"Batch.mask must be a ({size}, {length}) bool tensor (True on real tokens); "
                f"got {_describe(batch.mask)}"
            )
            assert bool(batch.mask.any(dim=1).all()), (
                "every row of Batch.mask needs a real token: an all-padding sample has "
                "nothing to pool"
            )
        for key, value in batch.aux.items():
            if isinstance(value, torch.Tensor):
                assert value.dim() >= 1 and value.shape[0] == size, (
                    f"Batch.aux[{key!r}] must have the batch as its leading dimension "
                    f"({size}), since Batch.select indexes it; got {_describe(value)}"
                )
        picked = batch.select(torch.tensor([size - 1, 0]))
        assert len(picked) == 2, "Batch.select must keep the selected samples"

    def test_inputs_match_the_input_spec(self, attd_task: Task, attd_batch: Batch) -> None:
        import torch

        spec, inputs = attd_task.input_spec, attd_batch.inputs
        if spec.vocab_size is not None:
            assert inputs.dim() == 2 and inputs.dtype == torch.long, (
                f"a task with input_spec.vocab_size feeds (B, L) int64 token ids; got "
                f"{_describe(inputs)}"
            )
            low, high = int(inputs.min()), int(inputs.max())
            assert 0 <= low and high < spec.vocab_size, (
                f"token ids must lie in [0, vocab_size={spec.vocab_size}); got ids from "
                f"{low} to {high}"
            )
        else:
            assert inputs.dim() == 3 and inputs.is_floating_point(), (
                f"a task with input_spec.channels feeds (B, L, C) floats; got {_describe(inputs)}"
            )
            assert inputs.shape[-1] == spec.channels, (
                f"input_spec.channels is {spec.channels} but inputs have {inputs.shape[-1]}"
            )
            assert bool(torch.isfinite(inputs).all()), "inputs must be finite"

    def test_labels_are_class_indices(self, attd_task: Task, attd_batch: Batch) -> None:
        import torch

        labels = attd_batch.labels
        assert labels is not None, (
            f"batches of the {self.splits[0]!r} split need labels: compute_loss, "
            "sample_losses and the oracle read Batch.labels"
        )
        assert labels.shape[0] == len(attd_batch), (
            f"Batch.labels must have one row per sample ({len(attd_batch)}); got "
            f"{_describe(labels)}"
        )
        if labels.dim() == 1 and not labels.is_floating_point():
            assert labels.dtype == torch.long, (
                f"class labels must be int64 (cross-entropy's targets); got {labels.dtype}"
            )
            low, high = int(labels.min()), int(labels.max())
            assert 0 <= low and high < attd_task.num_classes, (
                f"labels must lie in [0, num_classes={attd_task.num_classes}); got {low} to {high}"
            )

    def test_sequence_length_measures_an_example(
        self, attd_task: Task, attd_examples: list[Any]
    ) -> None:
        measure = getattr(attd_task, "sequence_length", None)
        if measure is None:
            pytest.skip("the task defines no sequence_length (optional)")
        for example in attd_examples[:4]:
            length = measure(example)
            batch = attd_task.preprocess([example])
            real = int(batch.mask.sum()) if batch.mask is not None else batch.inputs.shape[1]
            assert isinstance(length, int) and length == real, (
                "sequence_length(example) must be the example's number of tokens after "
                f"preprocess (the runtime groups batches by it); got {length!r}, but "
                f"preprocess([example]) has {real}"
            )

    # the model

    def test_forward_gives_logits_per_sample(
        self, attd_task: Task, attd_model: AttdModel, attd_batch: Batch
    ) -> None:
        import torch

        output = self._forward(attd_model, attd_batch)
        assert isinstance(output, ModelOutput), (
            f"the model's forward must return an attd_core.ModelOutput; got {type(output).__name__}"
        )
        size, classes = len(attd_batch), attd_task.num_classes
        logits = output.logits
        assert logits.shape[0] == size and logits.shape[-1] == classes, (
            f"ModelOutput.logits must be (B, ..., num_classes) = ({size}, ..., {classes}) "
            f"for a head from build_head; got {_describe(logits)}"
        )
        assert bool(torch.isfinite(logits).all()), "the task's head gave non-finite logits"
        d_model = attd_model.backbone.d_model
        if output.pooled is not None:
            assert tuple(output.pooled.shape) == (size, d_model), (
                f"ModelOutput.pooled must be (B, d_model) = ({size}, {d_model}); got "
                f"{_describe(output.pooled)}"
            )
        for name in ("features", "embedded"):
            value = getattr(output, name)
            if value is not None:
                assert value.shape[0] == size and value.shape[-1] == d_model, (
                    f"ModelOutput.{name} must be the (B, L, d_model) tensor; got {_describe(value)}"
                )

    def test_forward_passes_the_adapter_state_to_the_backbone(
        self, attd_model: AttdModel, attd_batch: Batch
    ) -> None:
        plain = self._forward(attd_model, attd_batch).logits
        empty = self._forward(attd_model, attd_batch, {}).logits
        _close(
            empty,
            plain,
            self.atol,
            self.rtol,
            "the forward with an empty adapter state must equal the forward without one",
        )
        slots = list(attd_model.backbone.adapter_slots().values())
        if not slots:
            pytest.skip("the backbone declares no adapter slots")
        slot = next((s for s in reversed(slots) if s.kind == "norm_bias"), slots[-1])
        delta = _like(slot.base, seed=5)
        if slot.upper_bound is not None:
            delta = -delta.abs()
        moved = self._forward(attd_model, attd_batch, {slot.name: delta}).logits
        assert _differs(moved, plain), (
            f"a delta on the backbone's slot {slot.name!r} did not change the logits: the "
            "task's head (and pair_towers) must read the backbone's features, or "
            "test-time adaptation does nothing"
        )

    def test_compute_loss_is_a_finite_scalar_with_gradient(
        self, attd_task: Task, attd_model: AttdModel, attd_batch: Batch
    ) -> None:
        import torch

        output = attd_model(attd_batch)
        loss = attd_task.compute_loss(output, attd_batch)
        assert isinstance(loss, torch.Tensor) and loss.dim() == 0, (
            f"compute_loss must return a scalar tensor; got {_describe(loss)}"
        )
        assert bool(torch.isfinite(loss)), f"compute_loss is not finite: {float(loss)}"
        assert loss.requires_grad, "compute_loss must be differentiable (training calls backward)"
        parameters = [p for p in attd_model.parameters() if p.requires_grad]
        grads = torch.autograd.grad(loss, parameters, allow_unused=True)
        reached = [g for g in grads if g is not None]
        assert reached and any(bool(g.abs().sum() > 0) for g in reached), (
            "compute_loss has no gradient on the model's parameters: training could not learn"
        )
        assert all(bool(torch.isfinite(g).all()) for g in reached), (
            "compute_loss gives non-finite gradients"
        )

    def test_sample_losses_are_per_sample(
        self, attd_task: Task, attd_model: AttdModel, attd_batch: Batch
    ) -> None:
        import torch

        output = self._forward(attd_model, attd_batch)
        losses = attd_task.sample_losses(output, attd_batch)
        size = len(attd_batch)
        assert isinstance(losses, torch.Tensor) and tuple(losses.shape) == (size,), (
            f"sample_losses must be one loss per sample, shape ({size},); got {_describe(losses)}"
        )
        assert bool(torch.isfinite(losses).all()), "sample_losses are not all finite"
        if self.loss_reduction == "mean":
            loss = attd_task.compute_loss(output, attd_batch)
            _close(
                losses.mean(),
                loss,
                self.atol,
                self.rtol,
                "sample_losses(...).mean() must equal compute_loss(...) (the oracle and the "
                "regimes compare per-sample task losses); set loss_reduction = None in the "
                "test class if compute_loss is not their mean",
            )

    def test_compute_metrics_returns_floats(
        self, attd_task: Task, attd_model: AttdModel, attd_batch: Batch
    ) -> None:
        output = self._forward(attd_model, attd_batch)
        metrics = attd_task.compute_metrics(output, attd_batch)
        assert isinstance(metrics, Mapping) and metrics, (
            f"compute_metrics must return a non-empty dict of floats; got {metrics!r}"
        )
        for key, value in metrics.items():
            assert isinstance(key, str), f"metric names must be strings; got {key!r}"
            assert isinstance(value, float) and math.isfinite(value), (
                f"metric {key!r} must be a finite Python float (the evaluator averages and "
                f"writes them as JSON); got {_describe(value)}"
            )

    def test_evaluation_views_keep_every_sample(
        self, attd_task: Task, attd_model: AttdModel, attd_batch: Batch
    ) -> None:
        views = getattr(attd_task, "evaluation_views", None)
        if views is None:
            pytest.skip("the task defines no evaluation_views: strategies adapt on the batch")
        context, scored = views(attd_batch)
        assert len(context) == len(scored) == len(attd_batch), (
            f"evaluation_views must keep every sample of a batch of {len(attd_batch)}; got "
            f"views of {len(context)} and {len(scored)} (the adapted state is per sample)"
        )
        self._forward(attd_model, context)  # what strategies adapt on runs through the model
        metrics = attd_task.compute_metrics(self._forward(attd_model, scored), scored)
        assert all(math.isfinite(value) for value in metrics.values()), (
            f"compute_metrics on the scored view must be finite; got {metrics!r}"
        )

    def test_padding_does_not_change_a_sample(
        self,
        attd_task: Task,
        attd_model: AttdModel,
        attd_examples: list[Any],
        attd_batch: Batch,
    ) -> None:
        import torch

        if attd_batch.mask is None:
            pytest.skip("the task's batches carry no mask, so nothing is padding")
        logits = self._forward(attd_model, attd_batch).logits
        length = attd_batch.mask.shape[1]
        per_token = logits.dim() >= 3 and logits.shape[1] == length
        checked = False
        if not _has_positional_aux(attd_batch, length):
            padded = _pad_right(attd_batch, 3, attd_task.input_spec)
            more, before = self._forward(attd_model, padded).logits, logits
            if per_token:  # the three new positions are padding: compare the old ones
                more, before = more[:, :length][attd_batch.mask], logits[attd_batch.mask]
            _close(
                more,
                before,
                self.atol,
                self.rtol,
                "three more padding positions (mask False) changed the logits: the forward "
                "must ignore padded positions (pass batch.mask to the backbone and pooling)",
            )
            checked = True
        lengths = attd_batch.mask.sum(dim=1)
        padded_rows = torch.nonzero(lengths < length).flatten().tolist()
        for row in padded_rows[:2]:
            alone = attd_task.preprocess([attd_examples[row]])
            single = self._forward(attd_model, alone).logits[0]
            mine = logits[row]
            if per_token:  # per-token logits: the sample's real positions only
                mine, single = mine[attd_batch.mask[row]], single[alone.mask[0]]
            _close(
                mine,
                single,
                self.atol,
                self.rtol,
                f"sample {row} gave other logits padded in a batch than alone: padding "
                "(or the other samples) must not change a sample's output",
            )
            checked = True
        if not checked:
            pytest.skip("no sample of the batch is padded and the batch has per-position aux")


def _has_positional_aux(batch: Batch, length: int) -> bool:
    """Whether an aux tensor may run along the sequence (its second dimension is `length`),
    so that padding the inputs alone would misalign it; per-sample values such as an image
    size do not."""
    return any(
        getattr(value, "dim", lambda: 0)() >= 2 and value.shape[1] == length
        for value in batch.aux.values()
    )


def _pad_right(batch: Batch, extra: int, spec: InputSpec) -> Batch:
    import torch

    inputs = batch.inputs
    if inputs.dim() == 2:
        pad = torch.full((inputs.shape[0], extra), spec.fill_id, dtype=inputs.dtype)
    else:
        pad = torch.zeros((inputs.shape[0], extra, *inputs.shape[2:]), dtype=inputs.dtype)
    mask = torch.zeros((inputs.shape[0], extra), dtype=torch.bool, device=batch.mask.device)
    return replace(
        batch,
        inputs=torch.cat([inputs, pad.to(inputs.device)], dim=1),
        mask=torch.cat([batch.mask, mask], dim=1),
    )


# -- backbones ---------------------------------------------------------------------------


class BackboneConformance:
    """The `Backbone` contract: shapes, adapter slots, the state convention, padding.

    Subclass it and define `make_backbone()`; inputs are `(batch_size, length, d_model)`
    with right padding on all but the first sample.
    """

    batch_size: ClassVar[int] = 3
    length: ClassVar[int] = 7
    atol: ClassVar[float] = 1e-5
    rtol: ClassVar[float] = 1e-4

    def make_backbone(self) -> Backbone:
        raise NotImplementedError(f"{type(self).__name__} must define make_backbone() -> Backbone")

    @pytest.fixture
    def attd_backbone(self) -> Backbone:
        def build() -> Backbone:
            backbone = self.make_backbone()
            if hasattr(backbone, "eval"):
                backbone.eval()
            return backbone

        return _once(self, "backbone", build)

    def _inputs(self, backbone: Backbone, seed: int = 1) -> tuple[Tensor, Tensor]:
        import torch

        dtype, device = _dtype_and_device(backbone, (torch.float32, torch.device("cpu")))
        shape = (self.batch_size, self.length, backbone.d_model)
        x = torch.randn(shape, generator=_generator(seed), dtype=dtype).to(device)
        lengths = [self.length] + [max(1, self.length - 2 - 2 * i) for i in range(shape[0] - 1)]
        mask = torch.arange(self.length) < torch.tensor(lengths)[:, None]
        return x, mask.to(device)

    def _run(self, backbone: Backbone, x: Tensor, mask: Any = None, state: Any = None) -> Tensor:
        import torch

        with torch.no_grad():
            return backbone(x, mask=mask, adapter_state=state)

    def _slots(self, backbone: Backbone) -> dict[str, AdapterSlot]:
        slots = backbone.adapter_slots()
        if not slots:
            pytest.skip("the backbone declares no adapter slots")
        return dict(slots)

    def _delta(self, slot: AdapterSlot, seed: int, lead: tuple[int, ...] = ()) -> Tensor:
        import torch

        base = slot.base
        noise = torch.randn((*lead, *base.shape), generator=_generator(seed), dtype=base.dtype)
        noise = 0.5 * noise.to(base.device)
        return -noise.abs() if slot.upper_bound is not None else noise

    def test_satisfies_the_backbone_protocol(self, attd_backbone: Backbone) -> None:
        from torch import nn

        assert isinstance(attd_backbone, Backbone), (
            "a Backbone needs d_model, forward(x, mask, adapter_state) and "
            "adapter_slots() (see attd_core.Backbone)"
        )
        assert isinstance(attd_backbone, nn.Module), (
            "a Backbone must be a torch.nn.Module: the runtime trains, moves and checkpoints "
            "it as part of AttdModel"
        )
        d_model = attd_backbone.d_model
        assert isinstance(d_model, int) and not isinstance(d_model, bool) and d_model > 0, (
            f"Backbone.d_model must be a positive int; got {d_model!r}"
        )

    def test_maps_BLD_to_BLD(self, attd_backbone: Backbone) -> None:  # noqa: N802
        import torch

        x, mask = self._inputs(attd_backbone)
        for given in (None, mask):
            y = self._run(attd_backbone, x, given)
            assert isinstance(y, torch.Tensor) and y.shape == x.shape and y.dtype == x.dtype, (
                f"forward must map (B, L, D) {tuple(x.shape)} {x.dtype} to the same shape "
                f"and dtype (mask={'given' if given is not None else 'None'}); got "
                f"{_describe(y)}"
            )
            assert bool(torch.isfinite(y).all()), "forward gave non-finite outputs"

    def test_adapter_slots_are_well_formed(self, attd_backbone: Backbone) -> None:
        import torch

        slots = attd_backbone.adapter_slots()
        assert isinstance(slots, Mapping), (
            f"adapter_slots() must return a dict of name -> AdapterSlot; got {type(slots)}"
        )
        assert list(attd_backbone.adapter_slots()) == list(slots), (
            "adapter_slots() must name the same slots on every call"
        )
        for name, slot in slots.items():
            where = f"adapter slot {name!r}"
            assert isinstance(slot, AdapterSlot), f"{where} must be an attd_core.AdapterSlot"
            assert slot.name == name, f"{where} carries another name, {slot.name!r}"
            assert not name.endswith((".U", ".V")), (
                f"{where}: a slot name may not end in .U or .V (those are low-rank factors)"
            )
            assert slot.kind in SLOT_KINDS, (
                f"{where} has kind {slot.kind!r}; kinds: {', '.join(SLOT_KINDS)}"
            )
            base = slot.base
            assert isinstance(base, torch.Tensor) and base.is_floating_point(), (
                f"{where}: base must be a floating-point tensor; got {_describe(base)}"
            )
            assert not base.requires_grad and base.grad_fn is None, (
                f"{where}: base must be detached (e.g. weight.detach()): adapters read it and "
                "must never put the base weights into their graph"
            )
            dims = 2 if slot.kind in _MATRIX_KINDS else 1 if slot.kind in _VECTOR_KINDS else None
            assert dims is None or base.dim() == dims, (
                f"{where} (kind {slot.kind}) must be {dims}-D; got {_describe(base)}"
            )
            if slot.upper_bound is not None:
                assert isinstance(slot.upper_bound, (int, float)), (
                    f"{where}: upper_bound must be a number or None"
                )
                assert bool((base < slot.upper_bound).all()), (
                    f"{where}: its base already reaches its upper_bound {slot.upper_bound}"
                )

    def test_no_state_and_an_empty_state_agree(self, attd_backbone: Backbone) -> None:
        x, mask = self._inputs(attd_backbone)
        _close(
            self._run(attd_backbone, x, mask, {}),
            self._run(attd_backbone, x, mask),
            self.atol,
            self.rtol,
            "forward with adapter_state={} must equal forward with no adapter state",
        )

    def test_zero_deltas_change_nothing(self, attd_backbone: Backbone) -> None:
        import torch

        x, mask = self._inputs(attd_backbone)
        base = self._run(attd_backbone, x, mask)
        for lead in ((), (self.batch_size,)):
            zeros = {
                name: torch.zeros((*lead, *slot.base.shape), dtype=slot.base.dtype)
                for name, slot in self._slots(attd_backbone).items()
            }
            _close(
                self._run(attd_backbone, x, mask, zeros),
                base,
                self.atol,
                self.rtol,
                f"all-zero dense deltas on every slot ({'per sample' if lead else 'shared'}) "
                "changed the output: a delta must be added to its slot's base",
            )

    def test_every_slot_reaches_the_output(self, attd_backbone: Backbone) -> None:
        x, mask = self._inputs(attd_backbone)
        base = self._run(attd_backbone, x, mask)
        silent = [
            name
            for index, (name, slot) in enumerate(self._slots(attd_backbone).items())
            if not _differs(
                self._run(attd_backbone, x, mask, {name: self._delta(slot, index)}), base
            )
        ]
        assert not silent, (
            f"deltas on these slots did not change the output: {', '.join(silent)}; a "
            "backbone must read every slot it declares (adapters would adapt nothing)"
        )

    def test_low_rank_factors_equal_their_dense_product(self, attd_backbone: Backbone) -> None:
        import torch

        slots = self._slots(attd_backbone)
        slot = next((s for s in slots.values() if s.base.dim() == 2), None)
        if slot is None:
            pytest.skip("no 2-D slot to factor")
        x, mask = self._inputs(attd_backbone)
        rows, cols = slot.base.shape
        u = _like(torch.empty(rows, 2, dtype=slot.base.dtype), seed=7, scale=0.5)
        v = _like(torch.empty(2, cols, dtype=slot.base.dtype), seed=8, scale=0.5)
        if slot.upper_bound is not None:
            u = u.abs()
            v = -v.abs()
        factored = {f"{slot.name}.U": u, f"{slot.name}.V": v}
        _close(
            self._run(attd_backbone, x, mask, factored),
            self._run(attd_backbone, x, mask, {slot.name: u @ v}),
            self.atol,
            self.rtol,
            f"low-rank factors {slot.name}.U and .V must act as the dense delta U @ V",
        )

    def test_a_per_sample_state_changes_only_its_sample(self, attd_backbone: Backbone) -> None:
        x, mask = self._inputs(attd_backbone)
        base = self._run(attd_backbone, x, mask)
        state = {}
        for index, (name, slot) in enumerate(self._slots(attd_backbone).items()):
            delta = self._delta(slot, index, lead=(self.batch_size,))
            delta[1:] = 0
            state[name] = delta
        out = self._run(attd_backbone, x, mask, state)
        _close(
            out[1:],
            base[1:],
            self.atol,
            self.rtol,
            "deltas with a leading batch dimension, nonzero for sample 0 only, changed other "
            "samples: row i of a per-sample state must act on sample i alone",
        )
        assert _differs(out[0], base[0]), (
            "per-sample deltas on every slot did not change sample 0's output"
        )

    def test_padding_does_not_change_real_positions(self, attd_backbone: Backbone) -> None:
        import torch

        x, mask = self._inputs(attd_backbone)
        base = self._run(attd_backbone, x, mask)
        noisy = torch.where(mask[..., None], x, 100 * _like(x, seed=9))
        _close(
            self._run(attd_backbone, noisy, mask)[mask],
            base[mask],
            self.atol,
            self.rtol,
            "changing the inputs at padded positions (mask False) changed real positions",
        )
        row = self.batch_size - 1
        length = int(mask[row].sum())
        alone = self._run(attd_backbone, x[row : row + 1, :length], mask[row : row + 1, :length])
        _close(
            base[row, :length],
            alone[0],
            self.atol,
            self.rtol,
            f"sample {row} ({length} real tokens, right-padded to {self.length}) gave other "
            "outputs than when run alone without padding",
        )

    def test_unknown_state_keys_are_rejected(self, attd_backbone: Backbone) -> None:
        import torch

        x, mask = self._inputs(attd_backbone)
        key = "no_such_slot.weight"
        try:
            self._run(attd_backbone, x, mask, {key: torch.zeros(1)})
        except Exception as exc:  # any error type will do, if it names the key
            assert key in str(exc), (
                f"the error for an unknown adapter state key should name it ({key!r}); got "
                f"{type(exc).__name__}: {exc}"
            )
        else:
            pytest.fail(
                f"forward accepted adapter state key {key!r}, which names no slot: it must "
                "raise, or a state built for another backbone would silently do nothing"
            )

    def test_gradients_reach_the_state_and_the_weights(self, attd_backbone: Backbone) -> None:
        import torch

        x, mask = self._inputs(attd_backbone)
        slots = self._slots(attd_backbone)
        state = {
            name: torch.zeros_like(slot.base).requires_grad_(True) for name, slot in slots.items()
        }
        out = attd_backbone(x, mask=mask, adapter_state=state)
        loss = (out * _like(out, seed=11)).sum()
        parameters = [p for p in attd_backbone.parameters() if p.requires_grad]
        grads = torch.autograd.grad(loss, [*state.values(), *parameters], allow_unused=True)
        state_grads = dict(zip(state, grads[: len(state)], strict=True))
        missing = [name for name, grad in state_grads.items() if grad is None]
        assert not missing, f"no gradient reaches the deltas of: {', '.join(missing)}"
        weights = [g for g in grads[len(state) :] if g is not None]
        assert weights and any(bool(g.abs().sum() > 0) for g in weights), (
            "no gradient reaches the backbone's parameters: it could not be trained"
        )

    def test_the_state_is_used_never_stored(self, attd_backbone: Backbone) -> None:
        x, mask = self._inputs(attd_backbone)
        before_weights = _snapshot(attd_backbone)
        before = self._run(attd_backbone, x, mask)
        state = {
            name: self._delta(slot, index)
            for index, (name, slot) in enumerate(self._slots(attd_backbone).items())
        }
        self._run(attd_backbone, x, mask, state)
        _close(
            self._run(attd_backbone, x, mask),
            before,
            self.atol,
            self.rtol,
            "a forward with an adapter state changed later forwards without one: the state "
            "is passed in on every call and must never be stored",
        )
        changed = _changed(attd_backbone, before_weights)
        assert not changed, f"a forward with an adapter state changed weights: {changed}"


# -- adapters ----------------------------------------------------------------------------


class AdapterConformance:
    """The `Adapter` contract: fresh states, the slot convention, deltas, projection.

    Subclass it and define `make_adapter()`; `make_backbone()` defaults to a tiny Mamba.
    """

    batch_size: ClassVar[int] = 3
    length: ClassVar[int] = 7
    atol: ClassVar[float] = 1e-5
    rtol: ClassVar[float] = 1e-4

    def make_adapter(self) -> Adapter:
        raise NotImplementedError(f"{type(self).__name__} must define make_adapter() -> Adapter")

    def make_backbone(self) -> Backbone:
        return _factories().tiny_backbone()

    @pytest.fixture
    def attd_adapter(self) -> Adapter:
        return _once(self, "adapter", self.make_adapter)

    @pytest.fixture
    def attd_backbone(self) -> Backbone:
        return _once(self, "backbone", lambda: self.make_backbone().eval())

    def _inputs(self, backbone: Backbone) -> tuple[Tensor, Tensor]:
        return BackboneConformance._inputs(self, backbone)  # type: ignore[arg-type]

    def _fresh(self, adapter: Adapter, backbone: Backbone, batch_size: Any) -> AdapterState:
        return adapter.init_state(backbone, batch_size, generator=_generator(2))

    def _run(self, backbone: Backbone, adapter: Adapter, state: Any = None) -> Tensor:
        import torch

        x, mask = self._inputs(backbone)
        with torch.no_grad():
            deltas = None if state is None else adapter.deltas(state)
            return backbone(x, mask=mask, adapter_state=deltas)

    def _perturbed(self, state: AdapterState, scale: float = 0.3) -> AdapterState:
        return {
            key: value + _like(value, seed=3 + index, scale=scale)
            for index, (key, value) in enumerate(state.items())
        }

    def test_satisfies_the_adapter_protocol(self, attd_adapter: Adapter) -> None:
        assert isinstance(attd_adapter, Adapter), (
            "an Adapter needs per_sample, init_state, deltas, project and num_parameters "
            "(see attd_core.Adapter)"
        )
        assert isinstance(attd_adapter.per_sample, bool), (
            f"Adapter.per_sample must be a bool; got {attd_adapter.per_sample!r}"
        )

    @pytest.mark.parametrize("batched", [True, False], ids=["batch", "shared"])
    def test_a_fresh_state_leaves_outputs_unchanged(
        self, attd_adapter: Adapter, attd_backbone: Backbone, batched: bool
    ) -> None:
        size = self.batch_size if batched else None
        state = self._fresh(attd_adapter, attd_backbone, size)
        assert isinstance(state, dict) and state, (
            f"init_state must return a non-empty dict of tensors; got {state!r}"
        )
        _close(
            self._run(attd_backbone, attd_adapter, state),
            self._run(attd_backbone, attd_adapter),
            self.atol,
            self.rtol,
            f"a fresh state (init_state(backbone, {size})) changed the output: it must "
            "start where the unadapted model is (e.g. U = 0 for U V)",
        )

    @pytest.mark.parametrize("batched", [True, False], ids=["batch", "shared"])
    def test_states_follow_the_slot_convention(
        self, attd_adapter: Adapter, attd_backbone: Backbone, batched: bool
    ) -> None:
        import torch

        size = self.batch_size if batched else None
        state = self._fresh(attd_adapter, attd_backbone, size)
        slots = attd_backbone.adapter_slots()
        lead = (size,) if attd_adapter.per_sample and size is not None else ()
        weights = {p.untyped_storage().data_ptr() for p in attd_backbone.parameters()}
        for key, value in state.items():
            slot_name, _, factor = key.rpartition(".")
            if key in slots:
                slot_name, factor = key, ""
            where = f"state key {key!r}"
            assert slot_name in slots and factor in ("", "U", "V"), (
                f"{where} names no slot: keys are a slot name (dense delta) or <slot>.U / "
                f"<slot>.V (low-rank factors); slots: {', '.join(slots)}"
            )
            assert isinstance(value, torch.Tensor) and value.is_floating_point(), (
                f"{where} must be a floating-point tensor; got {_describe(value)}"
            )
            base = slots[slot_name].base
            assert value.dtype == base.dtype and value.device == base.device, (
                f"{where} must follow its slot's dtype and device ({base.dtype}, "
                f"{base.device}); got {value.dtype} on {value.device}"
            )
            assert value.untyped_storage().data_ptr() not in weights, (
                f"{where} shares memory with a backbone weight: an adapter state must be "
                "its own tensors, or adapting it would change the base model"
            )
            batch = "with a leading batch dimension" if lead else "without a batch dimension"
            if factor == "":
                expected: tuple[int, ...] | None = (*lead, *base.shape)
            else:
                other = state.get(f"{slot_name}.{'V' if factor == 'U' else 'U'}")
                assert other is not None, f"{where} needs its partner factor"
                rank = value.shape[-1] if factor == "U" else value.shape[-2]
                dims = (base.shape[0], rank) if factor == "U" else (rank, base.shape[-1])
                expected = (*lead, *dims)
            assert tuple(value.shape) == expected, (
                f"{where} has shape {tuple(value.shape)}; expected {expected} ({batch}, since "
                f"per_sample={attd_adapter.per_sample} and batch_size={size})"
            )

    def test_init_state_is_reproducible(self, attd_adapter: Adapter, attd_backbone: Backbone):
        import torch

        first = self._fresh(attd_adapter, attd_backbone, self.batch_size)
        again = self._fresh(attd_adapter, attd_backbone, self.batch_size)
        assert first.keys() == again.keys() and all(
            torch.equal(first[key], again[key]) for key in first
        ), "init_state with equally seeded generators must give equal states"

    def test_deltas_are_differentiable(self, attd_adapter: Adapter, attd_backbone: Backbone):
        import torch

        start = self._perturbed(self._fresh(attd_adapter, attd_backbone, self.batch_size))
        state = {key: value.clone().requires_grad_(True) for key, value in start.items()}
        x, mask = self._inputs(attd_backbone)
        out = attd_backbone(x, mask=mask, adapter_state=attd_adapter.deltas(state))
        loss = (out * _like(out, seed=11)).sum()
        grads = torch.autograd.grad(loss, list(state.values()), allow_unused=True)
        for key, grad in zip(state, grads, strict=True):
            assert grad is not None, (
                f"no gradient reaches state key {key!r} through deltas(): deltas must be "
                "differentiable, and the backbone must read what they return"
            )
            assert bool(torch.isfinite(grad).all()), f"the gradient of {key!r} is not finite"
            assert bool(grad.abs().sum() > 0), (
                f"the gradient of state key {key!r} is zero at a moved state: the inner "
                "loop could never change it"
            )

    def test_a_per_sample_state_stays_per_sample(
        self, attd_adapter: Adapter, attd_backbone: Backbone
    ) -> None:
        if not attd_adapter.per_sample:
            pytest.skip("the adapter is not per sample")
        fresh = self._fresh(attd_adapter, attd_backbone, self.batch_size)
        moved = self._perturbed(fresh, scale=0.5)
        state = {}
        for key, value in fresh.items():
            value = value.clone()
            value[0] = moved[key][0]
            state[key] = value
        base = self._run(attd_backbone, attd_adapter, fresh)
        out = self._run(attd_backbone, attd_adapter, state)
        _close(
            out[1:],
            base[1:],
            self.atol,
            self.rtol,
            "changing sample 0's row of a per-sample state changed other samples",
        )
        assert _differs(out[0], base[0]), (
            "moving every tensor of sample 0's state did not change its output"
        )

    def test_project_keeps_keys_shapes_and_counts(
        self, attd_adapter: Adapter, attd_backbone: Backbone
    ) -> None:
        import torch

        slots = attd_backbone.adapter_slots()
        fresh = self._fresh(attd_adapter, attd_backbone, self.batch_size)
        for label, state in (("fresh", fresh), ("far-moved", self._perturbed(fresh, 5.0))):
            projected, counts = attd_adapter.project(state, slots)
            assert set(projected) == set(state), (
                f"project must return the same keys as the state it got ({label} state); "
                f"got {sorted(projected)} for {sorted(state)}"
            )
            for key, value in projected.items():
                assert value.shape == state[key].shape and value.dtype == state[key].dtype, (
                    f"project changed {key!r} from {_describe(state[key])} to {_describe(value)}"
                )
                assert bool(torch.isfinite(value).all()), (
                    f"project gave non-finite values for {key!r}"
                )
            assert isinstance(counts, Mapping), "project must return (state, counts dict)"
            for name, count in counts.items():
                assert isinstance(count, torch.Tensor), (
                    f"project's count {name!r} must be a tensor (the engine sums them "
                    f"per row); got {_describe(count)}"
                )
            if label == "fresh":
                for key, value in projected.items():
                    _close(
                        value,
                        state[key],
                        self.atol,
                        self.rtol,
                        f"project moved a fresh state's {key!r}: a fresh state is allowed",
                    )
            else:
                again, _ = attd_adapter.project(projected, slots)
                for key, value in again.items():
                    _close(
                        value,
                        projected[key],
                        1e-4,
                        1e-4,
                        f"projecting a projected state moved {key!r} again: project must "
                        "map into the allowed set",
                    )

    def test_num_parameters_counts_one_sample(
        self, attd_adapter: Adapter, attd_backbone: Backbone
    ) -> None:
        batched = attd_adapter.num_parameters(
            self._fresh(attd_adapter, attd_backbone, self.batch_size)
        )
        shared_state = self._fresh(attd_adapter, attd_backbone, None)
        shared = attd_adapter.num_parameters(shared_state)
        for label, count in (("batched", batched), ("shared", shared)):
            assert isinstance(count, int) and not isinstance(count, bool) and count > 0, (
                f"num_parameters ({label} state) must be a positive int; got {count!r}"
            )
        numel = sum(value.numel() for value in shared_state.values())
        assert batched == shared == numel, (
            f"num_parameters counts one sample's adapted parameters: expected {numel} (the "
            f"elements of a state without batch dimension); got {batched} for a batch of "
            f"{self.batch_size} and {shared} for the shared state"
        )

    def test_gradient_steps_on_the_state_never_change_base_weights(
        self, attd_adapter: Adapter, attd_backbone: Backbone
    ) -> None:
        import torch

        slots = attd_backbone.adapter_slots()
        bases = {name: slot.base.clone() for name, slot in slots.items()}
        weights = _snapshot(attd_backbone)
        start = self._perturbed(self._fresh(attd_adapter, attd_backbone, self.batch_size))
        state = dict(start)
        x, mask = self._inputs(attd_backbone)
        for _ in range(3):
            leaves = {key: value.detach().requires_grad_(True) for key, value in state.items()}
            out = attd_backbone(x, mask=mask, adapter_state=attd_adapter.deltas(leaves))
            loss = (out * _like(out, seed=11)).sum()
            grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
            with torch.no_grad():
                stepped = {
                    key: value if grad is None else value - 0.1 * grad
                    for (key, value), grad in zip(leaves.items(), grads, strict=True)
                }
                state, _ = attd_adapter.project(stepped, attd_backbone.adapter_slots())
        changed = _changed(attd_backbone, weights)
        assert not changed, f"adapting the state changed base weights: {changed}"
        moved_bases = [
            name
            for name, slot in attd_backbone.adapter_slots().items()
            if not torch.equal(slot.base, bases[name])
        ]
        assert not moved_bases, f"adapting the state changed slot bases: {moved_bases}"
        assert any(_differs(state[key], start[key]) for key in state), (
            "three gradient steps did not move the state at all"
        )


# -- strategies --------------------------------------------------------------------------


class StrategyConformance:
    """The `TTAStrategy` contract on a tiny real `BoundModel` with the `entropy-kl` objective.

    Subclass it and define `make_strategy()`. `make_bound_model()` (a frozen tiny
    classifier with a Delta-SSM adapter), `make_objective()` and `make_batch(model,
    split)` may be overridden. A strategy that needs calibration is calibrated on the
    `validation` split first, as the evaluator does.
    """

    calibration_split: ClassVar[str] = "validation"
    split: ClassVar[str] = "test"
    atol: ClassVar[float] = 1e-5
    rtol: ClassVar[float] = 1e-4

    def make_strategy(self) -> TTAStrategy:
        raise NotImplementedError(
            f"{type(self).__name__} must define make_strategy() -> TTAStrategy"
        )

    def make_bound_model(self) -> BoundModel:
        return _factories().tiny_bound_model()

    def make_objective(self) -> InnerObjective:
        from attd_core.testing import new_plugin_manager

        return new_plugin_manager().create("objective", "entropy-kl")

    def make_batch(self, model: BoundModel, split: str) -> Batch:
        return _factories().task_batch(model.task, split, 8)

    @pytest.fixture
    def attd_bound(self) -> BoundModel:
        return _once(self, "bound", self.make_bound_model)

    @pytest.fixture
    def attd_objective(self) -> InnerObjective:
        return _once(self, "objective", self.make_objective)

    @pytest.fixture
    def attd_batch(self, attd_bound: BoundModel) -> Batch:
        return _once(self, "batch", lambda: self.make_batch(attd_bound, self.split))

    @pytest.fixture
    def attd_strategy(self, attd_bound: BoundModel, attd_objective: InnerObjective) -> Any:
        def build() -> Any:
            strategy = self.make_strategy()
            if getattr(strategy, "needs_calibration", False):
                calibration = self.make_batch(attd_bound, self.calibration_split)
                strategy.calibrate(attd_bound, [calibration], attd_objective)
                assert not strategy.needs_calibration, (
                    "needs_calibration is still true after calibrate(model, batches, objective)"
                )
            return strategy

        return _once(self, "strategy", build)

    def _adapt(self, strategy: Any, bound: BoundModel, batch: Batch, objective: Any) -> Any:
        if hasattr(strategy, "reset"):
            strategy.reset()
        bound.reset_generator()
        return strategy.adapt(bound, batch, objective)

    def test_satisfies_the_strategy_protocol(self, attd_strategy: Any) -> None:
        assert isinstance(attd_strategy, TTAStrategy), (
            "a TTAStrategy needs adapt(model, batch, objective) -> Adaptation "
            "(see attd_core.TTAStrategy)"
        )
        assert isinstance(getattr(attd_strategy, "uses_labels", False), bool), (
            "uses_labels, when defined, must be a bool (reports mark label-reading strategies)"
        )
        if hasattr(attd_strategy, "needs_calibration"):
            assert callable(getattr(attd_strategy, "calibrate", None)), (
                "a strategy with needs_calibration must define calibrate(model, batches, objective)"
            )
        if hasattr(attd_strategy, "reset"):
            assert callable(attd_strategy.reset), "reset must be a method"

    def test_adapt_returns_an_adaptation(
        self, attd_strategy: Any, attd_bound: BoundModel, attd_batch: Batch, attd_objective: Any
    ) -> None:

        result = self._adapt(attd_strategy, attd_bound, attd_batch, attd_objective)
        _check_adaptation(result, attd_bound, attd_batch)

    def test_adapts_a_single_sample(
        self, attd_strategy: Any, attd_bound: BoundModel, attd_batch: Batch, attd_objective: Any
    ) -> None:
        import torch

        one = attd_batch.select(torch.tensor([0]))
        result = self._adapt(attd_strategy, attd_bound, one, attd_objective)
        _check_adaptation(result, attd_bound, one)

    def test_never_changes_base_weights(
        self, attd_strategy: Any, attd_bound: BoundModel, attd_batch: Batch, attd_objective: Any
    ) -> None:
        before = _snapshot(attd_bound.model)
        self._adapt(attd_strategy, attd_bound, attd_batch, attd_objective)
        changed = _changed(attd_bound.model, before)
        assert not changed, (
            f"adapt changed base weights: {changed}; only the adapter state may change"
        )
        with_grads = [n for n, p in attd_bound.model.named_parameters() if p.grad is not None]
        assert not with_grads, f"adapt left gradients on base weights: {with_grads}"

    def test_leaves_the_batch_unchanged(
        self, attd_strategy: Any, attd_bound: BoundModel, attd_batch: Batch, attd_objective: Any
    ) -> None:
        import torch

        copy = attd_batch.select(torch.arange(len(attd_batch)))
        self._adapt(attd_strategy, attd_bound, attd_batch, attd_objective)
        for name in ("inputs", "mask", "labels"):
            value, kept = getattr(attd_batch, name), getattr(copy, name)
            assert (value is None) == (kept is None) and (
                value is None or torch.equal(value, kept)
            ), f"adapt changed batch.{name} in place: the evaluator scores that same batch"

    def test_is_reproducible(
        self, attd_strategy: Any, attd_bound: BoundModel, attd_batch: Batch, attd_objective: Any
    ) -> None:
        import torch

        results = []
        for _ in range(2):
            result = self._adapt(attd_strategy, attd_bound, attd_batch, attd_objective)
            with torch.no_grad():
                results.append((result.steps, attd_bound(attd_batch, result.state).logits))
        assert torch.equal(results[0][0], results[1][0]), (
            "two adapt calls (after reset() and model.reset_generator()) chose different steps: "
            "compare evaluates every strategy from the same initial states"
        )
        _close(
            results[1][1],
            results[0][1],
            self.atol,
            self.rtol,
            "two adapt calls (after reset() and model.reset_generator()) predicted differently",
        )

    def test_reads_labels_only_if_it_says_so(
        self, attd_strategy: Any, attd_bound: BoundModel, attd_batch: Batch, attd_objective: Any
    ) -> None:
        import torch

        if getattr(attd_strategy, "uses_labels", False):
            pytest.skip("the strategy declares uses_labels")
        with_labels = self._adapt(attd_strategy, attd_bound, attd_batch, attd_objective)
        hidden = replace(attd_batch, labels=None)
        try:
            without = self._adapt(attd_strategy, attd_bound, hidden, attd_objective)
        except Exception as exc:
            pytest.fail(
                "adapt failed on a batch without labels, but uses_labels is false: a "
                f"strategy that reads labels must say so ({type(exc).__name__}: {exc})"
            )
        assert torch.equal(with_labels.steps, without.steps), (
            "hiding the labels changed the steps, but uses_labels is false"
        )


def _check_adaptation(result: Any, bound: BoundModel, batch: Batch) -> None:
    import torch

    size = len(batch)
    assert isinstance(result, Adaptation), (
        f"adapt must return an attd_core.Adaptation; got {type(result).__name__}"
    )
    steps = result.steps
    assert isinstance(steps, torch.Tensor) and tuple(steps.shape) == (size,), (
        f"Adaptation.steps must be ({size},), one step count per sample; got {_describe(steps)}"
    )
    assert steps.dtype == torch.long, f"Adaptation.steps must be int64; got {steps.dtype}"
    assert bool((steps >= 0).all()), f"Adaptation.steps must be >= 0; got {steps.tolist()}"
    assert steps.device == batch.inputs.device, "Adaptation.steps must be on the batch's device"
    if result.state is not None:
        fresh = bound.init_adapter_state(size)
        unknown = sorted(set(result.state) - set(fresh))
        assert not unknown, f"Adaptation.state holds keys no adapter made: {unknown}"
        for key, value in result.state.items():
            allowed = (tuple(fresh[key].shape), tuple(fresh[key].shape[1:]))
            assert tuple(value.shape) in allowed, (
                f"Adaptation.state[{key!r}] has shape {tuple(value.shape)}; a fresh state's "
                f"is {tuple(fresh[key].shape)}"
            )
    for key, value in result.stats.items():
        assert isinstance(key, str) and isinstance(value, (int, float)), (
            f"Adaptation.stats must map names to numbers; got {key!r}: {_describe(value)}"
        )
    if result.difficulty is not None:
        assert tuple(result.difficulty.shape) == (size,), (
            f"Adaptation.difficulty must be ({size},); got {_describe(result.difficulty)}"
        )
    for key, flags in result.flags.items():
        assert tuple(flags.shape) == (size,) and flags.dtype == torch.bool, (
            f"Adaptation.flags[{key!r}] must be ({size},) bool; got {_describe(flags)}"
        )
    with torch.no_grad():
        logits = bound(batch, result.state).logits
    assert bool(torch.isfinite(logits).all()), "the adapted state gives non-finite logits"
