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


@dataclass
class Firings:
    """Where a batch of codes [n, d_sae] is positive: ``rows``, ``latents``, ``values`` [m]
    each (values float32), over ``n`` counted rows (excluded rows count and fire nowhere).
    Found once per batch and shared by ``FeatureStats`` and ``ExampleKeeper``."""

    rows: torch.Tensor
    latents: torch.Tensor
    values: torch.Tensor
    n: int

    @classmethod
    def of(cls, codes: torch.Tensor, exclude: torch.Tensor | None = None) -> Firings:
        """codes [n, d_sae]; exclude [n] (or any shape of n elements) marks rows left out."""
        codes = codes.detach().float().cpu()
        fired = codes > 0
        n = codes.shape[0]
        if exclude is not None:
            left_out = exclude.cpu().reshape(-1)
            fired &= ~left_out[:, None]
            n -= int(left_out.sum())
        rows, latents = fired.nonzero(as_tuple=True)
        return cls(rows, latents, codes[rows, latents], n)


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

    def update(self, codes: torch.Tensor) -> None:
        """codes [n, d_sae] (dense)."""
        self.add(Firings.of(codes))

    def add(self, firings: Firings) -> None:
        """One batch, by its firings: only they are touched."""
        latents, values = firings.latents, firings.values.double()
        self.n += firings.n
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
