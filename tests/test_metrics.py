"""Reconstruction metrics against one-shot formulas, hand-made codes and brute force."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from monosemantic.config import ConfigError
from monosemantic.evaluation.metrics import (
    ReconstructionStats,
    density_histogram,
    evaluate_reconstruction,
    log10_density,
)
from monosemantic.sae.registry import config, create


def one_shot(x: torch.Tensor, x_hat: torch.Tensor, f: torch.Tensor) -> dict[str, float]:
    """The metrics straight from their definitions, over all inputs at once."""
    x, x_hat = x.double(), x_hat.double()
    return {
        "mse": (x - x_hat).pow(2).sum(-1).mean().item(),
        "fvu": ((x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum()).item(),
        "l0": (f != 0).sum(-1).double().mean().item(),
        "l2_ratio": (x_hat.norm(dim=-1) / x.norm(dim=-1)).mean().item(),
        "cosine_similarity": torch.nn.functional.cosine_similarity(x, x_hat, dim=-1).mean().item(),
    }


def test_streaming_equals_one_shot() -> None:
    gen = torch.Generator().manual_seed(0)
    # A large common offset: naive Σx² − n·x̄² would lose digits; the merge must not.
    x = torch.randn(300, 16, generator=gen) + 1000.0
    x_hat = x + 0.3 * torch.randn(300, 16, generator=gen)
    f = torch.relu(torch.randn(300, 40, generator=gen) - 1.0)
    stats = ReconstructionStats(40)
    for start, size in ((0, 7), (7, 100), (107, 1), (108, 192)):
        sl = slice(start, start + size)
        stats.update(x[sl], x_hat[sl], f[sl])
    got = stats.result()
    assert got["n_inputs"] == 300
    for name, value in one_shot(x, x_hat, f).items():
        assert got[name] == pytest.approx(value, rel=1e-9), name


def test_fvu_of_mean_is_one_and_of_identity_zero() -> None:
    x = torch.randn(64, 8, generator=torch.Generator().manual_seed(1)) * 3 + 2
    f = torch.ones(64, 4)
    mean = ReconstructionStats(4)
    for chunk in x.split(10):
        mean.update(chunk, x.mean(0).expand_as(chunk), f[: len(chunk)])
    assert mean.result()["fvu"] == pytest.approx(1.0, abs=1e-12)
    same = ReconstructionStats(4)
    same.update(x, x, f)
    got = same.result()
    assert got["fvu"] == 0.0
    assert got["mse"] == 0.0
    assert got["l2_ratio"] == pytest.approx(1.0, abs=1e-12)
    assert got["cosine_similarity"] == pytest.approx(1.0, abs=1e-12)


def test_l0_density_dead_dense_on_hand_made_codes() -> None:
    # 5 inputs, 4 latents: latent 0 fires on all, 1 on one input, 2 never, 3 on two.
    f = torch.tensor(
        [
            [1.0, 0.0, 0.0, 2.0],
            [0.5, 0.0, 0.0, 0.0],
            [3.0, 4.0, 0.0, 0.0],
            [1.0, 0.0, 0.0, 1.0],
            [2.0, 0.0, 0.0, 0.0],
        ]
    )
    x = torch.randn(5, 3)
    stats = ReconstructionStats(4, dense_threshold=0.3)
    stats.update(x[:2], x[:2], f[:2])
    stats.update(x[2:], x[2:], f[2:])
    got = stats.result()
    assert got["l0"] == pytest.approx((2 + 1 + 2 + 2 + 1) / 5)
    assert torch.equal(got["density"], torch.tensor([1.0, 0.2, 0.0, 0.4], dtype=torch.float64))
    assert got["dead_fraction"] == 0.25  # latent 2
    assert got["dense_fraction"] == 0.5  # latents 0 and 3 fire on more than 30%
    expected = torch.tensor([0.0, math.log10(0.2), -10.0, math.log10(0.4)], dtype=torch.float64)
    assert torch.allclose(got["log10_density"], expected)
    assert got["l0"] == pytest.approx(got["density"].sum().item())


def test_bad_inputs_are_rejected() -> None:
    stats = ReconstructionStats(4)
    with pytest.raises(ValueError, match="no inputs seen"):
        stats.result()
    with pytest.raises(ValueError, match="codes must be"):
        stats.update(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 5))
    with pytest.raises(ValueError, match="x and x_hat"):
        stats.update(torch.zeros(2, 3), torch.zeros(2, 4), torch.zeros(2, 4))
    stats.update(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="d_in changed"):
        stats.update(torch.zeros(2, 5), torch.zeros(2, 5), torch.zeros(2, 4))
    with pytest.raises(ConfigError, match="dense_threshold"):
        ReconstructionStats(4, dense_threshold=1.5)


def test_evaluate_reconstruction_matches_manual_forward() -> None:
    torch.manual_seed(0)
    sae = create(config("topk", d_in=12, d_sae=48, k=4))
    sae.train()
    batches = [torch.randn(2, 5, 12) for _ in range(4)]  # [batch, ctx, d_in], flattened inside
    got = evaluate_reconstruction(sae, iter(batches), max_batches=3)
    assert sae.training  # mode restored
    x = torch.cat([b.reshape(-1, 12) for b in batches[:3]])
    with torch.no_grad():
        out = sae.forward_full(x)
    for name, value in one_shot(x, out.x_hat, out.codes.dense()).items():
        assert got[name] == pytest.approx(value, rel=1e-6), name
    assert got["l0"] == pytest.approx(4.0)
    assert got["n_inputs"] == 30


def test_log10_density_floor() -> None:
    got = log10_density(torch.tensor([0.0, 1.0, 1e-3]))
    assert torch.allclose(got, torch.tensor([-10.0, 0.0, -3.0], dtype=torch.float64))


def test_density_histogram_counts_and_png(tmp_path) -> None:
    values = torch.tensor([-1.0, -1.0, -2.0, -3.0, -10.0, -10.0])
    data = density_histogram(values, tmp_path / "density.png", bins=2)
    # Live values span [-3, -1]: bins [-3, -2) and [-2, -1]; -10 is the dead floor.
    assert data["edges"] == [-3.0, -2.0, -1.0]
    assert data["counts"] == [1, 3]
    assert data["dead"] == 2
    assert data["alive"] == 4
    assert (tmp_path / "density.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert list(tmp_path.iterdir()) == [tmp_path / "density.png"]  # no temporary left behind


def test_density_histogram_sums_to_d_sae() -> None:
    gen = torch.Generator().manual_seed(3)
    f = torch.relu(torch.randn(500, 256, generator=gen) - 2.5)
    stats = ReconstructionStats(256)
    stats.update(torch.randn(500, 4), torch.randn(500, 4), f)
    result = stats.result()
    data = density_histogram(result["log10_density"], None, bins=20)
    assert len(data["counts"]) == 20
    assert sum(data["counts"]) + data["dead"] == 256
    assert data["dead"] == int((result["density"] == 0).sum())
    assert data["dead"] > 0  # the threshold makes some latents dead: the split is exercised
    counts, _ = np.histogram(result["log10_density"][result["density"] > 0].numpy(), bins=20)
    assert data["counts"] == counts.tolist()


def test_density_histogram_all_dead(tmp_path) -> None:
    data = density_histogram(torch.full((8,), -10.0), tmp_path / "dead.png", bins=5)
    assert data["dead"] == 8
    assert sum(data["counts"]) == 0
    assert data["edges"][0] == -10.0 and data["edges"][-1] == 0.0


def test_inputs_that_are_zero_do_not_enter_ratios() -> None:
    """‖x̂‖ / ‖x‖ and cos(x, x̂) are undefined at x = 0: they average over the other inputs."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(10, 6, generator=g, dtype=torch.float64)
    x[[2, 7]] = 0.0
    x_hat = x + 0.1 * torch.randn(10, 6, generator=g, dtype=torch.float64)
    stats = ReconstructionStats(4)
    stats.update(x, x_hat, torch.ones(10, 4))
    got = stats.result()
    keep = x.norm(dim=-1) > 0
    expected = one_shot(x[keep], x_hat[keep], torch.ones(8, 4))
    assert got["l2_ratio"] == pytest.approx(expected["l2_ratio"], rel=1e-12)
    assert got["cosine_similarity"] == pytest.approx(expected["cosine_similarity"], rel=1e-12)
