"""Decompose a bilinear classifier end to end: JSON numbers and PNG plots in one folder.

``decompose_classifier`` is what ``monosemantic bilinear decompose`` runs; ``mnist_report_sections``
gives the demo report its MNIST eigenvector grid and truncation curve.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from monosemantic.bilinear import plots
from monosemantic.bilinear.analysis import (
    adversarial_masks,
    blank_pixels,
    classifier_eigen,
    effective_rank,
    evaluate_masks,
    random_mask,
    truncation_curve,
)
from monosemantic.bilinear.tensor import Eigendecomposition
from monosemantic.config import check
from monosemantic.data.images import ImageSplits, load_images
from monosemantic.files import write_json
from monosemantic.interpret.report import ReportSection
from monosemantic.models.zoo.mnist import (
    BilinearClassifier,
    ClassifierConfig,
    accuracy,
    get_classifier,
)


@dataclass
class DecomposeConfig:
    """What ``decompose_classifier`` computes. Validated at construction."""

    k_max: int = 30
    """Truncation curve for k = 0..k_max eigenvectors per class."""
    strength: float = 0.3
    """Adversarial mask strength (standard deviation of the added pixels) for the headline."""
    sweep: list[float] = field(default_factory=lambda: [0.05, 0.1, 0.15, 0.2, 0.25, 0.3])
    """Strengths for the accuracy-vs-strength curve."""
    sweep_images: int = 2000
    """Test images used for the sweep (the headline uses all of them)."""
    top: int = 10
    """Largest-λ eigenvectors per class that the masks' pseudo-inverse is built from."""
    masks_per_class: int = 3
    """Masks evaluated per class (from its first eigenvectors)."""
    blank_threshold: float = 0.01
    """Masks use only pixels whose training mean is below this."""
    positive: int = 3
    """Eigenvectors with the largest λ shown per class."""
    negative: int = 1
    """Eigenvectors with the most negative λ shown per class."""
    adversarial: bool = True
    """Also build and evaluate adversarial masks (the slowest part)."""
    seed: int = 0

    def __post_init__(self) -> None:
        check(self.k_max >= 1, "k_max", self.k_max, ">= 1")
        check(self.strength >= 0, "strength", self.strength, ">= 0")
        check(all(s >= 0 for s in self.sweep), "sweep", self.sweep, "strengths >= 0")
        check(self.sweep_images > 0, "sweep_images", self.sweep_images, "> 0")
        check(self.top >= 1, "top", self.top, ">= 1")
        check(
            1 <= self.masks_per_class <= self.top,
            "masks_per_class",
            self.masks_per_class,
            f"in 1..top={self.top}",
        )
        check(0 < self.blank_threshold <= 1, "blank_threshold", self.blank_threshold, "in (0, 1]")


@torch.no_grad()
def decompose_classifier(
    model: BilinearClassifier, data: ImageSplits, out: Path, cfg: DecomposeConfig | None = None
) -> dict[str, Any]:
    """Spectra, effective ranks, truncation, eigenvector images and (if ``cfg.adversarial``)
    adversarial masks of ``model`` on ``data``'s test split; writes ``decomposition.json`` and
    PNGs into ``out`` and returns what the JSON holds."""
    cfg = cfg or DecomposeConfig()
    out.mkdir(parents=True, exist_ok=True)
    model = model.float().eval()
    start = time.perf_counter()
    eigen = classifier_eigen(model)
    seconds = time.perf_counter() - start
    folded = eigen.fold(model.embed.weight.detach())
    classes = list(data.classes)
    ks = list(range(cfg.k_max + 1))
    curve = truncation_curve(folded, data.test_x, data.test_y, ks)
    full = accuracy(model, data.test_x, data.test_y)
    ranks = effective_rank(eigen.values)

    plots.plot_eigenvectors(
        folded, classes, data.shape, out / "eigenvectors.png", cfg.positive, cfg.negative
    )
    plots.plot_spectra(eigen.values, classes, out / "spectra.png")
    plots.plot_truncation(ks, {"test": curve}, {"test": full}, out / "truncation.png")
    result = {
        "model": asdict(model.cfg),
        "decompose_config": asdict(cfg),
        "decompose_seconds": seconds,
        "classes": classes,
        "test_accuracy": full,
        "eigenvalues": eigen.values.tolist(),
        "effective_rank": dict(zip(classes, ranks.tolist(), strict=True)),
        "effective_rank_mean": float(ranks.mean()),
        "truncation": {"k": ks, "test_accuracy": curve},
    }
    if cfg.adversarial:
        result.update(_adversarial(model, eigen, folded, data, out, cfg))
    write_json(out / "decomposition.json", result)
    return result


