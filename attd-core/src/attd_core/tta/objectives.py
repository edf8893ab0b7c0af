"""Inner objectives: self-supervised losses a test-time inner loop minimises, one per sample.

Each objective runs the forwards it needs through `model(batch, state)` and returns a
`(B,)` loss in which a sample's value depends on that sample alone (and never on its
padding), so one backward of the sum gives every sample its own gradient. Random choices
(masked or dropped tokens) depend only on the seed and the sample's number of real
tokens, so a sample gets the same loss whatever batch, position or padding it comes with
(and samples of one length share their masked positions).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attd_core.errors import AttdError, ConfigError
from attd_core.interfaces import AdaptableModel, AdapterState, Batch, ModelOutput, Shift, Task
from attd_core.options import (
    ConsistencyOptions,
    EntropyKLOptions,
    EntropyOptions,
    MaskedReconstructionOptions,
    MemoOptions,
    NextStepOptions,
    NextTokenOptions,
)
from attd_core.spec_strings import parse_component
from attd_core.tta.objective_heads import head_of, input_errors, input_head
from attd_core.tta.views import sample_views

if TYPE_CHECKING:
    from attd_core.plugins import PluginManager


def _real_mask(batch: Batch) -> Tensor:
    """The batch's `(B, L)` bool mask of real tokens (all real when the batch has none)."""
    if batch.mask is None:
        return torch.ones(batch.inputs.shape[:2], dtype=torch.bool, device=batch.inputs.device)
    return batch.mask.bool()


def _class_logits(logits: Tensor, objective: str) -> Tensor:
    if logits.dim() != 2:
        raise ValueError(
            f"{objective} expects classification logits (B, C); got {tuple(logits.shape)}"
        )
    return logits


def _masked_mean(values: Tensor, where: Tensor) -> Tensor:
    """Mean of `values` `(B, T)` over `where` per row; 0 for rows with nothing selected."""
    total = torch.where(where, values, torch.zeros_like(values)).sum(dim=1)
    return total / where.sum(dim=1).clamp_min(1).to(values.dtype)


def _draws_by_rank(mask: Tensor, seed: int) -> tuple[Tensor, Tensor]:
    """`(B, L)` uniform draws and each token's rank among its row's real tokens.

    The draws come from a generator seeded per call, drawn on the CPU as one `(L,)` table
    indexed by rank, so a sample's draws depend on the seed and its real length only
    (uniform draws are prefix-stable): neither padding nor the other samples change them.
    """
    generator = torch.Generator().manual_seed(seed)
    table = torch.rand(mask.shape[1], generator=generator).to(mask.device)
    rank = (mask.long().cumsum(dim=1) - 1).clamp_min(0)
    return table[rank], rank


def _random_order(mask: Tensor, seed: int) -> Tensor:
    """`(B, L)` long: each real token's place in a random order of its row's real tokens;
    padding comes after every real token (see `_draws_by_rank`)."""
    draws, _ = _draws_by_rank(mask, seed)
    scores = torch.where(mask, draws, 2.0)  # above every draw: padding sorts last
    return scores.argsort(dim=1).argsort(dim=1)


def _own_tokens(inputs: Tensor, mask: Tensor, seed: int) -> Tensor:
    """`(B, L)`: at every real position the token of another real position of its row,
    drawn at random (a one-token sample keeps its token; see `_draws_by_rank`)."""
    draws, rank = _draws_by_rank(mask, seed + 1)
    others = (mask.sum(dim=1, keepdim=True) - 1).clamp_min(0)
    drawn = torch.minimum((draws * others).long(), (others - 1).clamp_min(0))
    source_rank = torch.where((drawn >= rank) & (others > 0), drawn + 1, drawn)
    real_first = (~mask).long().argsort(dim=1, stable=True)  # real positions, in order
    return inputs.gather(1, real_first.gather(1, source_rank))


def _count(mask: Tensor, fraction: float) -> Tensor:
    """`(B, 1)` long: round(fraction * n) for each row's n real tokens."""
    return (fraction * mask.sum(dim=1, keepdim=True)).round().long()


def _features(output: ModelOutput, objective: str) -> Tensor:
    if output.features is None:
        raise ValueError(f"{objective} needs features (B, L, D); the task's forward returned none")
    return output.features


def _symmetric_kl(first: Tensor, second: Tensor) -> Tensor:
    log_p, log_q = first.log_softmax(dim=-1), second.log_softmax(dim=-1)
    return 0.5 * ((log_p.exp() - log_q.exp()) * (log_p - log_q)).sum(dim=-1)


