"""Per-latent statistics streamed over a data set, in memory ∝ latents × (bins + samples).

``FeatureStats.update(codes, where)`` takes each batch's codes [n, d_sae] and the flat positions
[n] they came from; ``result()`` gives, per latent:

    density     fraction of the inputs on which it fires (code > 0)
    max, mean   its largest and its mean activation where it fires
    histogram   counts of its positive activations in ``edges`` (log-spaced, shared by all)
    samples     ``n_samples`` firings drawn uniformly without replacement (priority sampling:
                each firing gets a random key, the largest keys are kept), sorted by value, so
                they cover the whole range of its activations, not only the top
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from monosemantic.config import check


@dataclass
class LatentStats:
    """``result()``: density, max, mean [d_sae]; histogram [d_sae, bins]; edges [bins + 1];
    sample_values, sample_where [d_sae, n_samples] (value 0 and where −1 past a latent's
    firings), each latent's samples in increasing value."""

    density: torch.Tensor
    max: torch.Tensor
    mean: torch.Tensor
    histogram: torch.Tensor
    edges: torch.Tensor
    sample_values: torch.Tensor
    sample_where: torch.Tensor


class FeatureStats:
    """See the module docstring. ``edges``: histogram edges (default 40 log-spaced bins from 1e-3
    to 1e3; activations outside fall into the first or last bin); ``seed`` fixes the samples."""

    def __init__(
        self,
        d_sae: int,
        *,
        n_samples: int = 16,
        edges: torch.Tensor | None = None,
        seed: int = 0,
    ) -> None:
        check(d_sae > 0, "d_sae", d_sae, "a positive integer")
        check(n_samples > 0, "n_samples", n_samples, "a positive integer")
        self.edges = torch.logspace(-3, 3, 41, dtype=torch.float64) if edges is None else edges
        self.n = 0
        self.fires = torch.zeros(d_sae, dtype=torch.int64)
        self.total = torch.zeros(d_sae, dtype=torch.float64)
        self.max = torch.zeros(d_sae, dtype=torch.float64)
        self.histogram = torch.zeros(d_sae, len(self.edges) - 1, dtype=torch.int64)
        self.keys = torch.full((d_sae, n_samples), -1.0, dtype=torch.float64)
        self.values = torch.zeros(d_sae, n_samples, dtype=torch.float64)
        self.where = torch.full((d_sae, n_samples), -1, dtype=torch.int64)
        self.generator = torch.Generator().manual_seed(seed)

    @torch.no_grad()
    def update(self, codes: torch.Tensor, where: torch.Tensor) -> None:
        """codes [n, d_sae] (dense), where [n] the flat position of each row."""
        codes = codes.detach().double().cpu()
        fired = codes > 0
        self.n += codes.shape[0]
        self.fires += fired.sum(0)
        self.total += codes.clamp_min(0).sum(0)
        self.max = torch.maximum(self.max, codes.max(0).values.clamp_min(0))
        rows, latents = fired.nonzero(as_tuple=True)
        values = codes[rows, latents]
        bins = (torch.bucketize(values, self.edges) - 1).clamp(0, self.histogram.shape[1] - 1)
        flat = latents * self.histogram.shape[1] + bins
        self.histogram += torch.bincount(flat, minlength=self.histogram.numel()).view_as(
            self.histogram
        )
        keys = torch.rand(codes.shape, generator=self.generator, dtype=torch.float64)
        keys = keys.masked_fill(~fired, -1.0).T  # [d_sae, n]: only firings can be drawn
        all_keys = torch.cat([self.keys, keys], dim=1)
        all_values = torch.cat([self.values, codes.T], dim=1)
        all_where = torch.cat([self.where, where.cpu().expand_as(keys)], dim=1)
        self.keys, picked = all_keys.topk(self.keys.shape[1], dim=1)
        self.values = all_values.gather(1, picked)
        self.where = all_where.gather(1, picked)

    def result(self) -> LatentStats:
        if self.n == 0:
            raise ValueError("no inputs seen: call update() with at least one batch first")
        drawn = self.keys >= 0
        values = self.values.where(drawn, 0.0)
        order = values.masked_fill(~drawn, float("inf")).argsort(dim=1)  # undrawn slots last
        return LatentStats(
            density=self.fires.double() / self.n,
            max=self.max,
            mean=self.total / self.fires.clamp_min(1),
            histogram=self.histogram,
            edges=self.edges,
            sample_values=values.gather(1, order),
            sample_where=self.where.where(drawn, -1).gather(1, order),
        )
