"""The MNIST description-length study (Ayonrinde, Pearce, Sharkey 2024, arXiv 2410.11179, the
MNIST experiment): TopK SAEs on MNIST pixels over widths and k; at each width the SAE with the
shortest description among those within an FVU tolerance; description length against width; and
the decoder images of the MDL-optimal width beside the narrowest and the widest.

The paper finds a U-shape: narrow dictionaries need many active fragments, very wide ones
memorise whole digits with few but expensive-to-name latents, and the optimum learns strokes.
``monosemantic mdl-mnist`` runs it; docs/mdl.md shows what it found here.
"""

from __future__ import annotations

import io
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure

from monosemantic.config import check
from monosemantic.data.images import load_images
from monosemantic.data.store import MatrixSource
from monosemantic.evaluation.metrics import evaluate_reconstruction
from monosemantic.files import atomic_write_bytes, write_json
from monosemantic.sae.base import SAE
from monosemantic.sae.io import save_sae
from monosemantic.sae.registry import config, create
from monosemantic.training.trainer import TrainConfig, train


@dataclass
class MnistMDLConfig:
    """The study's grid and training budget."""

    widths: list[int] = field(default_factory=lambda: [16, 32, 64, 128, 256, 512, 1024])
    """Dictionary sizes d_sae."""
    k: list[int] = field(default_factory=lambda: [2, 4, 8, 16, 32])
    """Active latents per image; every k up to the width is trained at every width."""
    tolerance: float = 0.25
    """The largest FVU (on the validation images) an SAE may have to be a candidate."""
    steps: int = 1000
    """Training steps of each SAE (batches of ``batch_size`` training images)."""
    batch_size: int = 512
    seed: int = 0

    def __post_init__(self) -> None:
        check(all(w > 0 for w in self.widths), "widths", self.widths, "positive integers")
        check(all(0 < k <= max(self.widths) for k in self.k), "k", self.k, "in 1..max(widths)")
        check(self.tolerance > 0, "tolerance", self.tolerance, "a positive FVU")


Chosen = tuple[SAE, dict[str, Any], torch.Tensor]
"""An SAE, its validation metrics, and its latents from the most to the least used."""


def train_width(
    width: int, cfg: MnistMDLConfig, train_x: torch.Tensor, val_x: torch.Tensor
) -> list[Chosen]:
    """Every k at one width, trained together on the same batches, with validation metrics."""
    torch.manual_seed(cfg.seed)
    ks = [k for k in cfg.k if k <= width]
    saes = [create(config("topk", d_in=train_x.shape[1], d_sae=width, k=k)) for k in ks]
    source = MatrixSource(train_x)
    training = TrainConfig(
        steps=cfg.steps,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        lr=2e-3,
        lr_warmup_steps=cfg.steps // 20,
        dead_after_tokens=20 * cfg.batch_size,
        progress=False,
    )
    train(saes, lambda s: source.batches(cfg.batch_size, seed=cfg.seed, start_step=s), training)
    results = []
    for sae in saes:
        metrics = evaluate_reconstruction(sae, val_x.split(4096))
        metrics.pop("log10_density")
        usage = metrics.pop("density").argsort(descending=True)
        results.append((sae, metrics, usage))
    return results


def run_mnist_mdl(cfg: MnistMDLConfig, out: Path) -> dict[str, Any]:
    """Run the study into ``out``: ``mdl.json`` (every SAE's metrics, the choice per width and
    overall), ``dl_vs_width.png``, ``decoders.png`` and the chosen SAEs under ``saes/``."""
    start = time.perf_counter()
    images = load_images("mnist")
    rows = []
    chosen: dict[int, Chosen] = {}
    for width in cfg.widths:
        for sae, metrics, usage in train_width(width, cfg, images.train_x, images.val_x):
            rows.append({"width": width, "k": sae.cfg.to_dict()["k"], **metrics})
            best = chosen.get(width)
            length = metrics["description_length"]
            if metrics["fvu"] <= cfg.tolerance and (
                best is None or length < best[1]["description_length"]
            ):
                chosen[width] = (sae, metrics, usage)
    if not chosen:
        raise ValueError(
            f"no SAE reached FVU <= {cfg.tolerance}: raise --tolerance, --k or --steps"
        )
    optimum = min(chosen, key=lambda w: chosen[w][1]["description_length"])
    shown = sorted({min(chosen), optimum, max(chosen)})
    for width in shown:
        save_sae(chosen[width][0], out / "saes" / f"width{width}")
    summary = {
        "config": asdict(cfg),
        "sae": rows,
        "chosen": [
            {"width": w, "k": chosen[w][0].cfg.to_dict()["k"], **chosen[w][1]}
            for w in sorted(chosen)
        ],
        "optimum_width": optimum,
        "seconds": time.perf_counter() - start,
    }
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "mdl.json", summary)
    _save_png(out / "dl_vs_width.png", _plot_dl(summary))
    _save_png(out / "decoders.png", _plot_decoders({w: chosen[w] for w in shown}, optimum))
    return summary


def _save_png(path: Path, fig: Figure) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    atomic_write_bytes(path, buffer.getvalue())


def _plot_dl(summary: dict[str, Any]) -> Figure:
    """Left: description length of the chosen SAE per width. Right: every SAE's FVU and DL."""
    fig = Figure(figsize=(9.5, 3.6), layout="constrained")
    left, right = fig.subplots(1, 2)
    chosen = summary["chosen"]
    widths = [c["width"] for c in chosen]
    left.plot(widths, [c["description_length"] for c in chosen], "o-")
    for c in chosen:
        left.annotate(f"k={c['k']}", (c["width"], c["description_length"]), fontsize=7)
    tolerance = summary["config"]["tolerance"]
    left.set(
        xscale="log",
        xlabel="dictionary width",
        ylabel="bits per image",
        title=f"shortest description with FVU ≤ {tolerance}",
    )
    for width in sorted({r["width"] for r in summary["sae"]}):
        mine = [r for r in summary["sae"] if r["width"] == width]
        fvu = [r["fvu"] for r in mine]
        right.plot(fvu, [r["description_length"] for r in mine], "o-", ms=3, label=f"{width}")
    right.axvline(tolerance, color="grey", ls="--", lw=1)
    right.set(xlabel="FVU (validation)", ylabel="bits per image", title="every SAE (k grows ←)")
    right.legend(title="width", fontsize=7)
    return fig


def _plot_decoders(chosen: dict[int, Chosen], optimum: int) -> Figure:
    """The 16 most used decoder rows of each chosen SAE as 28×28 images, one row per SAE."""
    fig = Figure(figsize=(12, 0.9 * len(chosen) + 0.6), layout="constrained")
    axes = fig.subplots(len(chosen), 16, squeeze=False)
    for row, (width, (sae, _, usage)) in enumerate(sorted(chosen.items())):
        w_dec = sae.W_dec.detach()
        for col, ax in enumerate(axes[row]):
            ax.set_axis_off()
            if col < width:
                img = w_dec[int(usage[col])].reshape(28, 28)
                scale = float(img.abs().max()) or 1.0
                ax.imshow(img.numpy(), cmap="RdBu_r", vmin=-scale, vmax=scale)
        role = "narrowest" if width == min(chosen) else "widest"
        label = "MDL-optimal" if width == optimum else role
        k = sae.cfg.to_dict()["k"]
        axes[row][0].set_title(f"{width} latents, k={k} ({label})", fontsize=8, loc="left")
    return fig
