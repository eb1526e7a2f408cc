"""Streamed per-latent statistics against brute force over the whole set at once."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monosemantic.interpret.feature_stats import FeatureStats


def sparse_codes(n: int, d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    values = torch.rand(n, d, generator=g).pow(3) * 50
    return values * (torch.rand(n, d, generator=g) < 0.1)


def test_streamed_statistics_equal_brute_force() -> None:
    batches = [sparse_codes(200, 12, seed) for seed in range(3)]
    stats = FeatureStats(12, n_samples=5)
    for i, codes in enumerate(batches):
        stats.update(codes, torch.arange(200 * i, 200 * (i + 1)))
    result = stats.result()
    every = torch.cat(batches).double()
    fired = every > 0
    torch.testing.assert_close(result.density, fired.double().mean(0))
    torch.testing.assert_close(result.max, every.max(0).values)
    torch.testing.assert_close(result.mean, every.sum(0) / fired.sum(0))
    edges = result.edges.numpy()
    for latent in range(12):
        firing = every[:, latent][fired[:, latent]].numpy()
        clipped = np.clip(firing, edges[0], edges[-1])
        expected, _ = np.histogram(clipped, bins=edges)
        assert result.histogram[latent].tolist() == expected.tolist(), latent
        drawn = result.sample_where[latent] >= 0
        assert int(drawn.sum()) == min(5, len(firing))
        for value, where in zip(
            result.sample_values[latent][drawn], result.sample_where[latent][drawn], strict=True
        ):
            assert every[where, latent].item() == pytest.approx(value.item())
        assert torch.all(result.sample_values[latent][drawn].diff() >= 0), "sorted by value"


def test_samples_cover_the_whole_set_not_the_top() -> None:
    """A latent firing everywhere with value = position: a uniform sample of 200 of 4000 has a
    mean position near 2000 (the top 200 would be ≥ 3800)."""
    stats = FeatureStats(1, n_samples=200, seed=3)
    for start in range(0, 4000, 500):
        where = torch.arange(start, start + 500)
        stats.update((where + 1).double()[:, None], where)
    positions = stats.result().sample_where[0].double()
    assert abs(positions.mean().item() - 2000) < 3 * 4000 / (12 * 200) ** 0.5
    assert len(set(positions.tolist())) == 200, "drawn without replacement"


def test_no_input_is_an_error() -> None:
    with pytest.raises(ValueError, match="no inputs seen"):
        FeatureStats(4).result()