def _adversarial(
    model: BilinearClassifier,
    eigen: Eigendecomposition,
    folded: Eigendecomposition,
    data: ImageSplits,
    out: Path,
    cfg: DecomposeConfig,
) -> dict[str, Any]:
    """Eigenvector masks vs random masks: headline, strength sweep, an example figure."""
    x, y, classes = data.test_x, data.test_y, data.classes
    pixels = blank_pixels(data.train_x, cfg.blank_threshold)
    embed = model.embed.weight.detach()
    masks = adversarial_masks(eigen, embed, pixels, data.val_x, data.val_y, top=cfg.top)
    chosen = masks[:, : cfg.masks_per_class].reshape(-1, masks.shape[-1])
    targets = torch.arange(len(classes)).repeat_interleave(cfg.masks_per_class)
    headline = evaluate_masks(model, chosen, targets, x, y, cfg.strength, cfg.seed)
    n = cfg.sweep_images
    sweep = [evaluate_masks(model, chosen, targets, x[:n], y[:n], s, cfg.seed) for s in cfg.sweep]
    plots.plot_adversarial_sweep(
        cfg.sweep, [r.adversarial for r in sweep], [r.random for r in sweep], out / "sweep.png"
    )

    example = int((y != 0).nonzero()[0])  # an image of another class than the first mask's
    noise = random_mask(chosen[0], torch.Generator().manual_seed(cfg.seed))
    attacked, randomised = x[example] + cfg.strength * chosen[0], x[example] + cfg.strength * noise
    preds = model(torch.stack([attacked, randomised])).argmax(-1).tolist()
    titles = [
        f"eigenvector ({classes[0]})",
        "mask",
        f"{classes[int(y[example])]} + mask → {classes[preds[0]]}",
        f"random mask → {classes[preds[1]]}",
    ]
    plots.plot_adversarial(
        folded.vectors[0, 0],
        chosen[0],
        attacked,
        randomised,
        data.shape,
        titles,
        out / "adversarial.png",
    )
    return {
        "adversarial": asdict(headline),
        "adversarial_sweep": [asdict(r) for r in sweep],
        "blank_pixels": int(pixels.sum()),
    }


def mnist_report_sections(out_dir: Path) -> list[ReportSection]:
    """Report sections for the demo: the MNIST eigenvector grid and the truncation curve.

    Uses the shipped d=512 classifier (trained and cached on first use if it is missing).
    """
    cfg = ClassifierConfig()
    data = load_images(cfg.dataset)
    model, _ = get_classifier(cfg, data)
    res = decompose_classifier(model, data, out_dir, DecomposeConfig(adversarial=False))
    acc = res["truncation"]["test_accuracy"]
    table = [
        {"eigenvectors per class (k)": k, "test accuracy": acc[k]} for k in (1, 2, 5, 10, 20, 30)
    ]
    table.append(
        {"eigenvectors per class (k)": "all (model)", "test accuracy": res["test_accuracy"]}
    )
    intro = (
        f"A bilinear MNIST classifier ({cfg.name}) computes each logit exactly as a quadratic "
        "form of the pixels, so its features are the eigenvectors of one matrix per class, read "
        "from the weights alone (Pearce et al. 2024)."
    )
    return [
        ReportSection(
            title="Bilinear MNIST: eigenvectors from weights",
            table={
                "model": cfg.name,
                "test accuracy": res["test_accuracy"],
                "mean effective rank": res["effective_rank_mean"],
                "decomposition (s)": res["decompose_seconds"],
            },
            images=[out_dir / "eigenvectors.png"],
            text=intro + "\n\nColumns: classes. Each image is an eigenvector v in pixel space; "
            "the class logit adds λ (v · x)², so the top rows (λ > 0) are evidence for the class "
            "and the last row (λ < 0) evidence against it.",
        ),
        ReportSection(
            title="Bilinear MNIST: truncation",
            table=table,
            images=[out_dir / "truncation.png"],
            text="Logits rebuilt from only the top-k eigenvectors (by |λ|) of each class.",
        ),
    ]
