"""BatchTopK SAE (Bussmann, Leask, Nanda 2024, "BatchTopK Sparse Autoencoders", arXiv 2412.06410).

Training mode (``sae.train()``): the sparsity budget is shared across the batch,

    pre   = (x − b_dec) W_enc + b_enc                                   [batch, d_sae]
    f     = ReLU(pre) on the batch·k largest entries of ReLU(pre) over the whole batch, 0 elsewhere

so a row may use more or fewer than k latents but the batch uses batch·k in total.

Inference (``sae.eval()``): a single global threshold θ makes each row independent,

    f     = pre · 1{pre > θ}

θ (buffer ``threshold``, a scalar) is an exponential moving average, decay 0.99 per training step,
of the smallest positive kept activation of each training batch (of the global batch, under
data-parallel training); the first batch sets it. The
trainer folds each step in through ``update_state``. Until it has been estimated (θ < 0)
inference falls back to batch top-k.

    loss  = ‖x − x̂‖² + α · AuxK      (as TopK, Gao et al. 2024)

SAELens saves trained BatchTopK SAEs as JumpReLU with θ broadcast to [d_sae]; so do we.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from monosemantic.sae.base import SAE, LossContext, Penalties, Reduce, SAEOutput, local
from monosemantic.sae.registry import register
from monosemantic.sae.sparse import Active, above
from monosemantic.sae.topk import TopKConfig, TopKSAE, topk_penalties

THRESHOLD_DECAY = 0.99
UNSET = -1.0
"""θ before the first training step: inference then uses batch top-k."""


@dataclass(kw_only=True)
class BatchTopKConfig(TopKConfig):
    """TopK's fields; ``k`` is the mean number of active latents per input."""

    architecture: ClassVar[str] = "batchtopk"


def batch_topk_codes(pre: torch.Tensor, k: int) -> torch.Tensor:
    """[..., d_sae] -> same shape keeping the k·(rows) largest entries of ReLU(pre) overall."""
    acts = pre.relu()
    flat = acts.flatten()
    rows = flat.numel() // pre.shape[-1]
    values, indices = flat.topk(k * rows, sorted=False)
    return torch.zeros_like(flat).scatter(0, indices, values).reshape(pre.shape)


SAMPLE = 1 << 16
"""``batch_topk_pairs`` estimates a lower bound of θ from about this many entries."""
SAMPLE_MARGIN = 6.0
"""Standard deviations of the sampled count by which that bound undershoots its estimate."""


