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
    """What a Task's forward returns: logits plus whatever else a caller may need.

    `features` are the backbone's `(B, L, D)` outputs, `pooled` the `(B, D)` summary
    used by classification heads, `stats` counters such as how often a guard fired.
    """

    logits: Tensor
    features: Tensor | None = None
    pooled: Tensor | None = None
    stats: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class AdapterSlot:
    """A place inside a backbone where an adapter may add a delta.

    `base` is the current base tensor (read it, never write it); `upper_bound` is set
    where the backbone clamps the adapted value (Mamba keeps `A` negative).
    """

    name: str
    base: Tensor
    upper_bound: float | None = None


@dataclass
class Adaptation:
    """The result of one `TTAStrategy.adapt` call.

    `state` is None when nothing was adapted; `steps` holds each sample's number of inner
    steps `(B,)`; `stats` are batch totals of guard counters and similar.
    """

    state: AdapterState | None
    steps: Tensor
    stats: dict[str, float] = field(default_factory=dict)


@runtime_checkable
class Backbone(Protocol):
    """A sequence model: `(B, L, D)` in, `(B, L, D)` out.

    `adapter_state` is passed in and never stored, so an inner loop can change it
    freely. `adapter_slots()` tells adapters where deltas may go.
    """

    d_model: int

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        adapter_state: AdapterState | None = None,
        return_features: bool = False,
    ) -> Tensor | ModelOutput: ...

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
    """What a task feeds the model: integer tokens from a vocabulary, or float channels."""

    vocab_size: int | None = None
    channels: int | None = None
    pad_id: int = 0


@runtime_checkable
class Task(Protocol):
    """Knows its data, labels and metrics; never the backbone's internals.

    `load_split` returns a Hugging Face `datasets.Dataset` (or any sequence of example
    dicts); `preprocess` collates a list of those examples into a `Batch`. `forward`
    runs the model given by the runtime and may pass an adapter state through.
    A task may also define `sequence_length(example) -> int`: the runtime then batches
    examples of similar length together, which saves most of the padding.
    """

    input_spec: InputSpec
    num_classes: int

    def load_split(self, split: str) -> Any: ...

    def preprocess(self, raw_batch: list[dict[str, Any]]) -> Batch: ...

    def build_head(self, d_model: int) -> nn.Module: ...

    def forward(
        self, model: Any, batch: Batch, adapter_state: AdapterState | None = None
    ) -> ModelOutput: ...

    def compute_loss(self, output: ModelOutput, batch: Batch) -> Tensor: ...

    def compute_metrics(self, output: ModelOutput, batch: Batch) -> dict[str, float]: ...


@runtime_checkable
class Adapter(Protocol):
    """Creates and constrains adapter states; never mutates backbone weights.

    `init_state` reads the backbone's slots and returns fresh tensors (with a leading
    batch dimension when `batch_size` is given). `project` maps a state back into the
    allowed set after an update (norm caps and the like) and counts what it did.
    `per_sample` says whether a state made for a batch gives every sample its own
    tensors (a leading batch dimension), so that samples may take different step counts.
    """

    per_sample: bool

    def init_state(
        self, backbone: Backbone, batch_size: int | None = None, *, generator: Any = None
    ) -> AdapterState: ...

    def project(self, state: AdapterState) -> tuple[AdapterState, dict[str, Tensor]]: ...

    def num_parameters(self, state: AdapterState) -> int: ...


@runtime_checkable
class InnerObjective(Protocol):
    """A self-supervised loss for test-time adaptation, one value per sample `(B,)`.

    `reference` is the unadapted output of the same batch (for KL anchoring).
    """

    def __call__(
        self, output: ModelOutput, batch: Batch, reference: ModelOutput | None = None
    ) -> Tensor: ...


@dataclass
class ControllerPlan:
    """A controller's decision: integer steps, their differentiable form, and a cost."""

    k_hard: Tensor
    k_soft: Tensor
    cost: Tensor


@runtime_checkable
class Controller(Protocol):
    """Maps a per-sample difficulty signal `(B,)` to a number of inner steps."""

    def plan(self, difficulty: Tensor) -> ControllerPlan: ...


@runtime_checkable
class AdaptableModel(Protocol):
    """What a TTA strategy sees: a task-bound forward plus the adapter's state rules."""

    per_sample: bool

    def __call__(self, batch: Batch, adapter_state: AdapterState | None = None) -> ModelOutput: ...

    def init_adapter_state(self, batch_size: int) -> AdapterState: ...

    def project_adapter_state(
        self, state: AdapterState
    ) -> tuple[AdapterState, Mapping[str, Tensor]]: ...


@runtime_checkable
class TTAStrategy(Protocol):
    """Adapts to one batch at test time and says how many steps each sample took."""

    def adapt(
        self, model: AdaptableModel, batch: Batch, objective: InnerObjective
    ) -> Adaptation: ...
