"""A bilinear LM's MLP in a basis of SAE features: exact identities, spectra, pairs, end to end."""

from __future__ import annotations

import json

import pytest
import torch

from monosemantic.bilinear.lm_layer import bilinear_layer
from monosemantic.bilinear.sae_basis import (
    FeatureConfig,
    affine_terms,
    feature_eigenvalues,
    feature_spectrum,
    in_feature_basis,
    output_interactions,
    run_lm_features,
    top2_strength,
    top_pairs,
)
from monosemantic.config import ConfigError
from monosemantic.models.layers import BilinearMLP
from monosemantic.models.zoo.tokenizer import train_tokenizer
from monosemantic.models.zoo.transformer import LMConfig, build_lm, shakespeare_corpus

D, H, N = 5, 7, 3


@pytest.fixture
def mlp() -> BilinearMLP:
    torch.manual_seed(0)
    return BilinearMLP(D, H).double()


def test_q_matches_the_defining_sum_and_the_mlp(mlp):
    u = torch.randn(N, D, dtype=torch.float64)
    q = output_interactions(mlp, u)
    w, v = mlp.glu.W.detach(), mlp.glu.V.detach()
    p = mlp.P.detach()
    for n in range(N):
        brute = sum(torch.outer(w[m], v[m]) * p[o, m] * u[n, o] for m in range(H) for o in range(D))
        torch.testing.assert_close(q[n], 0.5 * (brute + brute.T))
    x = torch.randn(10, D, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(mlp(x) @ u.T, torch.einsum("bi,nij,bj->bn", x, q, x))


def test_codes_reproduce_the_output_exactly(mlp):
    """x = Dᵀc + b  ⇒  uᵀ MLP(x) = cᵀQ'c + ℓᵀc + κ; with D square and invertible, any x has
    codes c = D⁻ᵀ(x − b), so the feature-basis form reproduces the MLP on every input."""
    u = torch.randn(N, D, dtype=torch.float64)
    decoder = torch.randn(D, D, dtype=torch.float64)  # square, invertible with probability 1
    b_dec = torch.randn(D, dtype=torch.float64)
    q = output_interactions(mlp, u)
    q_prime = in_feature_basis(q, decoder)
    torch.testing.assert_close(q_prime, decoder @ q @ decoder.T)
    linear, const = affine_terms(q, decoder, b_dec)
    x = torch.randn(20, D, dtype=torch.float64)
    c = torch.linalg.solve(decoder.T, (x - b_dec).T).T
    torch.testing.assert_close(c @ decoder + b_dec, x)
    predicted = torch.einsum("bf,nfg,bg->bn", c, q_prime, c) + c @ linear.T + const
    with torch.no_grad():
        torch.testing.assert_close(predicted, mlp(x) @ u.T)


def test_spectrum_without_forming_q_prime(mlp):
    f = 9  # overcomplete: Q' is 9×9 of rank ≤ 5
    u = torch.randn(N, D, dtype=torch.float64)
    decoder = torch.randn(f, D, dtype=torch.float64)
    q = output_interactions(mlp, u)
    q_prime = in_feature_basis(q, decoder)
    spec = feature_spectrum(q, decoder)
    assert spec.values.shape == (N, D) and spec.vectors.shape == (N, D, f)
    torch.testing.assert_close(feature_eigenvalues(q, decoder), spec.values)
    full = torch.linalg.eigvalsh(q_prime)  # [N, f] ascending, f − D of them ≈ 0
    nonzero = full.gather(1, full.abs().argsort(dim=1, descending=True)[:, :D])
    torch.testing.assert_close(
        spec.values.double(), nonzero.sort(dim=1, descending=True).values, rtol=1e-5, atol=1e-5
    )
    vec = spec.vectors.double()
    torch.testing.assert_close(
        torch.einsum("nfg,nrg->nrf", q_prime, vec),
        spec.values.double()[..., None] * vec,
        rtol=1e-4,
        atol=1e-4,
    )
    torch.testing.assert_close(vec @ vec.transpose(1, 2), torch.eye(D).expand(N, D, D).double())
    with pytest.raises(ValueError, match="do not span"):
        feature_spectrum(q, torch.randn(f, 2, dtype=torch.float64) @ torch.randn(2, D).double())


def test_top2_and_top_pairs_against_brute_force():
    assert top2_strength(torch.tensor([[3.0, -5.0, 1.0], [0.5, 0.0, -0.25]])).tolist() == [
        8.0,
        0.75,
    ]
    torch.manual_seed(1)
    a = torch.randn(6, 6)
    q = a + a.T
    alive = torch.tensor([True, True, False, True, True, True])
    got = top_pairs(q, 4, alive)
    brute = sorted(
        ((i, j, float(q[i, j])) for i in range(6) for j in range(i, 6) if alive[i] and alive[j]),
        key=lambda t: -abs(t[2]),
    )[:4]
    assert got == brute


def test_errors():
    model = build_lm(LMConfig(mlp="gelu", d_model=16, n_heads=2, vocab_size=300))
    with pytest.raises(ValueError, match="not bilinear"):
        bilinear_layer(model, 0)
    with pytest.raises(ValueError, match="layer=1 is invalid: the model has 1 blocks"):
        bilinear_layer(model, 1)
    with pytest.raises(ConfigError, match=r"k=40 .*d_sae=32"):
        FeatureConfig(d_sae=32, k=40)


def test_token_directions_are_the_direct_logit_path():
    model = build_lm(LMConfig(mlp="bilinear", d_model=16, n_heads=2, vocab_size=300))
    with torch.no_grad():
        model.norm.weight.uniform_(0.5, 2.0)
        h = torch.randn(4, 16)
        logits = model.unembed(model.norm(h))
    rms = (h.pow(2).mean(-1, keepdim=True) + torch.finfo(h.dtype).eps).sqrt()
    torch.testing.assert_close(logits, h @ bilinear_layer(model, 0).unembed.T / rms)


@pytest.mark.slow
@pytest.mark.parametrize("outputs", ["sae", "tokens"])
def test_end_to_end_on_a_tiny_model(tmp_path, outputs):
    from test_zoo_transformer import tiny_texts

    cfg = LMConfig(d_model=8, n_heads=2, context_size=16, vocab_size=300, val_documents=1)
    texts = tiny_texts()
    model = build_lm(cfg)
    tokenizer = train_tokenizer(texts[:-1], 300)
    corpus = shakespeare_corpus(cfg, texts=texts, tokenizer=tokenizer)
    feats = FeatureConfig(
        d_sae=24, k=3, sae_steps=30, sae_batch_size=64, harvest_windows=50, top_outputs=4,
        top_pairs=3, outputs=outputs,
    )  # fmt: skip
    result = run_lm_features(model, tokenizer, corpus.train, corpus.val, tmp_path / "out", feats,
                             name="tiny")  # fmt: skip
    saved = json.loads((tmp_path / "out" / "features.json").read_text())
    assert saved["top_outputs"] == result["top_outputs"]
    assert (tmp_path / "out" / "spectrum.png").stat().st_size > 1000
    assert (tmp_path / "out" / "sae_in" / "cfg.json").exists()
    assert (tmp_path / "out" / "sae_out").exists() == (outputs == "sae")
    assert result["exactness"] < 1e-4
    rows = result["top_outputs"]
    assert 1 <= len(rows) <= 4
    assert [r["top2"] for r in rows] == sorted((r["top2"] for r in rows), reverse=True)
    assert all(len(r["pairs"]) == 3 and "tokens_i" in r["pairs"][0] for r in rows)
    if outputs == "tokens":  # output "features" are token ids, labelled by their text
        assert all(r["tokens"].strip() in " ".join(texts) for r in rows)
