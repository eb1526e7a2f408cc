"""p-annealing against its definition: the p schedule, the Lp penalty by hand, the coefficient
rescaling at each change of p, and a resumed run equal to an uninterrupted one."""

from __future__ import annotations

import pytest
import torch
from interrupted import interrupted_and_resumed

from monosemantic.data.store import MatrixSource
from monosemantic.sae.base import Codes, LossContext, SAEOutput
from monosemantic.sae.p_anneal import RECENT, lp_penalty
from monosemantic.sae.registry import config, create
from monosemantic.training.trainer import TrainConfig


def test_the_schedule_falls_from_p_start_to_p_end() -> None:
    cfg = config("p_anneal", d_in=4, d_sae=8, p_start=1.0, p_end=0.4, p_updates=4)
    at, values = cfg.schedule(100)
    assert at == [50, 66, 83, 99] and values == pytest.approx([1.0, 0.8, 0.6, 0.4])
    assert cfg.p_at(0, 100) == (1.0, 1.0)
    assert cfg.p_at(50, 100) == pytest.approx((1.0, 0.8))
    assert cfg.p_at(70, 100) == pytest.approx((0.8, 0.6))
    assert cfg.p_at(99, 100) == pytest.approx((0.4, 0.4)), "the last step trains at p_end"


def test_lp_penalty_by_hand() -> None:
    codes = torch.tensor([[0.0, 4.0, 9.0], [1.0, 0.0, 0.0]], dtype=torch.float64)
    assert lp_penalty(codes, 0.5).item() == pytest.approx(((2 + 3) ** 2 + 1) / 2)
    assert lp_penalty(codes, 1.0).item() == pytest.approx((13 + 1) / 2)


def test_the_coefficient_is_rescaled_to_keep_the_penalty_continuous() -> None:
    sae = create(config("p_anneal", d_in=4, d_sae=6, p_updates=3, anneal_start=0.5))
    steps, g = 40, torch.Generator().manual_seed(0)
    at, _ = sae.cfg.schedule(steps)
    history, expected = [], 1.0
    for step in range(steps):
        codes = torch.rand(8, 6, generator=g, dtype=torch.float64) * (step + 1)
        out = SAEOutput(x_hat=torch.zeros(8, 4), codes=Codes(codes), pre=codes)
        p, following = sae.cfg.p_at(step, steps)
        history.append((lp_penalty(codes, p).item(), lp_penalty(codes, following).item()))
        sae.update_state(out, LossContext(step=step, steps=steps))
        if step + 1 in at[1:]:
            recent = torch.tensor(history[-RECENT:], dtype=torch.float64)
            expected *= float(recent[:, 0].mean() / recent[:, 1].mean())
        assert float(sae.scale) == pytest.approx(expected, rel=1e-12), step
    assert expected != 1.0


def test_resumed_p_anneal_run_matches_uninterrupted(tmp_path) -> None:
    data = torch.randn(2048, 8, generator=torch.Generator().manual_seed(0))
    source = MatrixSource(data)

    def batches(start: int):
        return source.batches(64, seed=0, start_step=start)

    def make():
        torch.manual_seed(0)
        return [create(config("p_anneal", d_in=8, d_sae=32, sparsity_coefficient=0.05))]

    cfg = TrainConfig(steps=30, batch_size=64, lr=3e-3, progress=False, checkpoint_every=20)
    full, resumed = interrupted_and_resumed(make, batches, cfg, tmp_path, stop_at=25)
    assert float(resumed[0].scale) == float(full[0].scale) != 1.0
    for name, tensor in full[0].state_dict().items():
        torch.testing.assert_close(resumed[0].state_dict()[name], tensor, rtol=0, atol=1e-6)
