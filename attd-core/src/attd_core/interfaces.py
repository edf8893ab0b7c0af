"""The contracts every attd component is written against.

This module imports no torch at run time, so that plugin discovery (which imports it
through `attd_core`) stays fast. Tensors appear in annotations only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, runtime_checkable

if TYPE_CHECKING:
    from torch import Tensor, nn

AdapterState: TypeAlias = "dict[str, Tensor]"
"""The tensors an inner loop optimises, keyed by the backbone's adapter slot names.

A tensor may carry a leading batch dimension (one adapter per sample). The state lives
outside the backbone and is passed to it on every call, so adapting never touches base
weights and resetting is just creating a fresh state.
"""


@dataclass
class Batch:
    """One collated batch: what a Task's `preprocess` returns and everything else reads.

    `inputs` is `(B, L)` integer tokens or `(B, L, C)` floats; `mask` is `(B, L)` bool,
    True on real tokens; `aux` holds task-specific extras (e.g. a second tower's input).
    """

    inputs: Tensor
    mask: Tensor | None = None
    labels: Tensor | None = None
    aux: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    def select(self, index: Tensor) -> Batch:
        """The samples at `index` (a `(n,)` long tensor): tensors in `aux` are indexed too.

        The engine uses it to drop finished samples from the working batch, so every
        tensor in `aux` must have the batch as its leading dimension.
        """

        def pick(value: Any) -> Any:
            return value.index_select(0, index) if hasattr(value, "index_select") else value

        return replace(
            self,
            inputs=pick(self.inputs),
            mask=pick(self.mask),
            labels=pick(self.labels),
            aux={key: pick(value) for key, value in self.aux.items()},
        )

    def to(self, device: Any) -> Batch:
        """Move every tensor (including tensors in `aux`) to `device`."""

        def move(value: Any) -> Any:
            return value.to(device) if hasattr(value, "to") else value

        return replace(
            self,
            inputs=move(self.inputs),
            mask=move(self.mask),
            labels=move(self.labels),
            aux={key: move(value) for key, value in self.aux.items()},
        )


@dataclass
class ModelOutput:
    """What the model's forward returns: logits plus whatever else a caller may need.

    `features` are the backbone's `(B, L, D)` outputs, `embedded` its `(B, L, D)` inputs
    (what next-step reconstruction predicts), `pooled` the `(B, D)` summary used by
    classification heads.
    """

    logits: Tensor
    features: Tensor | None = None
    embedded: Tensor | None = None
    pooled: Tensor | None = None


SLOT_KINDS = (
    "A",
    "A_log",
    "dt_bias",
    "D",
    "weight",
    "norm_weight",
    "norm_bias",
    "initial_state",
)
"""What a slot holds, so adapters pick slots by meaning rather than by name.

`A`: a state matrix `(d_inner, d_state)`; `A_log`: its log-magnitudes, `A = -exp(A_log)`
(a delta there multiplies A's entries by `exp(delta)`); `dt_bias`, `D`: per-channel
vectors; `weight`: a linear map `(out, in)` (LoRA's target); `norm_weight`, `norm_bias`:
a norm layer's affine vectors; `initial_state`: the SSM state a scan starts from (base
all zeros).
"""


@dataclass(frozen=True)
class AdapterSlot:
    """A place inside a backbone where an adapter may add a delta.

    `base` is the current base tensor (read it, never write it); `kind` is one of
    `SLOT_KINDS`; `upper_bound` is set where the backbone clamps the adapted value
    (Mamba keeps `A` negative), so adapters can project their deltas inside it.
    """

    name: str
    base: Tensor
    kind: str = "weight"
    upper_bound: float | None = None


@dataclass
class Adaptation:
    """The result of one `TTAStrategy.adapt` call.

    `state` is None when nothing was adapted; `steps` holds each sample's number of inner
    gradient steps `(B,)` (its compute, rolled-back steps included); `stats` are batch
    totals of guard counters; `difficulty` is the inner loss before adaptation `(B,)`
    when it was computed; `flags` marks samples per guard, e.g. `flags["nonfinite"]` `(B,)`
    bool for samples whose loss or gradient went non-finite and were reverted.
    """

    state: AdapterState | None
    steps: Tensor
    stats: dict[str, float] = field(default_factory=dict)
    difficulty: Tensor | None = None
    flags: dict[str, Tensor] = field(default_factory=dict)


@runtime_checkable
class Backbone(Protocol):
    """A sequence model: `(B, L, D)` in, `(B, L, D)` out.

    `adapter_state` is passed in and never stored, so an inner loop can change it
    freely. `adapter_slots()` tells adapters where deltas may go.
    """

    d_model: int

    def forward(
        self, x: Tensor, mask: Tensor | None = None, adapter_state: AdapterState | None = None
    ) -> Tensor: ...

    def adapter_slots(self) -> dict[str, AdapterSlot]: ...


@runtime_checkable
class Encoder(Protocol):
    """A modality encoder: raw examples in, `(tokens, mask, metadata)` out."""

    def encode(self, raw: Any) -> tuple[Any, Any, dict[str, Any]]: ...


@runtime_checkable
class Pooling(Protocol):
    """Summarise `(B, L, D)` features into `(B, D)`, respecting the padding mask."""

    def __call__(self, features: Tensor, mask: Tensor | None) -> Tensor: ...


@dataclass(frozen=True)
class InputSpec:
    """What a task feeds the model: integer tokens from a vocabulary, or float channels.

    `pad_id` reserves a token id for padding: its embedding is a frozen zero vector
    (`padding_idx`), so no real token may use it. None, the default, reserves none:
    padding then holds id 0 like any token and only the batch's mask marks it, so a task
    whose real tokens include 0 cannot lose them by forgetting to choose a pad id.
    """

    vocab_size: int | None = None
    channels: int | None = None
    pad_id: int | None = None

    @property
    def fill_id(self) -> int:
        """The id that padded positions hold: `pad_id`, or 0 when none is reserved."""
        return 0 if self.pad_id is None else self.pad_id


@runtime_checkable
class Task(Protocol):
    """Knows its data, labels, head and metrics; never the backbone's internals.

    `splits` names the splits `load_split` serves (the runtime checks `eval.split` and
    `eval.calibration_split` against them before training); `load_split` returns a
    Hugging Face `datasets.Dataset` (or any sequence of example dicts) and raises
    `ConfigError` for any other split. `preprocess` collates a list of examples into a
    `Batch`. The model (`attd_core.AttdModel`) runs the forward: embedding, backbone,
    pooling, then the head from `build_head`. Optional hooks say what the head reads:

    - `token_level = True`: every position's features `(B, L, D)`, nothing pooled
      (language modelling);
    - `second_tower(batch) -> Batch` with `pair_towers(first, second) -> Tensor`: a
      second input (e.g. `Batch.aux` tensors) runs through the same embedding, backbone,
      adapter state and pooling, and the head reads `pair_towers` of the two pooled
      `(B, D)` towers (document matching).

    A task may also define `sequence_length(example) -> int`: the runtime then batches
    examples of similar length together, which saves most of the padding. And
    `example_correct(output, batch) -> Tensor`, a `(B,)` bool tensor saying whether each
    example was predicted right: the runtime then keeps every example's outcome and
    compares each strategy with `none` pair by pair (accuracy difference with a
    bootstrap interval, McNemar test, flips); tasks without it get no such comparison.
    `ClassificationTask` defines it. And `augmentations`, a tuple of shift specs
    (`("token-substitution:1",)`): label-preserving changes of its inputs that the
    modality provides, which the `memo` objective applies to make augmented views when
    its own `augmentations` option is unset.

    An inner objective never sees what is then scored. A task whose targets are in its
    inputs (language modelling: the next token) defines `evaluation_views(batch) ->
    (context, scored)`: the evaluator adapts on `context` (which must hold no scored
    target), then predicts `scored` with the adapted state and computes metrics and
    `example_correct` on it, for every strategy alike, so all are scored on the same
    targets. Without the hook both views are the batch itself, which is right when the
    targets (labels) are not in the inputs. Either way a strategy that does not declare
    `uses_labels` gets its view with `labels=None`.
    """

    input_spec: InputSpec
    num_classes: int
    splits: tuple[str, ...]

    def load_split(self, split: str) -> Any: ...

    def preprocess(self, raw_batch: list[dict[str, Any]]) -> Batch: ...

    def build_head(self, d_model: int) -> nn.Module: ...

    def compute_loss(self, output: ModelOutput, batch: Batch) -> Tensor: ...

    def sample_losses(self, output: ModelOutput, batch: Batch) -> Tensor:
        """The task loss of each sample `(B,)`: what the oracle and the regimes compare."""
        ...

    def compute_metrics(self, output: ModelOutput, batch: Batch) -> dict[str, float]: ...


@runtime_checkable
class Adapter(Protocol):
    """Creates and constrains adapter states; never mutates backbone weights.

    `init_state` reads the backbone's slots and returns fresh tensors (with a leading
    batch dimension when `batch_size` is given and `per_sample` is true), named by the
    slot convention (`<slot>` dense, `<slot>.U`/`<slot>.V` low rank). A fresh state must
    leave the model's output unchanged. `deltas` maps a state to what the backbone reads
    (identity for most adapters; LoRA scales by alpha / rank), differentiably.
    `project` maps a state back into the allowed set after an update (norm caps, A kept
    below its slot's `upper_bound`) and returns counts of what it did, one tensor each.
    `num_parameters` counts one sample's adapted parameters.
    """

    per_sample: bool

    def init_state(
        self, backbone: Backbone, batch_size: int | None = None, *, generator: Any = None
    ) -> AdapterState: ...

    def deltas(self, state: AdapterState) -> AdapterState: ...

    def project(
        self, state: AdapterState, slots: Mapping[str, AdapterSlot]
    ) -> tuple[AdapterState, dict[str, Tensor]]: ...

    def num_parameters(self, state: AdapterState) -> int: ...


@runtime_checkable
class InnerObjective(Protocol):
    """A self-supervised loss for test-time adaptation, one value per sample `(B,)`.

    It runs the forward passes it needs itself (`model(batch, state)`, or on a masked or
    augmented copy of the batch), so objectives with two views or masked inputs fit the
    same contract. `reference` is the unadapted output on the clean batch (computed once,
    without gradients) for anchoring and reconstruction targets. A sample's loss must
    depend on that sample alone: one backward of the sum then gives per-sample gradients.

    An objective that needs a head of its own (predicting the input, as TTT's auxiliary
    task does) declares it with an optional `build_head(d_model, task) -> nn.Module |
    None`. The runtime calls it once, makes the module part of the model
    (`AttdModel.objective_head`: trained by the `aligned` regime, saved with the
    checkpoint) and the objective keeps using the module it returned.

    An objective that needs something of the task (`memo`: augmentations) may define
    `check(task)`, raising `ConfigError` when the task does not provide it; the runtime
    calls it before anything trains.
    """

    def __call__(
        self,
        model: AdaptableModel,
        batch: Batch,
        state: AdapterState | None,
        reference: ModelOutput,
    ) -> Tensor: ...


@dataclass
class ControllerPlan:
    """A controller's decision for each sample of a batch.

    `k_hard` `(B,)` long: the steps taken; `k_soft` `(B,)`: its differentiable form;
    `cost` `(B,)`: the compute-cost term (K, or expected K); `weights` `(B, k_max + 1)`:
    a differentiable distribution over step counts 0..k_max (None when the controller is
    not differentiable), which the controller regime uses to weigh each step's task
    loss; `details` holds what a report may show (gates, thresholds, hazards).
    """

    k_hard: Tensor
    k_soft: Tensor
    cost: Tensor
    weights: Tensor | None = None
    details: dict[str, Tensor] = field(default_factory=dict)


@runtime_checkable
class Controller(Protocol):
    """Maps a per-sample difficulty signal `(B,)` to at most `k_max` inner steps.

    Built-in controllers are monotone: a harder sample never gets fewer steps.
    `needs_calibration` is true while the controller has nothing fitted or trained;
    `calibrate` then fits it from a calibration split's difficulties and, when
    `uses_best_steps` is true, each sample's best step count (`best_steps`, found with
    labels on that split). Planning reads the difficulty only, never labels (the
    label-reading upper bound is the `oracle` strategy).
    """

    k_max: int
    uses_best_steps: bool

    @property
    def needs_calibration(self) -> bool: ...

    def calibrate(self, difficulty: Tensor, best_steps: Tensor | None = None) -> None: ...

    def plan(self, difficulty: Tensor) -> ControllerPlan: ...


@runtime_checkable
class AdaptableModel(Protocol):
    """What a TTA strategy sees: a task-bound forward plus the adapter's state rules.

    `adapter_owners` maps each key of a fresh state to the adapter that made it (the
    parameter selector reads it); `sample_losses` is the task loss per sample (labels
    needed), for the oracle and the training regimes. A model may also expose its
    `task` (`BoundModel` does), from which objectives read what the task provides
    (`memo` reads `Task.augmentations`).
    """

    per_sample: bool
    input_spec: InputSpec

    def __call__(self, batch: Batch, adapter_state: AdapterState | None = None) -> ModelOutput: ...

    def init_adapter_state(self, batch_size: int) -> AdapterState: ...

    def project_adapter_state(
        self, state: AdapterState
    ) -> tuple[AdapterState, Mapping[str, Tensor]]: ...

    def adapter_owners(self, state: AdapterState) -> Mapping[str, str]: ...

    def sample_losses(self, output: ModelOutput, batch: Batch) -> Tensor: ...


@runtime_checkable
class Shift(Protocol):
    """A test-time distribution shift: a transformed copy of a batch, for evaluation only.

    `generator` makes the corruption reproducible; the batch passed in is not changed.
    A shift that draws different examples instead (harder instances of a generated
    task) also defines `load_split(task, split)`, which the evaluator then reads in
    place of `task.load_split(split)`; its `apply` returns the batch unchanged.

    A shift that cannot handle a task's inputs (pixel shifts need one token per pixel,
    token shifts integer tokens) raises `ConfigError` from `apply` (or `load_split`),
    saying what it needs. The runtime applies it to a batch of two examples before
    anything trains or evaluates (`attd_core.check_shift`), so such a mismatch stops the
    run at once, naming the shift and the task.
    """

    def apply(self, batch: Batch, generator: Any) -> Batch: ...


@runtime_checkable
class TTAStrategy(Protocol):
    """Adapts to one batch at test time and says how many steps each sample took.

    Strategies that carry state across batches (continual streams) also define
    `reset()`, which the evaluator calls before each pass; strategies that must be
    fitted first (calibrated controllers) define `calibrate(model, batches, objective)`
    and a `needs_calibration` property, and the evaluator calibrates them on batches of
    the calibration split while it is true. `uses_labels` marks strategies that read
    labels (the oracle): reports say so, and only they get a batch with labels (the
    evaluator hands every other strategy `labels=None`). Calibration batches (context
    views of `eval.calibration_split`, a held-out split) keep their labels, which a
    controller fitted on best step counts reads.
    """

    def adapt(
        self, model: AdaptableModel, batch: Batch, objective: InnerObjective
    ) -> Adaptation: ...
