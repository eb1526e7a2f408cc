"""Plots of a decomposed bilinear classifier, written as small PNGs (matplotlib)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from PIL import Image

from monosemantic.bilinear.tensor import Eigendecomposition
from monosemantic.files import atomic_write

DPI = 80


def _save(fig: plt.Figure, path: Path) -> Path:
    """Write ``fig`` as a PNG with a 64-colour palette (a third of the size, looks the same)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    buf.seek(0)
    image = Image.open(buf).convert("RGB").quantize(colors=64, method=Image.Quantize.MEDIANCUT)
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG", optimize=True))
    return path


def _image(ax: plt.Axes, img: torch.Tensor, shape: tuple[int, int], scale: float) -> None:
    image = img.reshape(shape).float().numpy()
    ax.imshow(image, cmap="RdBu_r", vmin=-scale, vmax=scale, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def plot_eigenvectors(
    folded: Eigendecomposition,
    classes: Sequence[str],
    shape: tuple[int, int],
    path: Path,
    positive: int = 3,
    negative: int = 1,
) -> Path:
    """One column per class: its ``positive`` largest-λ eigenvectors, then its ``negative`` most
    negative ones, in input space (red positive, blue negative), titled with λ."""
    rows = list(range(positive)) + [-(i + 1) for i in range(negative)]
    fig, axes = plt.subplots(
        len(rows), len(classes), figsize=(0.95 * len(classes), 1.05 * len(rows)), squeeze=False
    )
    for c, name in enumerate(classes):
        axes[0, c].set_title(f"{name}\nλ={float(folded.values[c, rows[0]]):.2g}", fontsize=8)
        for j, i in enumerate(rows):
            vec = folded.vectors[c, i]
            _image(axes[j, c], vec, shape, float(vec.abs().max()))
            if j:
                axes[j, c].set_title(f"λ={float(folded.values[c, i]):.2g}", fontsize=7, pad=2)
    axes[0, 0].set_ylabel("top λ", fontsize=8)
    if negative:
        axes[positive, 0].set_ylabel("most negative", fontsize=8)
    return _save(fig, path)


def plot_spectra(values: torch.Tensor, classes: Sequence[str], path: Path, show: int = 40) -> Path:
    """Eigenvalues per class: the ``show`` largest and ``show`` most negative, by rank."""
    show = min(show, values.shape[1] // 2)
    fig, ax = plt.subplots(figsize=(5, 3))
    for c, name in enumerate(classes):
        lam = values[c].float()
        top = lam[:show].numpy()
        bottom = lam[-show:].numpy()
        line = ax.plot(range(show), top, lw=1, label=name)[0]
        ax.plot(range(show, 2 * show), bottom, lw=1, color=line.get_color())
    ax.axhline(0, color="black", lw=0.5)
    ax.axvline(show - 0.5, color="grey", lw=0.5, ls=":")
    ax.set_xlabel(f"eigenvalue rank (first {show} | last {show})")
    ax.set_ylabel("λ")
    ax.legend(fontsize=6, ncol=2)
    return _save(fig, path)


def plot_truncation(
    ks: Sequence[int], curves: dict[str, Sequence[float]], full: dict[str, float], path: Path
) -> Path:
    """Accuracy against the number k of eigenvectors kept per class; dashed: the full model."""
    fig, ax = plt.subplots(figsize=(5, 3))
    for label, acc in curves.items():
        line = ax.plot(ks, [100 * a for a in acc], marker=".", lw=1, label=f"{label}, top k")[0]
        if label in full:
            color = line.get_color()
            ax.axhline(100 * full[label], color=color, ls="--", lw=0.8, label=f"{label}, full")
    ax.set_xlabel("eigenvectors kept per class (k)")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_adversarial(
    eigenvector: torch.Tensor,
    mask: torch.Tensor,
    attacked: torch.Tensor,
    randomised: torch.Tensor,
    shape: tuple[int, int],
    titles: Sequence[str],
    path: Path,
) -> Path:
    """Four panels: an eigenvector, the mask built from it, an image with the mask, and the same
    image with a random mask of equal norm on the same pixels."""
    fig, axes = plt.subplots(1, 4, figsize=(6, 1.9))
    images = (eigenvector, mask, attacked, randomised)
    for ax, img, title in zip(axes, images, titles, strict=True):
        _image(ax, img, shape, float(img.abs().max()))
        ax.set_title(title, fontsize=7)
    return _save(fig, path)


def plot_adversarial_sweep(
    strengths: Sequence[float], adversarial: Sequence[float], random: Sequence[float], path: Path
) -> Path:
    """Accuracy against mask strength, eigenvector masks vs random masks."""
    fig, ax = plt.subplots(figsize=(4, 2.8))
    ax.plot(strengths, [100 * a for a in adversarial], marker=".", label="eigenvector masks")
    ax.plot(strengths, [100 * a for a in random], marker=".", label="random masks")
    ax.set_xlabel("mask strength (pixel std)")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=7)
    return _save(fig, path)