class Entropy:
    """Prediction entropy (TENT): sharpening predictions adapts to the shifted input.

    The confidence filter (EATA/SAR) lets only samples that are already confident pull
    towards sharper predictions; unconfident ones, whose entropy gradient is mostly
    noise, contribute 0.
    """

    name = "entropy"

    def __init__(self, options: EntropyOptions | None = None) -> None:
        self.options = options or EntropyOptions()

    def __call__(
        self,
        model: AdaptableModel,
        batch: Batch,
        state: AdapterState | None,
        reference: ModelOutput,
    ) -> Tensor:
        logits = _class_logits(model(batch, state).logits, self.name)
        return self._loss(logits, reference)

    def _loss(self, logits: Tensor, reference: ModelOutput) -> Tensor:
        log_p = logits.log_softmax(dim=-1)
        p = log_p.exp()
        loss = -(p * log_p).sum(dim=-1)
        threshold = self.options.confidence_threshold
        if threshold is not None:
            confident = p.detach().amax(dim=-1) >= threshold
            loss = torch.where(confident, loss, torch.zeros_like(loss))
        return loss


class EntropyKL(Entropy):
    """Entropy plus `kl_weight * KL(p_adapted || p_reference)`.

    Entropy alone drives predictions to collapse onto one class; the KL to the unadapted
    prediction keeps adaptation near what the trained model said.
    """

    name = "entropy-kl"
    options: EntropyKLOptions

    def __init__(self, options: EntropyKLOptions | None = None) -> None:
        super().__init__(options or EntropyKLOptions())

    def _loss(self, logits: Tensor, reference: ModelOutput) -> Tensor:
        loss = super()._loss(logits, reference)
        if self.options.kl_weight == 0:
            return loss
        log_p = logits.log_softmax(dim=-1)
        log_q = _class_logits(reference.logits, self.name).detach().log_softmax(dim=-1)
        return loss + self.options.kl_weight * (log_p.exp() * (log_p - log_q)).sum(dim=-1)


class NextToken:
    """Next-token cross-entropy on the input itself (test-time training for LMs).

    Logits `(B, L, V)` at position t predict token t + 1; a sample's loss is the mean
    over the positions where both t and t + 1 are real (0 with fewer than two). A
    token-level task's own logits are those logits (a language model's); any other
    token task gets a head from features to the vocabulary (`build_head`), which the
    `aligned` regime trains. With a bidirectional backbone position t already reads
    t + 1, so the task is trivial there: use it with causal backbones.
    """

    name = "next-token"
    head: nn.Module | None = None

    def __init__(self, options: NextTokenOptions | None = None) -> None:
        self.options = options or NextTokenOptions()

    def build_head(self, d_model: int, task: Task) -> nn.Module | None:
        """None for a token-level task (its logits predict tokens); else a vocabulary head."""
        if getattr(task, "token_level", False) or task.input_spec.vocab_size is None:
            return None
        self.head = input_head(d_model, task.input_spec, self.name)
        return self.head

    def __call__(
        self,
        model: AdaptableModel,
        batch: Batch,
        state: AdapterState | None,
        reference: ModelOutput,
    ) -> Tensor:
        if model.input_spec.vocab_size is None or batch.inputs.is_floating_point():
            raise ValueError(
                f"{self.name} needs integer token inputs from a vocabulary; this task feeds "
                f"{batch.inputs.dtype} inputs of shape {tuple(batch.inputs.shape)}"
            )
        output = model(batch, state)
        logits = output.logits if self.head is None else self.head(output.features)
        if logits.dim() != 3 or logits.shape[:2] != batch.inputs.shape:
            raise ValueError(
                f"{self.name} expects per-token logits (B, L, V) for inputs "
                f"{tuple(batch.inputs.shape)}; got {tuple(logits.shape)}"
            )
        mask = _real_mask(batch)
        pairs = mask[:, :-1] & mask[:, 1:]
        targets = torch.where(pairs, batch.inputs[:, 1:], 0)
        losses = F.cross_entropy(logits[:, :-1].transpose(1, 2), targets, reduction="none")
        return _masked_mean(losses, pairs)


