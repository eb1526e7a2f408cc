"""Signum and Muon against their update rules, and runs with each resumed exactly."""

from __future__ import annotations

import pytest
import torch
from interrupted import interrupted_and_resumed

from monosemantic.config import ConfigError
from monosemantic.data.store import MatrixSource
from monosemantic.sae.registry import config, create
from monosemantic.training.optimizers import Muon, Signum, newton_schulz
from monosemantic.training.trainer import TrainConfig


def grads(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_signum_steps_by_the_sign_of_the_averaged_gradient() -> None:
    p = torch.nn.Parameter(torch.zeros(5, 3, dtype=torch.float64))
    opt = Signum([p], lr=0.1, momentum=0.9)
    m = torch.zeros_like(p)
    expected = p.detach().clone()
    for seed in range(4):
        g = grads(seed, (5, 3))
        p.grad = g.clone()
        opt.step()
        m = 0.9 * m + 0.1 * g
        expected -= 0.1 * m.sign()
        torch.testing.assert_close(p.detach(), expected, rtol=0, atol=1e-15)


def test_newton_schulz_orthogonalises() -> None:
    g = grads(0, (12, 7))
    o = newton_schulz(g)
    u, _, vh = torch.linalg.svd(g, full_matrices=False)
    singular = torch.linalg.svdvals(o)
    assert bool(((singular > 0.65) & (singular < 1.25)).all()), singular
    # the same singular directions as U Vᵀ: o = U diag(s') Vᵀ
    inner = u.T @ o.double() @ vh.T
    off_diagonal = inner - torch.diag(torch.diagonal(inner))
    assert float(off_diagonal.abs().max()) < 1e-3


def test_muon_updates_matrices_by_orthogonalised_momentum_and_vectors_by_adam() -> None:
    w = torch.nn.Parameter(grads(10, (6, 4)))
    b = torch.nn.Parameter(grads(11, (4,)))
    opt = Muon([w, b], lr=0.02, momentum=0.95, weight_decay=0.1)
    b_ref = torch.nn.Parameter(b.detach().clone())
    adam = torch.optim.Adam([b_ref], lr=0.02, betas=(0.9, 0.999), eps=1e-8)
    buf = torch.zeros_like(w)
    expected = w.detach().clone()
    for seed in range(3):
        gw, gb = grads(seed, (6, 4)), grads(seed + 100, (4,))
        w.grad, b.grad, b_ref.grad = gw.clone(), gb.clone(), gb.clone()
        opt.step()
        adam.step()
        buf = 0.95 * buf + 0.05 * gw
        nesterov = 0.05 * gw + 0.95 * buf
        expected = expected * (1 - 0.02 * 0.1) - 0.02 * 0.2 * 6**0.5 * newton_schulz(nesterov)
        torch.testing.assert_close(w.detach(), expected, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(b.detach(), b_ref.detach(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("optimizer", ["signum", "muon"])
def test_resumed_run_matches_uninterrupted(tmp_path, optimizer: str) -> None:
    source = MatrixSource(torch.randn(2048, 8, generator=torch.Generator().manual_seed(0)))

    def batches(start: int):
        return source.batches(64, seed=0, start_step=start)

    def make():
        torch.manual_seed(0)
        return [create(config("topk", d_in=8, d_sae=32, k=4))]

    cfg = TrainConfig(
        steps=30, batch_size=64, optimizer=optimizer, progress=False, checkpoint_every=10
    )
    full, resumed = interrupted_and_resumed(make, batches, cfg, tmp_path, stop_at=15)
    for name, tensor in full[0].state_dict().items():
        torch.testing.assert_close(resumed[0].state_dict()[name], tensor, rtol=0, atol=1e-6)


def test_unknown_optimizer_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"optimizer='sgd' is invalid: expected one of"):
        TrainConfig(optimizer="sgd")