def sampled_lower_bound(pre: torch.Tensor, fraction: float) -> torch.Tensor:
    """A value of pre [n, d_sae] (its dtype) that, with high probability, at least ``fraction``
    of pre's entries reach: the (fraction·s + 6σ + 16)-th largest of s ≈ ``SAMPLE`` entries taken
    at a fixed stride coprime to d_sae (every latent and row is sampled; no random state used).
    Only the speed depends on it being right (``batch_topk_pairs``)."""
    flat = pre.reshape(-1)
    stride = max(1, flat.numel() // SAMPLE)
    while math.gcd(stride, pre.shape[-1]) != 1:
        stride += 1
    sample = flat[::stride]
    expected = fraction * sample.numel()
    rank = math.ceil(expected + SAMPLE_MARGIN * math.sqrt(expected) + 16)
    if rank >= sample.numel():
        return sample.new_zeros(())
    return sample.topk(rank, sorted=False).values.min()


def batch_topk_pairs(pre: torch.Tensor, k: int, across_ranks: Reduce = local) -> Active:
    """The pairs of [n, d_sae] holding the k·N largest entries of ReLU(pre) over the N rows of
    every process, as ``batch_topk_codes`` keeps them in one (less those whose code is 0, which
    add nothing; ties at the smallest kept value all kept).

    Without a top-k over all N·d_sae scores, nor one per row: the entries at or above a sampled
    lower bound of θ (one comparison) are the candidates, and θ is their (k·N)-th largest; when
    they are too few (the sample misled), all positive entries are."""
    n, d_sae = pre.shape
    total = int(across_ranks(torch.tensor(n), "sum"))
    budget = k * total
    bound = sampled_lower_bound(pre, budget / max(1, total * d_sae)).float()
    bound = across_ranks(bound, "min").to(pre.dtype)  # the same candidates' rule everywhere
    positive = (pre.new_zeros(()), False)  # the last resort: every entry > 0
    for floor, or_equal in [(bound, True), positive] if bool(bound > 0) else [positive]:
        rows, latents = above(pre, floor, or_equal=or_equal).nonzero(as_tuple=True)
        found = int(across_ranks(torch.tensor(rows.numel()), "sum"))
        if found >= budget:
            break
    if found > budget:
        values = pre[rows, latents]
        theta = kth_largest(values.reshape(-1, 1), budget, across_ranks)[0]
        keep = values >= theta  # θ > 0: every candidate is
        rows, latents = rows[keep], latents[keep]
    return Active.row_major(rows, latents, n, d_sae)


FLOAT_BITS = (torch.float32, torch.int32)
"""Where ``kth_largest`` bisects values of other dtypes than float64 (bf16 and fp16 are exact
in float32)."""


def kth_largest(values: torch.Tensor, k: int, across_ranks: Reduce = local) -> torch.Tensor:
    """[c] the k-th largest of each column of values [n, c] over every process's rows, at least
    0 (ReLU's codes); k at most the columns' length over all processes. In one process a top-k;
    across processes an exact bisection on the bit patterns (non-negative floats order as their
    bits) whose counts are summed over processes: at most 31 reductions of [c] counts (63 in
    float64), and the same answer on every process."""
    if across_ranks is local:
        return values.topk(k, dim=0, sorted=False).values.min(0).values.clamp_min(0)
    exact, as_bits = (torch.float64, torch.int64) if values.dtype == torch.float64 else FLOAT_BITS
    bits = values.detach().to(exact).clamp_min(0).view(as_bits).long()
    low = torch.zeros(bits.shape[1], dtype=torch.long)
    high = across_ranks(bits.max(0).values, "max")
    while bool((low < high).any()):
        middle = low + (high - low + 1) // 2
        enough = across_ranks((bits >= middle).sum(0), "sum") >= k
        low, high = torch.where(enough, middle, low), torch.where(enough, high, middle - 1)
    return low.to(as_bits).view(exact).to(values.dtype)


def fold_threshold(threshold: torch.Tensor, smallest: torch.Tensor) -> None:
    """In place: θ ← the exponential moving average (decay ``THRESHOLD_DECAY``) of ``smallest``,
    the smallest kept code of a batch; an unset θ (< 0) takes it as is; an infinite ``smallest``
    (nothing kept) leaves θ alone. Scalars or [d_sae] alike."""
    smallest = smallest.to(threshold.dtype)
    seen = torch.isfinite(smallest)
    moved = torch.where(
        threshold < 0, smallest, torch.lerp(threshold, smallest, 1 - THRESHOLD_DECAY)
    )
    threshold.copy_(torch.where(seen, moved, threshold))


@register
class BatchTopKSAE(SAE):
    config_class = BatchTopKConfig
    cfg: BatchTopKConfig
    sweep_axes = {"k": "k"}
    unit_norm_decoder = True
    saelens_architecture = "jumprelu"
    saelens_reads: ClassVar[tuple[str, ...]] = ("batchtopk",)
    threshold: torch.Tensor

    def __init__(self, cfg: BatchTopKConfig) -> None:
        super().__init__(cfg)
        self.register_buffer("threshold", torch.tensor(UNSET, dtype=self.b_enc.dtype))

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        if self.training or bool(self.threshold < 0):
            return batch_topk_codes(pre, self.cfg.k)
        return pre * (pre > self.threshold)

    def select(self, pre: torch.Tensor) -> Active:
        """The sparse path's pairs (``sae/sparse.py``): batch top-k, or those above θ."""
        if self.training or bool(self.threshold < 0):
            return batch_topk_pairs(pre, self.cfg.k, self.across_ranks)
        return Active.from_mask(pre > self.threshold)

    def penalties(self, out: SAEOutput, target: torch.Tensor, ctx: LossContext) -> Penalties:
        return topk_penalties(self, self.cfg, out, target, ctx)

    @torch.no_grad()
    def update_state(self, out: SAEOutput, ctx: LossContext) -> None:
        """Fold the smallest positive code of a training batch into θ."""
        smallest = out.codes.smallest_positive().min()
        fold_threshold(self.threshold, ctx.across_ranks(smallest, "min"))

    @classmethod
    def config_from_saelens(cls, raw: dict[str, Any]) -> dict[str, Any]:
        return TopKSAE.config_from_saelens(raw)

    @classmethod
    def weights_from_saelens(cls, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """SAELens's BatchTopK training checkpoints hold θ as ``topk_threshold``."""
        weights = dict(weights)
        if "topk_threshold" in weights:
            weights["threshold"] = weights.pop("topk_threshold").expand(weights["b_enc"].shape)
        return weights

    def export_state(self) -> dict[str, torch.Tensor]:
        """SAELens's JumpReLU layout: θ broadcast to [d_sae]."""
        state = super().export_state()
        state["threshold"] = self.threshold.expand(self.d_sae).contiguous()
        return state

    def import_state(self, state: dict[str, torch.Tensor]) -> None:
        """Accepts θ as a scalar or as [d_sae] equal values (a JumpReLU-format folder)."""
        state = dict(state)
        theta = state["threshold"].flatten()
        if theta.numel() > 1 and not bool((theta == theta[0]).all()):
            raise ValueError(
                "a BatchTopK SAE has one global threshold but these weights hold per-latent "
                f"thresholds (min {theta.min().item():.4g}, max {theta.max().item():.4g}); "
                "load them as architecture 'jumprelu'"
            )
        state["threshold"] = theta[0].clone()
        super().import_state(state)
