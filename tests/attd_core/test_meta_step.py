"""What a meta-training step computes, and how many forwards it and the inner loop run."""

from __future__ import annotations

import pytest
import torch

from attd_core import AttdModel, Batch, DeltaSSMAdapter, MambaBackbone
from attd_core.model import BoundModel
from attd_core.options import (
    ConsistencyOptions,
    DeltaSSMOptions,
    EntropyKLOptions,
    FixedOptions,
    InnerLoopOptions,
    MambaOptions,
    MaskedReconstructionOptions,
)
from attd_core.runtime.regimes import meta_loss
from attd_core.testing import TinyTask
from attd_core.tta.engine import adapt_batch
from attd_core.tta.objectives import Consistency, EntropyKL, MaskedReconstruction
from attd_core.tta.strategies import FixedSteps

OBJECTIVE = EntropyKL(EntropyKLOptions(kl_weight=1.0))
LR = 30.0  # a fresh Delta-SSM moves slowly: U's gradient is scaled by V


def make_bound(scan_backend: str = "auto") -> BoundModel:
    """A tiny classifier in training mode, its weights trainable, with confident outputs."""
    torch.manual_seed(0)
    backbone = MambaBackbone(
        MambaOptions(
            d_model=16, n_layers=2, d_state=4, dt_min=0.1, dt_max=1.0, scan_backend=scan_backend
        )
    )
    model = AttdModel(TinyTask(), backbone).train()
    with torch.no_grad():
        model.head.weight *= 10
        for layer in backbone.layers:
            layer.mixer.out_proj.weight *= 5
    # linear space: a large step crosses A's sign bound, so the projection acts
    options = DeltaSSMOptions(rank=2, init_scale=1.0, max_delta_norm=5.0, space="linear")
    adapter = DeltaSSMAdapter(options)
    return BoundModel(model, {"delta-ssm": adapter})


@pytest.fixture(scope="module")
def batch() -> Batch:
    task = TinyTask()
    return task.preprocess(task.load_split("test"))


def count_forwards(bound: BoundModel) -> list[bool]:
    """Records, per forward of the model, whether it ran with an adapter state."""
    calls: list[bool] = []
    bound.model.register_forward_hook(lambda _, args, __: calls.append(args[1] is not None))
    return calls


def strategy(lr: float = LR) -> FixedSteps:
    return FixedSteps(FixedOptions(k=1, lr=lr, grad_clip=None))


def meta_gradients(
    bound: BoundModel, batch: Batch, second_order: bool, lr: float = LR
) -> list[torch.Tensor]:
    loss = meta_loss(bound, strategy(lr), OBJECTIVE, second_order)(batch)
    return torch.autograd.grad(loss, list(bound.model.parameters()), allow_unused=True)


def test_a_first_order_meta_step_runs_two_forwards(batch):
    """The inner step's forward at the fresh state is also the reference entropy-kl
    compares with: no separate unadapted forward (there were three forwards)."""
    bound = make_bound()
    calls = count_forwards(bound)
    meta_loss(bound, strategy(), OBJECTIVE, second_order=False)(batch).backward()
    assert calls == [True, True]  # the inner step at psi_0, the task loss at psi_1


def test_the_first_order_task_loss_sees_the_adapted_state_as_a_constant(batch):
    """No graph through the inner step: the backward stops at the model's weights."""
    bound = make_bound()
    deltas = []
    bound.model.register_forward_hook(lambda _, args, __: deltas.append(args[1]))
    meta_loss(bound, strategy(), OBJECTIVE, second_order=False)(batch)
    assert not any(value.requires_grad for value in deltas[-1].values())


