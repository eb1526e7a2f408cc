"""Matching pursuit against its definition and against SAELens's implementation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from monosemantic.sae.io import load_sae, save_sae
from monosemantic.sae.matching_pursuit import MatchingPursuitSAE, matching_pursuit
from monosemantic.sae.registry import config, create

D_IN, D_SAE, K, N = 12, 40, 5, 32


def unit_rows(seed: int = 0) -> torch.Tensor:
    w = torch.randn(D_SAE, D_IN, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return w / w.norm(dim=1, keepdim=True)


def centred(seed: int = 1) -> torch.Tensor:
    return torch.randn(N, D_IN, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_each_step_leaves_the_residual_orthogonal_to_its_atom() -> None:
    w, r0 = unit_rows(), centred()
    previous_codes = torch.zeros(N, D_SAE, dtype=torch.float64)
    for steps in range(1, K + 1):
        codes, residual = matching_pursuit(r0, w, steps, 0.0, stop_on_duplicate_support=False)
        changed = (codes - previous_codes).abs().argmax(-1)
        moved = (codes - previous_codes).abs().amax(-1) > 0
        dots = (residual * w[changed]).sum(-1)
        torch.testing.assert_close(dots[moved], torch.zeros_like(dots[moved]), atol=1e-12, rtol=0)
        torch.testing.assert_close(residual, r0 - codes @ w, atol=1e-12, rtol=0)
        previous_codes = codes
    assert bool((codes >= 0).all()) and int((codes != 0).sum(-1).max()) <= K


def test_a_step_picks_the_most_aligned_atom_with_its_inner_product() -> None:
    w, r0 = unit_rows(), centred()
    codes, _ = matching_pursuit(r0, w, 1, 0.0, stop_on_duplicate_support=False)
    scores = r0 @ w.T
    best = scores.argmax(-1)
    expected = torch.zeros_like(codes).scatter(
        1, best[:, None], scores.max(-1, keepdim=True).values
    )
    torch.testing.assert_close(codes, expected.relu(), rtol=0, atol=1e-12)


def test_stopping_rules() -> None:
    w = unit_rows()
    atom = w[3:4].repeat(N, 1) * 2.0  # one atom explains each row exactly
    codes, residual = matching_pursuit(
        atom, w, K, residual_threshold=1e-6, stop_on_duplicate_support=False
    )
    assert bool(((codes != 0).sum(-1) == 1).all()), "stops once the residual is below threshold"
    torch.testing.assert_close(codes[:, 3], torch.full((N,), 2.0, dtype=torch.float64))
    assert float(residual.norm(dim=-1).max()) < 1e-6


def test_saelens_encodes_our_folder_equally_and_we_load_theirs(tmp_path: Path) -> None:
    sae_lens = pytest.importorskip("sae_lens")
    torch.manual_seed(0)
    ours = create(config("matching_pursuit", d_in=D_IN, d_sae=D_SAE, k=K, residual_threshold=0.05))
    with torch.no_grad():
        ours.b_dec.copy_(torch.randn(D_IN) * 0.1)
    save_sae(ours, tmp_path / "ours")
    theirs = sae_lens.SAE.load_from_disk(tmp_path / "ours")
    assert type(theirs).__name__ == "MatchingPursuitSAE"
    x = torch.randn(N, D_IN)
    with torch.no_grad():
        torch.testing.assert_close(theirs.encode(x), ours.encode(x), atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(theirs(x), ours(x), atol=1e-6, rtol=1e-6)
    theirs.save_model(tmp_path / "theirs")
    back = load_sae(tmp_path / "theirs")
    assert isinstance(back, MatchingPursuitSAE)
    assert (back.cfg.k, back.cfg.residual_threshold) == (K, 0.05)
    with torch.no_grad():
        torch.testing.assert_close(back.encode(x), ours.encode(x), atol=1e-6, rtol=1e-6)


def test_folding_an_input_scale_divides_the_codes() -> None:
    torch.manual_seed(0)
    sae = create(config("matching_pursuit", d_in=D_IN, d_sae=D_SAE, k=K, dtype="float64"))
    x = centred()
    with torch.no_grad():
        sae.b_dec.copy_(torch.randn(D_IN, dtype=torch.float64))
        scaled_codes, scaled_out = sae.encode(3.0 * x), sae(3.0 * x)
        sae.fold_input_scale(3.0)
        torch.testing.assert_close(sae.encode(x), scaled_codes / 3.0, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(sae(x), scaled_out / 3.0, rtol=1e-12, atol=1e-12)
