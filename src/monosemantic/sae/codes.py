"""A batch's latent activations, dense or as (indices, values)."""

from __future__ import annotations

import torch


class Codes:
    """A batch's latent activations: dense ``[batch, d_sae]``, or each row's k (index, value)
    pairs (``indices``, ``values``: [batch, k]) so nothing needs a dense matrix. A value may be 0
    (an entry kept by top-k whose ReLU is 0, or padding of a row with fewer pairs): it does not
    count as firing."""

    def __init__(
        self, values: torch.Tensor, indices: torch.Tensor | None = None, d_sae: int | None = None
    ) -> None:
        if indices is not None and d_sae is None:
            raise ValueError("sparse codes need d_sae, the number of latents")
        self.values = values
        self.indices = indices
        self.d_sae = values.shape[-1] if indices is None else int(d_sae)  # type: ignore[arg-type]

    def dense(self) -> torch.Tensor:
        """[batch, d_sae]."""
        if self.indices is None:
            return self.values
        out = self.values.new_zeros(*self.values.shape[:-1], self.d_sae)
        # add, not overwrite: padding repeats latent 0 with value 0 (Active.codes)
        return out.scatter_add(-1, self.indices, self.values)

    def active(self) -> torch.Tensor:
        """[batch] number of non-zero codes in each row (L0)."""
        return (self.values != 0).sum(-1)

    def fire_counts(self) -> torch.Tensor:
        """[d_sae] number of rows on which each latent is non-zero (int64)."""
        fired = self.values != 0
        if self.indices is None:
            return fired.sum(0)
        return torch.bincount(self.indices[fired], minlength=self.d_sae)

    def scaled(self, weights: torch.Tensor) -> torch.Tensor:
        """Each code times its latent's weight (weights: [d_sae]), in ``values``' layout."""
        return self.values * (weights if self.indices is None else weights[self.indices])

    def smallest_positive(self) -> torch.Tensor:
        """[d_sae] each latent's smallest positive code in the batch (+inf where none)."""
        values = self.values.detach().masked_fill(self.values <= 0, float("inf"))
        if self.indices is None:
            return values.min(0).values
        out = values.new_full((self.d_sae,), float("inf"))
        return out.scatter_reduce(0, self.indices.flatten(), values.flatten(), "amin")
