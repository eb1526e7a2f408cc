"""Kept examples: for every latent, ``n`` of the positions where it fires, each with its
neighbourhood, streamed batch by batch in memory ∝ latents × n × window (never ∝ tokens).

Each eligible position (code > 0, not excluded) gets a key; the ``n`` largest keys are kept:

    top=True    key = the activation: the latent's strongest firings, strongest first
    top=False   key = a uniform random number: a uniform sample of its firings drawn without
                replacement (priority sampling), in increasing activation: empirical quantiles
                across its whole range, not only the top

The neighbourhood is the ``left`` positions before and ``right`` after, within the window: the
token ids there and the latent's activation on each, so contexts can be shaded.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from monosemantic.config import check
from monosemantic.interpret.feature_stats import Firings


@dataclass
class Examples:
    """values, where: [d_sae, n] (activation; flat position window·ctx + position, −1 in a slot
    left empty when a latent fired fewer than n times); context_values, context_ids:
    [d_sae, n, left + 1 + right] (0 and −1 outside the window or in an empty slot); ``left``:
    the index of the example's own position in the context axis."""

    values: torch.Tensor
    where: torch.Tensor
    context_values: torch.Tensor
    context_ids: torch.Tensor
    left: int

    def count(self) -> torch.Tensor:
        """[d_sae] the number of filled slots."""
        return (self.where >= 0).sum(1)


def best_per_group(groups: torch.Tensor, keys: torch.Tensor, n: int, n_groups: int) -> torch.Tensor:
    """[n_groups, n]: for each group, the indices (into ``groups``/``keys``, both [m]) of its
    ``n`` largest keys, largest first; −1 past a group's members."""
    by_key = torch.empty_like(groups)
    by_key[keys.argsort(descending=True)] = torch.arange(len(keys))
    # one float sort by (group, rank of key): exact below 2^53, and far faster than integers'
    order = (groups.double() * len(keys) + by_key.double()).argsort()
    group = groups[order]
    counts = torch.bincount(group, minlength=n_groups)
    rank = torch.arange(len(order)) - (counts.cumsum(0) - counts)[group]
    kept = rank < n
    best = torch.full((n_groups, n), -1, dtype=torch.int64)
    best[group[kept], rank[kept]] = order[kept]
    return best


class ExampleKeeper:
    """See the module docstring. ``update`` per batch of whole windows, ``result`` at the end."""

    def __init__(
        self, d_sae: int, n: int, *, top: bool, left: int = 12, right: int = 4, seed: int = 0
    ) -> None:
        check(d_sae > 0, "d_sae", d_sae, "a positive integer")
        check(n > 0, "n", n, "a positive integer")
        check(left >= 0 and right >= 0, "left/right", (left, right), "counts >= 0")
        self.top, self.left, self.right = top, left, right
        width = left + 1 + right
        self.keys = torch.full((d_sae, n), -torch.inf)
        self.values = torch.zeros(d_sae, n)
        self.where = torch.full((d_sae, n), -1, dtype=torch.int64)
        self.context_values = torch.zeros(d_sae, n, width)
        self.context_ids = torch.full((d_sae, n, width), -1, dtype=torch.int64)
        self.generator = torch.Generator().manual_seed(seed)

    @torch.no_grad()
    def update(
        self,
        codes: torch.Tensor,
        ids: torch.Tensor,
        first_window: int,
        exclude: torch.Tensor | None = None,
    ) -> None:
        """codes [b, ctx, d_sae] of windows ``first_window`` … + b − 1, whose token ids are
        ``ids`` [b, ctx]; ``exclude`` [b, ctx] marks positions (BOS, padding) never kept.
        Work ∝ firings: only the positive codes are ranked."""
        b, ctx, d_sae = codes.shape
        flat = codes.reshape(b * ctx, d_sae)
        self.add(flat, ids, first_window, Firings.of(flat, exclude))

    @torch.no_grad()
    def add(
        self, codes: torch.Tensor, ids: torch.Tensor, first_window: int, firings: Firings
    ) -> None:
        """``update`` with the batch's codes flattened to [b·ctx, d_sae] and its firings
        found already (``Firings.of``, excluded positions left out)."""
        ctx, d_sae = ids.shape[1], codes.shape[1]
        flat = codes.detach().float().cpu()
        rows, latents, values = firings.rows, firings.latents, firings.values
        if len(rows) == 0:
            return
        keys = values if self.top else torch.rand(len(values), generator=self.generator)
        n = self.keys.shape[1]
        entry = best_per_group(latents, keys, n, d_sae)  # [d_sae, n] index into the firings
        found = entry >= 0
        entry = entry.clamp_min(0)
        row = rows[entry]  # [d_sae, n]
        offsets = torch.arange(-self.left, self.right + 1)
        position = (row % ctx)[..., None] + offsets  # [d_sae, n, width]
        inside = (position >= 0) & (position < ctx) & found[..., None]
        source = (row // ctx * ctx)[..., None] + position.clamp(0, ctx - 1)
        latent = torch.arange(d_sae)[:, None, None]
        self._merge(
            keys[entry].masked_fill(~found, -torch.inf),
            values[entry].where(found, 0.0),
            (first_window * ctx + row).masked_fill(~found, -1),
            flat[source, latent].where(inside, 0.0),
            ids.cpu().reshape(-1)[source].where(inside, -1),
        )

    def _merge(
        self,
        keys: torch.Tensor,
        values: torch.Tensor,
        where: torch.Tensor,
        context_values: torch.Tensor,
        context_ids: torch.Tensor,
    ) -> None:
        """Keep, per latent, the n largest keys of the kept and the new (each [d_sae, m, ...])."""
        all_keys = torch.cat([self.keys, keys], dim=1)
        self.keys, picked = all_keys.topk(self.keys.shape[1], dim=1)
        self.values = torch.cat([self.values, values], 1).gather(1, picked)
        self.where = torch.cat([self.where, where], 1).gather(1, picked)
        around = picked[..., None].expand(-1, -1, self.context_values.shape[2])
        self.context_values = torch.cat([self.context_values, context_values], 1).gather(1, around)
        self.context_ids = torch.cat([self.context_ids, context_ids], 1).gather(1, around)

    def result(self) -> Examples:
        """The kept examples: strongest first (top), else in increasing activation; empty
        slots last."""
        filled = self.where >= 0
        if self.top:
            order = torch.arange(self.keys.shape[1]).expand_as(self.where)  # topk sorted them
        else:
            order = self.values.masked_fill(~filled, torch.inf).argsort(dim=1, stable=True)
        around = order[..., None].expand(-1, -1, self.context_values.shape[2])
        return Examples(
            values=self.values.where(filled, 0.0).gather(1, order),
            where=self.where.gather(1, order),
            context_values=self.context_values.gather(1, around),
            context_ids=self.context_ids.gather(1, around),
            left=self.left,
        )