class MaskedReconstruction:
    """Blank some tokens; reconstruct what was there.

    `target=features`: the unadapted model's features on the clean batch,
    `reference.features` (data2vec-style self-distillation), so no head is needed and
    any task can use it. `target=inputs`: the blanked tokens themselves (BERT; cross-
    entropy) or pixels (MAE; squared error), through a head from features to the input
    (`build_head`) that the `aligned` regime trains with the task.
    round(`mask_ratio` * n) of a sample's n real tokens (at least one) are replaced
    while the mask still marks them real, so the model must fill them in from
    context: integer tokens by a random token of the same sample (BERT's random
    replacement; the pad token would not do, since its embedding is zero and Mamba's
    gate then zeroes that position whatever the adapter), float inputs by zeros. The
    loss is the error averaged over those positions (features: over the feature
    dimension too).
    """

    name = "masked-reconstruction"
    head: nn.Module | None = None

    def __init__(self, options: MaskedReconstructionOptions | None = None) -> None:
        self.options = options or MaskedReconstructionOptions()

    def build_head(self, d_model: int, task: Task) -> nn.Module | None:
        """With `target=inputs`, the head that predicts each blanked token or pixel."""
        if self.options.target != "inputs":
            return None
        self.head = input_head(d_model, task.input_spec, self.name)
        return self.head

    def blanked(self, batch: Batch) -> tuple[Batch, Tensor]:
        """The batch with tokens replaced, and the `(B, L)` bool mask of replaced tokens."""
        mask = _real_mask(batch)
        order = _random_order(mask, self.options.seed)
        blank = (order < _count(mask, self.options.mask_ratio).clamp_min(1)) & mask
        if batch.inputs.is_floating_point():
            inputs = batch.inputs.masked_fill(blank.unsqueeze(-1), 0.0)
        else:
            own = _own_tokens(batch.inputs, mask, self.options.seed)
            inputs = torch.where(blank, own, batch.inputs)
        return replace(batch, inputs=inputs), blank

    def __call__(
        self,
        model: AdaptableModel,
        batch: Batch,
        state: AdapterState | None,
        reference: ModelOutput,
    ) -> Tensor:
        masked, blank = self.blanked(batch)
        if self.options.target == "inputs":
            features = _features(model(masked, state), self.name)
            return _masked_mean(input_errors(head_of(self)(features), batch.inputs), blank)
        if reference.features is None:
            raise ValueError(
                f"{self.name} needs reference.features (B, L, D); the task's forward returned none"
            )
        features = model(masked, state).features
        if features is None or features.shape != reference.features.shape:
            raise ValueError(
                f"{self.name} needs features shaped like the reference's "
                f"{tuple(reference.features.shape)}; got "
                f"{None if features is None else tuple(features.shape)}"
            )
        errors = (features - reference.features.detach()).pow(2).mean(dim=-1)
        return _masked_mean(errors, blank)


class NextStep:
    """Predict each next input from the current features.

    `target=embedded`: the MSE between `features[:, t]` and the detached
    `embedded[:, t + 1]` (no head needed). `target=inputs`: the MSE between a head's
    prediction from `features[:, t]` and the raw float input at t + 1 (`build_head`;
    the `aligned` regime trains it; token inputs have `next-token`). Either is averaged
    over the positions where t and t + 1 are both real (0 with fewer than two). With a
    bidirectional backbone position t already reads t + 1: use causal backbones.
    """

    name = "next-step"
    head: nn.Module | None = None

    def __init__(self, options: NextStepOptions | None = None) -> None:
        self.options = options or NextStepOptions()

    def build_head(self, d_model: int, task: Task) -> nn.Module | None:
        """With `target=inputs`, the head that predicts the next float input."""
        if self.options.target != "inputs":
            return None
        if task.input_spec.channels is None:
            raise ValueError(
                f"{self.name} with target=inputs predicts float inputs; this task feeds "
                "tokens: use the next-token objective"
            )
        self.head = input_head(d_model, task.input_spec, self.name)
        return self.head

    def __call__(
        self,
        model: AdaptableModel,
        batch: Batch,
        state: AdapterState | None,
        reference: ModelOutput,
    ) -> Tensor:
        output = model(batch, state)
        mask = _real_mask(batch)
        pairs = mask[:, :-1] & mask[:, 1:]
        if self.options.target == "inputs":
            predicted = head_of(self)(_features(output, self.name)[:, :-1])
            return _masked_mean(input_errors(predicted, batch.inputs[:, 1:]), pairs)
        if output.features is None or output.embedded is None:
            missing = [n for n in ("features", "embedded") if getattr(output, n) is None]
            raise ValueError(
                f"{self.name} needs the task's forward to return features and embedded "
                f"(B, L, D); missing: {', '.join(missing)}"
            )
        if output.features.shape != output.embedded.shape:
            raise ValueError(
                f"{self.name} needs features and embedded of one shape; got "
                f"{tuple(output.features.shape)} and {tuple(output.embedded.shape)}"
            )
        target = output.embedded[:, 1:].detach()
        errors = (output.features[:, :-1] - target).pow(2).mean(dim=-1)
        return _masked_mean(errors, pairs)


