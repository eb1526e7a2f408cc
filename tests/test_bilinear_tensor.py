"""Bilinear layers and their exact tensor decomposition (Pearce et al. 2024)."""

from __future__ import annotations

import pytest
import torch

from monosemantic.bilinear.tensor import (
    bilinear_tensor,
    contract,
    decompose,
    eigendecompose,
    interaction_matrices,
    layer_weights,
    symmetrise,
)
from monosemantic.config import ConfigError
from monosemantic.models.layers import GLU, Bilinear, BilinearMLP, GatedMLP


def _mlp(bias: bool, seed: int = 0) -> BilinearMLP:
    torch.manual_seed(seed)
    return BilinearMLP(6, 11, bias=bias).double()


def test_bilinear_layer_is_product_of_two_halves() -> None:
    torch.manual_seed(0)
    layer = Bilinear(5, 3, bias=True).double()
    x = torch.randn(4, 5, dtype=torch.float64)
    x1 = torch.cat([x, torch.ones(4, 1, dtype=torch.float64)], 1)
    expected = (x1 @ layer.W.T) * (x1 @ layer.V.T)
    torch.testing.assert_close(layer(x), expected)
    assert layer.proj.weight.shape == (6, 6)


@pytest.mark.parametrize("gate", ["relu", "gelu", "silu"])
def test_glu_gates_one_side(gate: str) -> None:
    torch.manual_seed(0)
    layer = GLU(4, 3, gate=gate)
    x = torch.randn(7, 4)
    act = {"relu": torch.relu, "gelu": torch.nn.functional.gelu, "silu": torch.nn.functional.silu}
    torch.testing.assert_close(layer(x), act[gate](x @ layer.W.T) * (x @ layer.V.T))


def test_layer_errors() -> None:
    with pytest.raises(ConfigError, match="gate='tanh' is invalid"):
        GLU(4, 3, gate="tanh")
    with pytest.raises(ValueError, match="d_in=4, got shape"):
        Bilinear(4, 3)(torch.randn(2, 5))
    with pytest.raises(ValueError, match="not bilinear"):
        layer_weights(GatedMLP(4, 3, gate="relu"))


@pytest.mark.parametrize("bias", [False, True])
def test_exactness_output_equals_eigen_sum(bias: bool) -> None:
    """uᵀ y = Σ_i λ_i (v_i · x)² for random weights, inputs and output directions."""
    mlp = _mlp(bias)
    x = torch.randn(20, 6, dtype=torch.float64)
    u = torch.randn(3, 6, dtype=torch.float64)
    expected = mlp(x) @ u.T  # [20, 3]
    dec = decompose(mlp, u)
    x_in = torch.cat([x, torch.ones(20, 1, dtype=torch.float64)], 1) if bias else x
    got = dec.output(x_in)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())
    # eigenvectors are orthonormal and sorted by eigenvalue, largest first
    eye = torch.eye(dec.vectors.shape[1], dtype=torch.float64).expand(3, -1, -1)
    torch.testing.assert_close(dec.vectors @ dec.vectors.transpose(1, 2), eye)
    assert (dec.values.diff(dim=1) <= 0).all()


def test_tensor_matches_brute_force_and_is_symmetric() -> None:
    w, v, p = layer_weights(_mlp(False))
    b = bilinear_tensor(w, v, p)
    brute = torch.zeros_like(b)
    for a in range(p.shape[0]):
        for h in range(w.shape[0]):
            brute[a] += p[a, h] * torch.outer(w[h], v[h])
    torch.testing.assert_close(b, 0.5 * (brute + brute.transpose(1, 2)))
    torch.testing.assert_close(b, b.transpose(1, 2))
    u = torch.randn(4, p.shape[0], dtype=torch.float64)
    torch.testing.assert_close(contract(b, u), interaction_matrices(w, v, p, u))
    # without P, one slice per hidden unit: y_h = xᵀ B_h x
    x = torch.randn(6, dtype=torch.float64)
    per_unit = bilinear_tensor(w, v)
    torch.testing.assert_close(torch.einsum("i,hij,j->h", x, per_unit, x), (w @ x) * (v @ x))


def test_antisymmetric_part_changes_nothing() -> None:
    w, v, p = layer_weights(_mlp(False))
    b = bilinear_tensor(w, v, p)
    a = torch.randn_like(b)
    anti = a - a.transpose(1, 2)
    x = torch.randn(9, 6, dtype=torch.float64)
    plain = torch.einsum("bi,aij,bj->ba", x, b, x)
    torch.testing.assert_close(torch.einsum("bi,aij,bj->ba", x, b + anti, x), plain)
    torch.testing.assert_close(symmetrise(b + anti), b)
    u = torch.randn(2, p.shape[0], dtype=torch.float64)
    q = eigendecompose(symmetrise(contract(b + anti, u)))
    torch.testing.assert_close(q.values, eigendecompose(contract(b, u)).values)


def test_folding_through_embedding_reproduces_logits_from_pixels() -> None:
    torch.manual_seed(1)
    embed = torch.randn(8, 30, dtype=torch.float64)  # [d, d_pix]
    layer = Bilinear(8, 8).double()
    head = torch.randn(4, 8, dtype=torch.float64)
    pixels = torch.rand(12, 30, dtype=torch.float64)
    logits = layer(pixels @ embed.T) @ head.T
    folded = decompose(layer, torch.eye(4, dtype=torch.float64), head=head).fold(embed)
    assert folded.vectors.shape == (4, 8, 30)
    torch.testing.assert_close(folded.output(pixels), logits)


def test_truncation_top_k() -> None:
    dec = decompose(_mlp(False), torch.randn(3, 6, dtype=torch.float64))
    x = torch.randn(5, 6, dtype=torch.float64)
    torch.testing.assert_close(dec.top(6).output(x), dec.output(x))
    top2 = dec.top(2)
    for n in range(3):
        keep = dec.values[n].abs().argsort(descending=True)[:2]
        torch.testing.assert_close(top2.values[n], dec.values[n, keep])
        torch.testing.assert_close(top2.vectors[n], dec.vectors[n, keep])
    torch.testing.assert_close(dec.top(0).output(x), torch.zeros(5, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"k=7 must be in 0\.\.6"):
        dec.top(7)


def test_shape_errors_name_the_fix() -> None:
    w, v, p = layer_weights(_mlp(False))
    with pytest.raises(ValueError, match=r"output directions u must be \[n, 6\]"):
        interaction_matrices(w, v, p, torch.randn(2, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match="P must be"):
        bilinear_tensor(w, v, p.T)
    dec = eigendecompose(torch.eye(3))
    with pytest.raises(ValueError, match="fold them through the embedding"):
        dec.output(torch.randn(2, 4))
