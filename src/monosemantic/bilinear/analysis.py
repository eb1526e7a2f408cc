"""Analyses of a decomposed bilinear classifier (Pearce et al. 2024, arXiv 2410.08417, §3–4).

- effective rank of each class's spectrum, (‖λ‖₁ / ‖λ‖₂)²;
- truncation: logits from the top-k eigenpairs by |λ| per class, accuracy for each k;
- adversarial masks: pixel patterns built from a class's top positive eigenvectors, restricted to
  pixels that are nearly always blank, against random masks of the same norm on the same pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from monosemantic.bilinear.tensor import Eigendecomposition, decompose
from monosemantic.models.zoo.mnist import BilinearClassifier


def effective_rank(values: torch.Tensor) -> torch.Tensor:
    """(‖λ‖₁ / ‖λ‖₂)² over the last axis: values [..., r] -> [...]; r for a flat spectrum."""
    return (values.abs().sum(-1) / values.norm(dim=-1)).square()


def classifier_eigen(model: BilinearClassifier) -> Eigendecomposition:
    """Eigenpairs of Q for each class logit, in the embedding space: vectors [classes, d, d]."""
    eye = torch.eye(model.cfg.n_classes, dtype=model.head.weight.dtype)
    return decompose(model.bilinear, eye, head=model.head.weight)


@torch.no_grad()
def truncation_curve(
    eigen: Eigendecomposition, x: torch.Tensor, y: torch.Tensor, ks: Sequence[int]
) -> list[float]:
    """Accuracy with logits_c = Σ_{i≤k} λ_{c,i} (v_{c,i}·x)², top-k by |λ| per class, per k.

    x: [batch, d] in the eigenvectors' space (pixels for folded ones); y: [batch]. A k beyond
    the rank keeps every eigenpair, i.e. it is the full model.
    """
    rank = eigen.values.shape[1]
    top = eigen.top(min(max(ks), rank))  # sorted by |λ|: a cumulative sum gives every k at once
    partial = (top.project(x).square() * top.values).cumsum(-1)  # [batch, classes, k_max]
    partial = torch.cat([torch.zeros_like(partial[..., :1]), partial], dim=-1)
    return [float((partial[..., min(k, rank)].argmax(-1) == y).float().mean()) for k in ks]


def blank_pixels(train_x: torch.Tensor, threshold: float = 0.01) -> torch.Tensor:
    """[d_pix] bool: pixels whose mean over the training images is below ``threshold``."""
    return train_x.mean(0) < threshold


@torch.no_grad()
def adversarial_masks(
    eigen: Eigendecomposition,
    embed: torch.Tensor,
    pixels: torch.Tensor,
    sign_x: torch.Tensor,
    sign_y: torch.Tensor,
    top: int = 10,
) -> torch.Tensor:
    """Masks [classes, top, d_pix] with unit standard deviation over the pixels.

    Decoders are each class's ``top`` largest-λ eigenvectors (embedding space, ``eigen`` unfolded);
    encoders are the pseudo-inverse of all of them stacked, so encoder (c, i) reads eigenvector
    (c, i) and no other chosen one. Each encoder goes to pixel space through embed [d, d_pix],
    is zeroed outside ``pixels`` [d_pix] bool, and gets the sign that raises its class's logit
    on average over images of other classes (sign_x [n, d_pix], sign_y [n]) through the cross term
    2 λ (v·W_e x)(v·W_e m).
    """
    n_classes, _, d = eigen.vectors.shape
    decoders = eigen.vectors[:, :top]  # [c, top, d]
    encoders = torch.linalg.pinv(decoders.reshape(-1, d)).T.reshape(n_classes, top, d)
    masks = (encoders @ embed) * pixels  # [c, top, d_pix]
    read = torch.einsum("ctd,dp,ctp->ct", decoders, embed, masks)  # v · W_e m
    h = torch.einsum("bd,ctd->bct", sign_x @ embed.T, decoders)  # v · W_e x
    others = (sign_y[:, None] != torch.arange(n_classes)).to(h.dtype)  # [n, c]
    sign = torch.einsum("bct,bc->ct", h, others).mul(read).sign()
    masks = masks * sign[..., None]
    return masks / masks.std(dim=-1, keepdim=True).clamp_min(1e-12)


@dataclass
class AdversarialResult:
    """Accuracies (fractions) averaged over masks at one strength."""

    strength: float
    clean: float
    adversarial: float
    random: float
    to_target_adversarial: float
    """Fraction of images of other classes that a mask turns into its own class."""
    to_target_random: float


def random_mask(mask: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Gaussian noise on the support of mask [d_pix], scaled to the mask's norm."""
    noise = torch.randn(mask.shape, generator=gen, dtype=mask.dtype) * (mask != 0)
    return noise * mask.norm() / noise.norm().clamp_min(1e-12)


@torch.no_grad()
def evaluate_masks(
    model: torch.nn.Module,
    masks: torch.Tensor,
    targets: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    strength: float,
    seed: int = 0,
) -> AdversarialResult:
    """Add ``strength · mask`` to every image and measure accuracy, for each mask [m, d_pix].

    The random baseline for a mask is Gaussian noise on the same pixels (its support), scaled
    to the same norm. targets: [m] the class each mask was built for; x: [n, d_pix]; y: [n].
    """
    gen = torch.Generator().manual_seed(seed)
    clean = float((model(x).argmax(-1) == y).float().mean())
    sums = torch.zeros(4, dtype=torch.float64)
    for mask, target in zip(masks, targets.tolist(), strict=True):
        noise = random_mask(mask, gen)
        other = y != target
        for j, m in enumerate((mask, noise)):
            pred = model(x + strength * m).argmax(-1)
            sums[j] += (pred == y).float().mean()
            sums[2 + j] += (pred[other] == target).float().mean()
    acc_adv, acc_rand, to_adv, to_rand = (sums / len(masks)).tolist()
    return AdversarialResult(strength, clean, acc_adv, acc_rand, to_adv, to_rand)