def test_the_first_order_meta_gradient_is_the_task_gradient_at_the_adapted_state(batch):
    """First-order MAML by hand: psi_1 = project(psi_0 - lr * g), taken as a constant.

    The step is large enough for the projection to act, so psi_1 includes it.
    """
    lr = 3000.0
    bound = make_bound()
    params = list(bound.model.parameters())
    psi_0 = {
        key: value.requires_grad_() for key, value in bound.init_adapter_state(len(batch)).items()
    }
    with torch.no_grad():
        reference = bound(batch)
    inner = OBJECTIVE(bound, batch, psi_0, reference).sum()
    grads = dict(zip(psi_0, torch.autograd.grad(inner, list(psi_0.values())), strict=True))
    with torch.no_grad():
        stepped = {key: value - lr * grads[key] for key, value in psi_0.items()}
        psi_1, counts = bound.project_adapter_state(stepped)
    assert int(counts["a_projected"]) > 0
    task_loss = bound.task.compute_loss(bound(batch, psi_1), batch)
    expected = torch.autograd.grad(task_loss, params, allow_unused=True)

    bound.reset_generator()  # the same fresh state (V is drawn at random)
    got = meta_gradients(bound, batch, second_order=False, lr=lr)
    for name, g, e in zip(dict(bound.model.named_parameters()), got, expected, strict=True):
        if e is None:
            assert g is None or not g.any(), name
        else:
            torch.testing.assert_close(g, e, msg=name)


def test_second_order_still_differentiates_through_the_inner_step(batch):
    bound = make_bound(scan_backend="chunked")
    first = meta_gradients(bound, batch, second_order=False)
    bound.reset_generator()
    second = meta_gradients(bound, batch, second_order=True)
    assert all(g is None or torch.isfinite(g).all() for g in second)
    differs = [
        f is not None and s is not None and not torch.allclose(f, s)
        for f, s in zip(first, second, strict=True)
    ]
    assert any(differs)


def adapted(bound: BoundModel, batch: Batch, objective, options: InnerLoopOptions, **kwargs):
    steps = torch.full((len(batch),), 2)
    return adapt_batch(bound, batch, objective, options, steps, **kwargs)


@pytest.mark.parametrize(
    "objective, options, expected",
    [
        # The first inner forward is the reference: two steps, two forwards.
        (OBJECTIVE, {}, [True, True]),
        # The entropy filter reads the reference before any step: it runs on its own.
        (OBJECTIVE, {"entropy_filter": 2.0}, [False, True, True]),
        # Masked reconstruction reads its targets before its (masked) forward.
        (MaskedReconstruction(MaskedReconstructionOptions()), {}, [False, True, True]),
        # Consistency never reads the reference: two views per step, nothing else.
        (Consistency(ConsistencyOptions()), {}, [True] * 4),
    ],
)
def test_the_inner_loop_runs_the_unadapted_forward_only_when_it_needs_it(
    batch, objective, options, expected
):
    bound = make_bound()
    bound.model.eval()
    options = InnerLoopOptions(lr=LR, grad_clip=None, **options)
    with torch.no_grad():
        reference = bound(batch)
    given = adapted(bound, batch, objective, options, reference=reference)
    calls = count_forwards(bound)
    bound.reset_generator()  # the same fresh state (V is drawn at random)
    result = adapted(bound, batch, objective, options)
    assert calls == expected
    for key, value in given.state.items():  # the same arithmetic as with a given reference
        assert torch.equal(result.state[key], value), key
    assert torch.equal(result.difficulty, given.difficulty)


def test_a_planned_loop_takes_its_reference_from_the_difficulty_forward(batch):
    """Adaptive strategies measure the difficulty at the fresh state first: that forward
    is the reference, so the loop runs none of its own (there were four forwards)."""
    bound = make_bound()
    bound.model.eval()
    options = InnerLoopOptions(lr=LR, grad_clip=None)
    calls = count_forwards(bound)
    result = adapt_batch(
        bound, batch, OBJECTIVE, options, lambda d: torch.full(d.shape, 2, dtype=torch.long)
    )
    assert calls == [True, True, True]  # the difficulty, then two steps
    assert result.steps.tolist() == [2] * len(batch)
