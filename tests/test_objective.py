"""The open training step: batches with a target, codes as (indices, values), custom objectives."""

from __future__ import annotations

import pytest
import torch

from monosemantic.sae.base import SAE, Codes, LossContext, squared_error
from monosemantic.sae.registry import config, create
from monosemantic.training.objective import Batch, reconstruction
from monosemantic.training.trainer import TrainConfig, Trainer


def test_sparse_and_dense_codes_agree() -> None:
    g = torch.Generator().manual_seed(0)
    values = torch.rand(6, 3, generator=g)
    values[0, 1] = 0.0  # kept by top-k but ReLU'd to zero: not a firing
    indices = torch.stack([torch.randperm(10, generator=g)[:3] for _ in range(6)])
    sparse = Codes(values, indices, d_sae=10)
    dense = Codes(sparse.dense())
    assert dense.values.shape == (6, 10)
    assert torch.equal(sparse.active(), dense.active())
    assert sparse.active()[0] == 2
    assert torch.equal(sparse.fire_counts(), dense.fire_counts())
    assert int(sparse.fire_counts().sum()) == 6 * 3 - 1
    with pytest.raises(ValueError, match="need d_sae"):
        Codes(values, indices)


@pytest.mark.parametrize("architecture", ["topk", "standard", "gated"])
def test_reconstruction_matches_the_target_when_given(architecture: str) -> None:
    torch.manual_seed(0)
    own = {"k": 4} if architecture == "topk" else {"sparsity_coefficient": 0.1}
    sae = create(config(architecture, d_in=8, d_sae=32, **own))
    x, target = torch.randn(16, 8), torch.randn(16, 8)
    terms, out = reconstruction(sae, Batch(x, target=target), LossContext())
    mse = (out.x_hat - target).pow(2).sum(-1).mean()
    torch.testing.assert_close(terms["mse"], mse)
    penalties = sae.penalties(out, target, LossContext())
    total = mse + sum(weight * value for weight, value in penalties.values())
    torch.testing.assert_close(terms["loss"], total)
    plain, _ = reconstruction(sae, Batch(x), LossContext())
    assert not torch.allclose(plain["mse"], terms["mse"])


def test_the_trainer_minimises_the_objective_it_is_given() -> None:
    """An objective asking for 2x instead of x: the trained SAE doubles its inputs."""

    def doubled(sae: SAE, batch: Batch, ctx: LossContext):
        terms, out = reconstruction(sae, Batch(batch.x, target=2 * batch.x), ctx)
        return {**terms, "calls": torch.tensor(1.0)}, out

    g = torch.Generator().manual_seed(0)
    atoms = torch.nn.functional.normalize(torch.randn(16, 8, generator=g), dim=1)
    rows = (torch.rand(4096, 16, generator=g) * (torch.rand(4096, 16, generator=g) < 0.2)) @ atoms
    torch.manual_seed(0)
    sae = create(config("standard", d_in=8, d_sae=32))
    cfg = TrainConfig(steps=300, batch_size=256, lr=1e-2, progress=False, normalize_inputs=False)
    trainer = Trainer([sae], cfg, objective=doubled)
    logs = trainer.fit(rows.split(256) * 30)
    assert logs[0]["calls"] == 1.0
    with torch.no_grad():
        error = (sae(rows) - 2 * rows).pow(2).sum() / (2 * rows).pow(2).sum()
    assert error < 0.05


@pytest.mark.parametrize("shape", [(7, 5), (2, 3, 5)])
def test_squared_error_is_each_rows_sum_of_squares_averaged(shape) -> None:
    """The fused form against the definition: value and both gradients, float64."""
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(shape, generator=g, dtype=torch.float64, requires_grad=True) for _ in "ab")
    fused = squared_error(a, b)
    spelled = (a - b).pow(2).sum(-1).mean()
    torch.testing.assert_close(fused, spelled, rtol=1e-12, atol=0)
    expected = torch.autograd.grad(spelled, (a, b))
    for x, y in zip(torch.autograd.grad(fused, (a, b)), expected, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-12, atol=0)
