"""How well an SAE reconstructs its inputs, and how often each latent fires.

Over all inputs x [n, d_in] with reconstructions x̂ and codes f [n, d_sae] (definitions as in
Bricken et al. 2023, "Towards Monosemanticity", and Gao et al. 2024, arXiv 2406.04093); for a
transcoder, x below is its target (the activation it reconstructs):

    mse             (1/n) Σ_n Σ_d (x − x̂)²
    fvu             Σ‖x − x̂‖² / Σ‖x − x̄‖²,  x̄ the mean over all n inputs
    l0              mean number of non-zero codes per input
    density_i       fraction of inputs on which latent i is non-zero
    dead_fraction   fraction of latents that never fired (density 0)
    dense_fraction  fraction of latents with density > dense_threshold
    l2_ratio        mean ‖x̂‖ / ‖x‖ over inputs x ≠ 0 (below 1: the codes shrink the
                    reconstruction)
    cosine_similarity  mean cos(x, x̂) over inputs x ≠ 0

A latent "fires" when its code is non-zero, so l0 = Σ_i density_i exactly.
"""

from __future__ import annotations

import io
import itertools
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from monosemantic.config import check
from monosemantic.evaluation.description_length import BIN_WIDTH, DescriptionLength
from monosemantic.files import atomic_write_bytes
from monosemantic.sae.base import SAE, Codes

DENSITY_FLOOR = 1e-10
"""log10 of a dead latent's density is reported as log10(DENSITY_FLOOR) = −10."""
LOG10_FLOOR = math.log10(DENSITY_FLOOR)


def log10_density(density: torch.Tensor, floor: float = DENSITY_FLOOR) -> torch.Tensor:
    """[d_sae] fractions in [0, 1] -> log10, with dead latents (0) at log10(floor)."""
    return density.double().clamp_min(floor).log10()


class ReconstructionStats:
    """Streaming accumulator of the metrics above: ``update`` per batch, then ``result``.

    Sums are kept in float64, and the spread about the mean is merged batch by batch (Chan et
    al.'s parallel variance), so the streaming FVU equals the one-shot formula even when the
    activations have a large mean (e.g. a residual stream's outlier dimensions).
    """

    def __init__(self, d_sae: int, *, dense_threshold: float = 0.1) -> None:
        check(d_sae > 0, "d_sae", d_sae, "a positive integer")
        check(
            0 < dense_threshold < 1,
            "dense_threshold",
            dense_threshold,
            "a fraction of inputs strictly between 0 and 1",
        )
        self.d_sae = d_sae
        self.dense_threshold = dense_threshold
        self.n = 0
        self._sums: dict[str, torch.Tensor] = {}
        self._mean = torch.zeros(0, dtype=torch.float64)  # [d_in] mean of x so far
        self._fires = torch.zeros(d_sae, dtype=torch.int64)  # [d_sae] inputs each latent fired on

    @torch.no_grad()
    def update(self, x: torch.Tensor, x_hat: torch.Tensor, codes: Codes | torch.Tensor) -> None:
        """Add a batch. x, x_hat: [batch, d_in]; codes: ``Codes`` or dense [batch, d_sae]."""
        if isinstance(codes, torch.Tensor):
            codes = Codes(codes)
        if x.ndim != 2 or x_hat.shape != x.shape:
            raise ValueError(
                f"x and x_hat must both be [batch, d_in]; got {tuple(x.shape)} "
                f"and {tuple(x_hat.shape)}"
            )
        if codes.values.shape[0] != x.shape[0] or codes.d_sae != self.d_sae:
            raise ValueError(
                f"codes must be for [batch, d_sae] = {(x.shape[0], self.d_sae)}, got "
                f"{codes.values.shape[0]} rows of {codes.d_sae} latents; build "
                "ReconstructionStats with the SAE's d_sae"
            )
        if self.n and x.shape[1] != self._mean.shape[0]:
            raise ValueError(
                f"d_in changed from {self._mean.shape[0]} to {x.shape[1]} between "
                "batches; use one ReconstructionStats per hook point"
            )
        x64, xh64 = x.double(), x_hat.double()
        x_norm, xh_norm = x64.norm(dim=-1), xh64.norm(dim=-1)  # [batch]
        batch = {
            "sq_err": (x64 - xh64).pow(2).sum(),
            "nonzero": codes.active().sum().double(),
            "l2_ratio": (xh_norm / x_norm).where(x_norm > 0, 0.0).sum(),
            "cosine": ((x64 * xh64).sum(-1) / (x_norm * xh_norm).clamp_min(1e-30)).sum(),
            "nonzero_inputs": (x_norm > 0).sum().double(),
        }
        nb = x.shape[0]
        mean_b = x64.mean(0)
        m2_b = (x64 - mean_b).pow(2).sum()
        if self.n == 0:
            self._sums = {**batch, "m2": m2_b}
            self._mean = mean_b
            self._fires = self._fires.to(x.device)
        else:
            for key, value in batch.items():
                self._sums[key] += value
            total = self.n + nb
            delta = mean_b - self._mean
            self._sums["m2"] += m2_b + delta.pow(2).sum() * (self.n * nb / total)
            self._mean = self._mean + delta * (nb / total)
        self._fires += codes.fire_counts()
        self.n += nb

    def result(self) -> dict[str, Any]:
        """Floats for the scalar metrics; ``density`` and ``log10_density`` are [d_sae] tensors."""
        if self.n == 0:
            raise ValueError("no inputs seen: call update() with at least one batch first")
        sums = {k: v.item() for k, v in self._sums.items()}
        density = (self._fires.double() / self.n).cpu()
        return {
            "n_inputs": self.n,
            "mse": sums["sq_err"] / self.n,
            "fvu": sums["sq_err"] / sums["m2"] if sums["m2"] > 0 else math.nan,
            "l0": sums["nonzero"] / self.n,
            "dead_fraction": (density == 0).double().mean().item(),
            "dense_fraction": (density > self.dense_threshold).double().mean().item(),
            "l2_ratio": sums["l2_ratio"] / max(sums["nonzero_inputs"], 1.0),
            "cosine_similarity": sums["cosine"] / max(sums["nonzero_inputs"], 1.0),
            "density": density,
            "log10_density": log10_density(density),
        }