class Consistency:
    """Symmetric KL between the predictions on two views with random tokens dropped.

    Each view drops round(`drop_ratio` * n) of a sample's n real tokens by clearing their
    mask (keeping at least one). One seeded random order of the real tokens gives both:
    the first view drops its head, the second its tail, so the views differ whenever a
    token is dropped (disjoint drops while 2 * count <= n). Agreement between views
    rewards predictions that do not hinge on a few tokens, without labels.
    """

    name = "consistency"

    def __init__(self, options: ConsistencyOptions | None = None) -> None:
        self.options = options or ConsistencyOptions()

    def views(self, batch: Batch) -> tuple[Batch, Batch]:
        """The batch twice, each copy with its own tokens dropped from the mask."""
        mask = _real_mask(batch)
        order = _random_order(mask, self.options.seed)
        real = mask.sum(dim=1, keepdim=True)
        count = torch.minimum(_count(mask, self.options.drop_ratio), real - 1).clamp_min(0)
        first = replace(batch, mask=mask & (order >= count))
        second = replace(batch, mask=mask & (order < real - count))
        return first, second

    def __call__(
        self,
        model: AdaptableModel,
        batch: Batch,
        state: AdapterState | None,
        reference: ModelOutput,
    ) -> Tensor:
        first, second = (
            _class_logits(model(view, state).logits, self.name) for view in self.views(batch)
        )
        return _symmetric_kl(first, second)


class Memo:
    """Entropy of the prediction averaged over augmented views of each sample (MEMO).

    Entropy of one prediction only sharpens what the model already says; the entropy of
    the marginal over `views` augmented copies (Zhang, Levine and Finn, 2022) also asks
    the views to agree, so adaptation moves towards predictions that survive the
    augmentations. Each view applies the `augmentations` (shift specs, made by the
    manager that creates the objective) in order; without that option the task's own
    `Task.augmentations` are used, read from `model.task` (a `BoundModel`'s). A sample's
    views depend on the seed, the view index and its real inputs alone (see
    `attd_core.tta.views`), and all B * views of them run in one forward, each with its
    sample's adapter state rows, so gradients reach each sample's own state.
    """

    name = "memo"

    def __init__(self, options: MemoOptions | None = None, *, manager: PluginManager) -> None:
        self.options = options or MemoOptions()
        self.manager = manager
        given = self.options.augmentations
        self._given = None if given is None else self._create(given, "eval.objective")
        self._task_shifts: tuple[Any, list[Shift]] | None = None

    def check(self, task: Any) -> None:
        """Raise `ConfigError` unless there are augmentations for `task` (the runtime
        calls it before anything trains)."""
        self.augmentations(task)

    def augmentations(self, task: Any) -> list[Shift]:
        """The shifts each view applies: the `augmentations` option, else `task`'s own."""
        if self._given is not None:
            return self._given
        if self._task_shifts is not None and self._task_shifts[0] is task:
            return self._task_shifts[1]
        specs = getattr(task, "augmentations", None)
        if not specs:
            raise ConfigError(
                f"objective {self.name!r} needs augmentations to make its views, and task "
                f"{type(task).__name__} provides none (Task.augmentations); set them with "
                "the objective's `augmentations` option, e.g. "
                "eval.objective.augmentations=[token-substitution:1]"
            )
        shifts = self._create(specs, f"task {type(task).__name__}")
        self._task_shifts = (task, shifts)
        return shifts

    def _create(self, specs: Sequence[str], source: str) -> list[Shift]:
        shifts = []
        for text in specs:
            try:
                shift = parse_component(text, "shift", self.manager).create()
            except AttdError as exc:
                raise ConfigError(
                    f"objective {self.name!r}: augmentation {text!r} (from {source}): {exc}"
                ) from None
            if hasattr(shift, "load_split"):
                raise ConfigError(
                    f"objective {self.name!r}: augmentation {text!r} (from {source}) draws "
                    "other examples instead of changing a batch, so it cannot make views"
                )
            shifts.append(shift)
        return shifts

    def __call__(
        self,
        model: AdaptableModel,
        batch: Batch,
        state: AdapterState | None,
        reference: ModelOutput,
    ) -> Tensor:
        shifts = self.augmentations(getattr(model, "task", None))
        views = self.options.views
        try:
            augmented = sample_views(
                batch, shifts, views, self.options.seed, model.input_spec.fill_id
            )
        except ConfigError as exc:
            raise ConfigError(
                f"objective {self.name!r}: an augmentation does not fit this task's inputs "
                f"({exc}); choose others with the objective's `augmentations` option"
            ) from None
        if state is not None and model.per_sample:  # shared states serve every view as is
            state = {key: value.repeat_interleave(views, dim=0) for key, value in state.items()}
        logits = _class_logits(model(augmented, state).logits, self.name)
        log_p = logits.log_softmax(dim=-1).reshape(len(batch), views, -1)
        log_mean = log_p.logsumexp(dim=1) - math.log(views)
        return -(log_mean.exp() * log_mean).sum(dim=-1)
