"""Description length against hand computation and against a brute-force entropy."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch

from monosemantic.config import ConfigError
from monosemantic.evaluation.description_length import DescriptionLength
from monosemantic.sae.base import Codes


def test_a_hand_computable_code() -> None:
    # 4 inputs, 2 latents, Δ = 0.5. Latent 0 levels: 2, 2, 0, 0 -> H = 1 bit.
    # Latent 1 levels: 1, 2, 3, 0 (0.2 rounds to 0) -> four equiprobable levels, H = 2 bits.
    f = torch.tensor([[1.0, 0.5], [1.1, 1.0], [0.0, 1.5], [0.0, 0.2]])
    length = DescriptionLength(2, bin_width=0.5, value_bits=8)
    length.update(Codes(f[:2]))
    length.update(Codes(f[2:]))
    got = length.result()
    assert got["description_length"] == pytest.approx(3.0)
    l0 = 6 / 4  # non-zero codes per input (0.2 is non-zero before quantisation)
    assert got["description_length_bound"] == pytest.approx(l0 * (8 + math.log2(2)))


def test_sparse_codes_match_dense_and_brute_force() -> None:
    g = torch.Generator().manual_seed(0)
    values = torch.rand(50, 4, generator=g) * 2
    values[::7, 0] = 0.0
    indices = torch.stack([torch.randperm(16, generator=g)[:4] for _ in range(50)])
    sparse = Codes(values, indices, d_sae=16)
    results = []
    for codes in (sparse, Codes(sparse.dense())):
        length = DescriptionLength(16, bin_width=0.25)
        for part in range(0, 50, 20):  # streamed in uneven batches
            rows = slice(part, part + 20)
            if codes.indices is None:
                length.update(Codes(codes.values[rows]))
            else:
                length.update(Codes(codes.values[rows], codes.indices[rows], 16))
        results.append(length.result())
    assert results[0] == pytest.approx(results[1])
    levels = torch.round(sparse.dense().double() / 0.25).long()
    brute = 0.0
    for latent in range(16):
        counts = Counter(levels[:, latent].tolist())
        brute -= sum(c / 50 * math.log2(c / 50) for c in counts.values())
    assert results[0]["description_length"] == pytest.approx(brute, rel=1e-12)


def test_bad_inputs() -> None:
    with pytest.raises(ConfigError, match="bin_width=0"):
        DescriptionLength(4, bin_width=0)
    with pytest.raises(ValueError, match="no inputs seen"):
        DescriptionLength(4).result()
    with pytest.raises(ValueError, match="codes have 5 latents, expected 4"):
        DescriptionLength(4).update(Codes(torch.zeros(2, 5)))