def evaluate_reconstruction(
    sae: SAE,
    batches: Iterable[torch.Tensor | tuple[torch.Tensor, torch.Tensor]],
    max_batches: int | None = None,
    *,
    dense_threshold: float = 0.1,
    bin_width: float = BIN_WIDTH,
) -> dict[str, Any]:
    """``ReconstructionStats.result()`` and the ``DescriptionLength`` of ``sae``'s codes (bin
    width ``bin_width``) over ``batches`` ([..., d_in] each, flattened to [batch, d_in]; for a
    transcoder (inputs, targets [..., d_out]) pairs), in eval mode without gradients. Metrics
    compare against x in its own dtype, so a bfloat16 SAE is judged against the full-precision
    activations."""
    if max_batches is not None:
        check(max_batches > 0, "max_batches", max_batches, "a positive integer or None")
    param = next(sae.parameters())
    stats = ReconstructionStats(sae.d_sae, dense_threshold=dense_threshold)
    length = DescriptionLength(sae.d_sae, bin_width=bin_width)
    was_training = sae.training
    sae.eval()
    try:
        with torch.no_grad():
            for batch in itertools.islice(batches, max_batches):
                inputs, targets = batch if isinstance(batch, tuple) else (batch, batch)
                x = inputs.reshape(-1, inputs.shape[-1]).to(param.device)
                target = targets.reshape(-1, targets.shape[-1]).to(param.device)
                out = sae.forward_full(x.to(param.dtype))
                stats.update(target, out.x_hat.to(target.dtype), out.codes)
                length.update(out.codes)
    finally:
        sae.train(was_training)
    return {**stats.result(), **length.result()}


def density_histogram(
    log10_density: torch.Tensor,
    path_png: Path | None = None,
    *,
    bins: int = 50,
    floor: float = LOG10_FLOOR,
) -> dict[str, Any]:
    """Histogram of log10 feature density [d_sae]; latents at or below ``floor`` count as dead.

    Returns ``edges`` (bins + 1) and ``counts`` (bins) over the live latents, and ``dead`` /
    ``alive`` counts. With ``path_png``, also writes the plot there (PNG), dead latents in a
    panel of their own left of the histogram.
    """
    check(bins > 0, "bins", bins, "a positive integer")
    values = log10_density.detach().double().cpu().numpy().reshape(-1)
    dead = values <= floor
    alive = values[~dead]
    # With no live latents numpy would pick (0, 1); span the possible range instead.
    span = None if alive.size else (floor, 0.0)
    counts, edges = np.histogram(alive, bins=bins, range=span)
    data = {
        "edges": edges.tolist(),
        "counts": counts.tolist(),
        "dead": int(dead.sum()),
        "alive": int(alive.size),
    }
    if path_png is not None:
        atomic_write_bytes(Path(path_png), _plot_density(data))
    return data


def _plot_density(data: dict[str, Any]) -> bytes:
    """PNG bytes of a ``density_histogram`` result."""
    from matplotlib.figure import Figure  # no pyplot: no global figure state, no GUI backend

    edges, counts = np.asarray(data["edges"]), np.asarray(data["counts"])
    fig = Figure(figsize=(7.0, 3.6), layout="constrained")
    # Dead latents get their own panel: they have no density to place on the log axis.
    dead_ax, ax = fig.subplots(1, 2, sharey=True, width_ratios=[1, 9])
    dead_ax.bar([0], [data["dead"]], width=0.6, color="tab:red")
    dead_ax.set_xticks([0], ["dead"])
    dead_ax.set_xlim(-0.6, 0.6)
    dead_ax.set_ylabel("latents")
    ax.stairs(counts, edges, fill=True, color="tab:blue", alpha=0.8)
    ax.set_xlabel("log10(feature density)")
    ax.set_title(f"{data['alive']:,} alive, {data['dead']:,} dead", fontsize="medium")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    return buffer.getvalue()
