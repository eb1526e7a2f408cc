"""Per-latent statistics streamed over a data set, in memory ∝ latents × bins.

``FeatureStats.update(codes)`` takes each batch's codes [n, d_sae]; ``result()`` gives, per
latent:

    density     fraction of the inputs on which it fires (code > 0)
    max, mean   its largest and its mean activation where it fires
    histogram   counts of its positive activations in ``edges`` (log-spaced, shared by all)

Examples of where each latent fires (the top, and a sample across its range) are
``examples.ExampleKeeper``'s.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from monosemantic.config import check


@dataclass
class LatentStats:
    """``result()``: density, max, mean [d_sae]; histogram [d_sae, bins]; edges [bins + 1]."""

    density: torch.Tensor
    max: torch.Tensor
    mean: torch.Tensor
    histogram: torch.Tensor
    edges: torch.Tensor


class FeatureStats:
    """See the module docstring. ``edges``: histogram edges (default 40 log-spaced bins from 1e-3
    to 1e3; activations outside fall into the first or last bin)."""

    def __init__(self, d_sae: int, *, edges: torch.Tensor | None = None) -> None:
        check(d_sae > 0, "d_sae", d_sae, "a positive integer")
        self.edges = torch.logspace(-3, 3, 41, dtype=torch.float64) if edges is None else edges
        self.n = 0
        self.fires = torch.zeros(d_sae, dtype=torch.int64)
        self.total = torch.zeros(d_sae, dtype=torch.float64)
        self.max = torch.zeros(d_sae, dtype=torch.float64)
        self.histogram = torch.zeros(d_sae, len(self.edges) - 1, dtype=torch.int64)

    @torch.no_grad()
    def update(self, codes: torch.Tensor) -> None:
        """codes [n, d_sae] (dense); only the firings (code > 0) are touched after one pass."""
        codes = codes.detach().cpu()
        self.n += codes.shape[0]
        rows, latents = (codes > 0).nonzero(as_tuple=True)
        values = codes[rows, latents].double()
        d_sae = len(self.fires)
        self.fires += torch.bincount(latents, minlength=d_sae)
        self.total += torch.bincount(latents, weights=values, minlength=d_sae)
        self.max.scatter_reduce_(0, latents, values, reduce="amax")
        bins = (torch.bucketize(values, self.edges) - 1).clamp(0, self.histogram.shape[1] - 1)
        flat = latents * self.histogram.shape[1] + bins
        self.histogram += torch.bincount(flat, minlength=self.histogram.numel()).view_as(
            self.histogram
        )

    def result(self) -> LatentStats:
        if self.n == 0:
            raise ValueError("no inputs seen: call update() with at least one batch first")
        return LatentStats(
            density=self.fires.double() / self.n,
            max=self.max,
            mean=self.total / self.fires.clamp_min(1),
            histogram=self.histogram,
            edges=self.edges,
        )
