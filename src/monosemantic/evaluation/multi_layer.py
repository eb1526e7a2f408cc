"""How a multi-layer SAE's latents spread over depth (Lawson et al. 2024, arXiv 2409.04185).

One SAE reads the residual stream after every layer (``model.layers.*:output``); every token
then has one input per layer. For each latent this measures where its activation falls:

    mass[i, l]            Σ over held-out tokens of latent i's activation at layer l   [d_sae, L]
    multi_layer_latents   fraction of the latents that fired at all whose activation falls on
                          more than one layer (over the whole held-out set)
    per_token_multi_layer mean over tokens of: among the latents active at some layer of that
                          token, the fraction active at two or more of its layers

and draws the normalised mass as a heatmap, latents sorted by their mean layer.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from monosemantic.data.store import Step
from monosemantic.files import atomic_write_bytes
from monosemantic.hooks import layer_points
from monosemantic.sae.base import SAE


@torch.no_grad()
def layer_activity(sae: SAE, steps: Iterable[Step], pattern: str) -> dict[str, Any]:
    """The measures of the module docstring over held-out ``steps`` (dicts holding every
    layer's rows of the same tokens). Returns ``mass`` [d_sae, L] (tensor), the two fractions
    and ``layers`` (the points, in layer order)."""
    mass: torch.Tensor | None = None
    multi, tokens, layers = 0.0, 0, []
    for step in steps:
        assert isinstance(step, dict), "a multi-layer SAE's steps hold every layer by name"
        layers = layer_points(pattern, step)
        codes = torch.stack([sae.encode(step[point]) for point in layers])  # [L, n, d_sae]
        step_mass = codes.sum(1).T.double()  # [d_sae, L]
        mass = step_mass if mass is None else mass + step_mass
        active = (codes > 0).sum(0)  # [n, d_sae]: layers at which each latent is on
        anywhere = (active > 0).sum(-1).clamp_min(1)
        multi += ((active > 1).sum(-1) / anywhere).sum().item()
        tokens += codes.shape[1]
    if mass is None:
        raise ValueError("no held-out steps: give at least one")
    fired = mass.sum(1) > 0
    spread = (mass > 0).sum(1) > 1
    return {
        "layers": layers,
        "mass": mass,
        "multi_layer_latents": float((spread & fired).sum() / fired.sum().clamp_min(1)),
        "per_token_multi_layer": multi / max(tokens, 1),
    }


def plot_layer_activity(mass: torch.Tensor, path: Path, title: str = "") -> Path:
    """PNG heatmap of each live latent's share of its activation per layer (rows: latents
    sorted by mean layer) beside the histogram of mean layers."""
    from matplotlib.figure import Figure

    live = mass[mass.sum(1) > 0]
    share = (live / live.sum(1, keepdim=True)).numpy()
    depth = np.arange(share.shape[1])
    mean_layer = share @ depth
    order = np.argsort(mean_layer, kind="stable")
    fig = Figure(figsize=(9, 4.2), layout="constrained")
    heat, hist = fig.subplots(1, 2, width_ratios=[3, 2])
    image = heat.imshow(share[order], aspect="auto", interpolation="nearest", cmap="viridis")
    heat.set(xlabel="layer", ylabel="latents (sorted by mean layer)", title=title)
    fig.colorbar(image, ax=heat, label="share of the latent's activation")
    hist.hist(mean_layer, bins=np.arange(share.shape[1] + 1) - 0.5, color="tab:blue")
    hist.set(xlabel="mean layer of a latent's activation", ylabel="latents")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    atomic_write_bytes(path, buffer.getvalue())
    return path
