"""Streamed per-latent statistics and kept examples against brute force over the whole set."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monosemantic.interpret.examples import ExampleKeeper
from monosemantic.interpret.feature_stats import FeatureStats


def sparse_codes(n: int, d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    values = torch.rand(n, d, generator=g).pow(3) * 50
    return values * (torch.rand(n, d, generator=g) < 0.1)


def test_streamed_statistics_equal_brute_force() -> None:
    batches = [sparse_codes(200, 12, seed) for seed in range(3)]
    stats = FeatureStats(12)
    for codes in batches:
        stats.update(codes)
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


def windows_of_codes(n: int, ctx: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """codes [n, ctx, d] with distinct values, and token ids [n, ctx]."""
    codes = sparse_codes(n * ctx, d, seed).reshape(n, ctx, d)
    codes = codes + torch.arange(codes.numel()).reshape(codes.shape) * 1e-6 * (codes > 0)
    ids = torch.randint(0, 1000, (n, ctx), generator=torch.Generator().manual_seed(seed))
    return codes, ids


def test_top_examples_equal_brute_force_with_their_contexts() -> None:
    """Streamed in batches of 3 windows: each latent's top 6 = the 6 largest of all its codes
    (BOS column excluded), strongest first, each with the ids and its activations 4 before and
    2 after the position, cut at the window's edges."""
    codes, ids = windows_of_codes(10, 16, 7, seed=1)
    exclude = torch.zeros(10, 16, dtype=torch.bool)
    exclude[:, 0] = True
    keeper = ExampleKeeper(7, 6, top=True, left=4, right=2)
    for start in range(0, 10, 3):
        end = start + 3
        keeper.update(codes[start:end], ids[start:end], start, exclude[start:end])
    top = keeper.result()
    masked = codes.masked_fill(exclude[..., None], 0).reshape(-1, 7)
    for latent in range(7):
        expected = masked[:, latent].topk(6)
        assert top.values[latent].tolist() == pytest.approx(expected.values.tolist())
        assert top.where[latent].tolist() == expected.indices.tolist()
        for slot, flat in enumerate(expected.indices.tolist()):
            window, position = divmod(flat, 16)
            for offset in range(-4, 3):
                column = offset + top.left
                if 0 <= position + offset < 16:
                    token = ids[window, position + offset].item()
                    value = codes[window, position + offset, latent].item()
                else:
                    token, value = -1, 0.0
                assert top.context_ids[latent, slot, column].item() == token
                assert top.context_values[latent, slot, column].item() == pytest.approx(value)


def test_a_latent_firing_rarely_leaves_empty_slots() -> None:
    codes = torch.zeros(2, 8, 2)
    codes[1, 3, 0] = 2.0
    keeper = ExampleKeeper(2, 3, top=True, left=1, right=1)
    keeper.update(codes, torch.arange(16).reshape(2, 8), 0)
    top = keeper.result()
    assert top.where.tolist() == [[11, -1, -1], [-1, -1, -1]]
    assert top.count().tolist() == [1, 0]
    assert top.context_ids[0, 0].tolist() == [10, 11, 12]
    assert top.context_ids[0, 1].tolist() == [-1, -1, -1]


def test_samples_cover_the_whole_set_not_the_top() -> None:
    """A latent firing everywhere with value = position: a uniform sample of 200 of 4000 has a
    mean position near 2000 (the top 200 would be ≥ 3800), drawn without replacement, in
    increasing value, each value the code at its position."""
    keeper = ExampleKeeper(1, 200, top=False, left=0, right=0, seed=3)
    for start in range(0, 40, 5):
        where = torch.arange(start * 100, (start + 5) * 100).reshape(5, 100)
        keeper.update((where + 1).float()[..., None], where, start)
    samples = keeper.result()
    positions = samples.where[0].double()
    assert abs(positions.mean().item() - 2000) < 3 * 4000 / (12 * 200) ** 0.5
    assert len(set(positions.tolist())) == 200, "drawn without replacement"
    assert torch.all(samples.values[0].diff() > 0), "in increasing value"
    assert samples.values[0].tolist() == (positions + 1).tolist()
    assert samples.context_ids[0, :, 0].tolist() == positions.long().tolist()


def test_no_input_is_an_error() -> None:
    with pytest.raises(ValueError, match="no inputs seen"):
        FeatureStats(4).result()
