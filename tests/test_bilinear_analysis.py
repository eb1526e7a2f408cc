"""Effective rank, truncation and adversarial masks on small random bilinear classifiers."""

from __future__ import annotations

import pytest
import torch

from monosemantic.bilinear.analysis import (
    adversarial_masks,
    blank_pixels,
    classifier_eigen,
    effective_rank,
    evaluate_masks,
    random_mask,
    truncation_curve,
)
from monosemantic.models.zoo.mnist import BilinearClassifier, ClassifierConfig, build_classifier


def _model(d_input: int = 16, d: int = 8, n_classes: int = 4) -> BilinearClassifier:
    cfg = ClassifierConfig(d_hidden=d, d_input=d_input, n_classes=n_classes, seed=3)
    return build_classifier(cfg).double()


def test_effective_rank_closed_forms() -> None:
    assert effective_rank(torch.ones(7)).item() == pytest.approx(7.0)
    assert effective_rank(torch.tensor([0.0, -2.5, 0.0])).item() == pytest.approx(1.0)
    # geometric spectrum λ_i = ±r^i: ‖λ‖₁ = (1-rⁿ)/(1-r), ‖λ‖₂² = (1-r²ⁿ)/(1-r²)
    r, n = 0.7, 12
    lam = torch.tensor([(-1) ** i * r**i for i in range(n)], dtype=torch.float64)
    l1, l2sq = (1 - r**n) / (1 - r), (1 - r ** (2 * n)) / (1 - r**2)
    assert effective_rank(lam).item() == pytest.approx(l1**2 / l2sq, rel=1e-12)
    assert effective_rank(torch.stack([lam, torch.ones(n, dtype=torch.float64)])).shape == (2,)


def test_truncation_curve_matches_brute_force_and_full_model() -> None:
    model = _model()
    pixels = torch.rand(200, 16, dtype=torch.float64)
    y = model(pixels).argmax(-1)
    y[::3] = (y[::3] + 1) % 4  # so the full model is not trivially 100% right
    folded = classifier_eigen(model).fold(model.embed.weight.detach())
    ks = [0, 1, 3, 8]
    curve = truncation_curve(folded, pixels, y, ks)
    full = float((model(pixels).argmax(-1) == y).double().mean())
    assert curve[-1] == pytest.approx(full)
    # k beyond the rank (8) keeps every eigenpair: the full model again
    assert truncation_curve(folded, pixels, y, [30]) == pytest.approx([full])
    for k, acc in zip(ks, curve, strict=True):
        logits = torch.zeros(200, 4, dtype=torch.float64)
        for c in range(4):
            keep = folded.values[c].abs().argsort(descending=True)[:k]
            proj = pixels @ folded.vectors[c, keep].T
            logits[:, c] = (proj.square() * folded.values[c, keep]).sum(-1)
        assert acc == pytest.approx(float((logits.argmax(-1) == y).double().mean()))


def test_blank_pixels() -> None:
    x = torch.zeros(10, 4)
    x[:, 1] = 1.0
    x[0, 2] = 0.05  # mean 0.005: still blank
    assert blank_pixels(x).tolist() == [True, False, True, True]


def _masks(pixels: torch.Tensor, embed: torch.Tensor | None = None) -> tuple:
    model = _model()
    eigen = classifier_eigen(model)
    embed = model.embed.weight.detach() if embed is None else embed
    x = torch.rand(50, embed.shape[1], dtype=torch.float64)
    y = torch.arange(50) % 4
    return eigen, embed, x, y, adversarial_masks(eigen, embed, pixels, x, y, top=2)


def test_adversarial_masks_stay_on_chosen_pixels() -> None:
    pixels = torch.zeros(16, dtype=torch.bool)
    pixels[[0, 3, 5, 6, 11, 15]] = True
    _, _, _, _, masks = _masks(pixels)
    assert masks.shape == (4, 2, 16)
    assert (masks[..., ~pixels] == 0).all()
    assert (masks[..., pixels] != 0).all()
    torch.testing.assert_close(masks.std(-1), torch.ones(4, 2, dtype=torch.float64))


def test_adversarial_encoders_read_only_their_eigenvector() -> None:
    """With an identity embedding and all pixels allowed, encoder (c,i) · decoder (c',j) ∝ δ."""
    eye = torch.eye(8, dtype=torch.float64)
    eigen, _, x, y, masks = _masks(torch.ones(8, dtype=torch.bool), embed=eye)
    overlap = torch.einsum("ctd,kjd->ctkj", masks, eigen.vectors[:, :2]).reshape(8, 8)
    diag = overlap.diagonal()
    torch.testing.assert_close(overlap, torch.diag(diag), atol=1e-9, rtol=0)
    # the sign makes the cross term raise the class logit over images of other classes
    h = torch.einsum("bd,ctd->bct", x, eigen.vectors[:, :2])
    for c in range(4):
        assert (h[y != c, c] * diag.reshape(4, 2)[c]).sum(0).min() > 0


class _Identity(torch.nn.Module):
    """Logits = the first 4 inputs, so accuracies can be computed by hand."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :4]


def test_evaluate_masks_against_hand_computation() -> None:
    x = torch.rand(40, 6, dtype=torch.float64)
    y = torch.arange(40) % 4
    mask = torch.tensor([[0.0, 3.0, 0.0, 0.0, 1.0, -1.0]], dtype=torch.float64)
    res = evaluate_masks(_Identity(), mask, torch.tensor([1]), x, y, strength=0.5)
    pred = (x + 0.5 * mask).argmax(-1)
    assert res.clean == pytest.approx(float((x[:, :4].argmax(-1) == y).double().mean()))
    assert res.adversarial == pytest.approx(float((pred == y).double().mean()))
    assert res.to_target_adversarial == pytest.approx(float((pred[y != 1] == 1).double().mean()))
    zero = evaluate_masks(_Identity(), mask, torch.tensor([1]), x, y, strength=0.0)
    assert zero.adversarial == zero.random == zero.clean


def test_random_mask_has_same_support_and_norm() -> None:
    mask = torch.tensor([0.0, 2.0, 0.0, -1.0, 0.5], dtype=torch.float64)
    noise = random_mask(mask, torch.Generator().manual_seed(0))
    assert (noise[mask == 0] == 0).all() and (noise[mask != 0] != 0).all()
    assert noise.norm().item() == pytest.approx(mask.norm().item())
