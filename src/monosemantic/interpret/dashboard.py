"""Everything a feature dashboard shows, from one streamed pass over tokenised text.

Per latent: density, max, mean and a histogram of its activations (``FeatureStats``), its
strongest firings and a uniform sample of its firings, each with its context
(``ExampleKeeper``), and, for an SAE that writes to the residual stream, its logit effects.
Memory ∝ latents × (bins + examples × context), never ∝ tokens: codes are made and dropped
one batch of windows at a time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from monosemantic.data.harvest import forward_activations
from monosemantic.hooks import HookPoint
from monosemantic.interpret.examples import ExampleKeeper, Examples
from monosemantic.interpret.feature_stats import FeatureStats, Firings, LatentStats
from monosemantic.interpret.logit_effects import LogitEffects, logit_effects, writes_residual
from monosemantic.sae.base import SAE


@dataclass
class Dashboard:
    """``stats``, ``top`` and ``samples`` per latent; ``logits`` None when the SAE does not write
    to the residual stream; ``n_tokens`` the positions counted, in ``n_windows`` windows of
    ``context_size`` (1 for matrix rows); seconds in the model's forward passes (``forward_s``)
    and in the rest (``stats_s``: encoding and keeping)."""

    stats: LatentStats
    top: Examples
    samples: Examples
    logits: LogitEffects | None
    n_tokens: int
    n_windows: int
    context_size: int
    forward_s: float
    stats_s: float


@torch.no_grad()
def collect(
    model: nn.Module,
    sae: SAE,
    tokens: torch.Tensor,
    *,
    exclude: torch.Tensor | None = None,
    n_top: int = 16,
    n_samples: int = 16,
    left: int = 12,
    right: int = 4,
    batch_size: int = 8,
    seed: int = 0,
    progress: bool = False,
) -> Dashboard:
    """Stream ``tokens`` [n, ctx] through the model and ``sae`` at its input hook, ``batch_size``
    windows at a time. ``exclude`` [n, ctx] marks positions (BOS, padding) never counted."""
    n, ctx = tokens.shape
    hook = str(HookPoint.parse(sae.cfg.hook))
    stats = FeatureStats(sae.d_sae)
    top = ExampleKeeper(sae.d_sae, n_top, top=True, left=left, right=right)
    samples = ExampleKeeper(sae.d_sae, n_samples, top=False, left=left, right=right, seed=seed)
    forward_s = stats_s = 0.0
    dtype = sae.W_dec.dtype
    for start in tqdm(range(0, n, batch_size), desc="browse", disable=not progress):
        ids = tokens[start : start + batch_size]
        tick = time.perf_counter()
        x = forward_activations(model, ids, [hook])[hook]
        tock = time.perf_counter()
        codes = sae.encode(x.to(dtype)).float().cpu().reshape(-1, sae.d_sae)  # [b·ctx, d_sae]
        skip = None if exclude is None else exclude[start : start + batch_size]
        firings = Firings.of(codes, skip)  # found once, shared by all three
        stats.add(firings)
        top.add(codes, ids, start, firings)
        samples.add(codes, ids, start, firings)
        forward_s += tock - tick
        stats_s += time.perf_counter() - tock
    return Dashboard(
        stats=stats.result(),
        top=top.result(),
        samples=samples.result(),
        logits=logit_effects(model, sae) if writes_residual(model, sae) else None,
        n_tokens=stats.n,
        n_windows=n,
        context_size=ctx,
        forward_s=forward_s,
        stats_s=stats_s,
    )


@torch.no_grad()
def collect_rows(
    sae: SAE,
    rows: torch.Tensor,
    *,
    n_top: int = 16,
    n_samples: int = 16,
    batch_size: int = 4096,
    seed: int = 0,
) -> Dashboard:
    """The dashboard of ``sae`` over the rows [n, d_in] of a matrix (images, cells): each row is
    a window of one position whose "token id" is the row's index."""
    stats = FeatureStats(sae.d_sae)
    top = ExampleKeeper(sae.d_sae, n_top, top=True, left=0, right=0)
    samples = ExampleKeeper(sae.d_sae, n_samples, top=False, left=0, right=0, seed=seed)
    tick = time.perf_counter()
    for start in range(0, len(rows), batch_size):
        x = rows[start : start + batch_size]
        codes = sae.encode(x.to(sae.W_dec.dtype)).float().cpu()
        index = torch.arange(start, start + len(x))[:, None]  # [b, 1]
        firings = Firings.of(codes)
        stats.add(firings)
        top.add(codes, index, start, firings)
        samples.add(codes, index, start, firings)
    return Dashboard(
        stats=stats.result(),
        top=top.result(),
        samples=samples.result(),
        logits=None,
        n_tokens=stats.n,
        n_windows=len(rows),
        context_size=1,
        forward_s=0.0,
        stats_s=time.perf_counter() - tick,
    )
