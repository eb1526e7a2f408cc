"""Feature Choice SAE (Ayonrinde 2024, "Adaptive Sparse Allocation with Mutual Choice & Feature
Choice Sparse Autoencoders", arXiv 2411.02124).

TopK lets every token choose k latents; Feature Choice lets every latent choose its tokens. Over
a training batch's score matrix ReLU(pre) [N, d_sae], latent i keeps its own top m_i tokens with
Σ m_i = k·N: every latent gets m = ⌊k·N / d_sae⌋, and the remainder r = k·N − m·d_sae goes to the
r latents whose (m+1)-th best token scores highest. So no latent is left unselected (when
k·N ≥ d_sae), while a token may use any number of latents:

    pre   = (x − b_dec) W_enc + b_enc                                       [N, d_sae]
    f     = ReLU(pre) ⊙ S,   S[:, i] = 1 on latent i's top m_i tokens
    loss  = ‖x − x̂‖² + α · aux_zipf_loss                                    (sae/aux_zipf.py)

Inference (``sae.eval()``) cannot depend on the batch. We use a learned per-latent threshold,
θ_i = an exponential moving average (decay 0.99 per step, the first batch sets it) of the
smallest positive activation latent i kept in each training batch, and f = pre · 1{pre > θ_i}.
This is our choice (the paper's inference section could not be read here); it keeps each latent
near its training-time density. A latent that never kept a positive activation never fires; until
any θ is estimated inference falls back to feature choice over the given batch. Saved as
SAELens's ``jumprelu`` with these thresholds, which computes the same codes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from monosemantic.sae.aux_zipf import zipf_penalties
from monosemantic.sae.base import SAE, LossContext, Penalties, Reduce, SAEOutput, local
from monosemantic.sae.batchtopk import UNSET, fold_threshold, kth_largest
from monosemantic.sae.registry import register
from monosemantic.sae.sparse import Active, above
from monosemantic.sae.topk import TopKConfig


@dataclass(kw_only=True)
class FeatureChoiceConfig(TopKConfig):
    """TopK's fields; ``k`` is the mean number of active latents per input, and
    ``aux_coefficient`` weighs aux_zipf_loss."""

    architecture: ClassVar[str] = "feature_choice"


def feature_choice_mask(pre: torch.Tensor, k: int) -> torch.Tensor:
    """[N, d_sae] -> bool [N, d_sae]: each latent's top m_i entries of ReLU(pre) over the N rows,
    Σ m_i = min(k·N, N·d_sae) (see the module docstring for m_i)."""
    n, d_sae = pre.shape
    m, extra = divmod(k * n, d_sae)
    take = min(n, m + (extra > 0))
    scores, rows = pre.relu().topk(take, dim=0)  # [take, d_sae], best first
    keep = torch.ones_like(scores, dtype=torch.bool)
    if take == m + 1:  # the remainder: the strongest (m+1)-th choices win
        keep[m] = False
        keep[m, scores[m].topk(extra, sorted=False).indices] = True
    return torch.zeros(n, d_sae, dtype=torch.bool).scatter(0, rows, keep)


BLOCKS_PER_PICK = 4
"""Row blocks per entry a column keeps in ``top_per_column``'s lower bound: with 4, about 1.15
candidates a kept entry remain to rank (fewer blocks leave more; more blocks cost more maxima)."""


def top_per_column(pre: torch.Tensor, count: int) -> torch.Tensor:
    """[count, d_sae] the ``count`` largest entries of each column of pre [n, d_sae], in no
    order: the values of ``pre.topk(count, dim=0)``. The count-th largest of a column's maxima
    over row blocks is at most its count-th largest entry (those maxima are entries), so only the
    entries at or above that bound, about 1.15·count a column, are ranked, padded into one
    [d_sae, most] matrix (docs/benchmarks.md, session 10). Too few rows for the blocks: topk."""
    n, d_sae = pre.shape
    blocks = BLOCKS_PER_PICK * count
    if n < 2 * blocks:
        return pre.topk(count, dim=0, sorted=False).values
    size = n // blocks
    maxima = pre[: blocks * size].view(blocks, size, d_sae).amax(1)
    bound = maxima.topk(count, dim=0, sorted=False).values.min(0).values
    rows, columns = above(pre, bound, or_equal=True).nonzero(as_tuple=True)  # ≥ count a column
    by_column = columns.to(torch.int32).sort().indices
    rows, columns = rows[by_column], columns[by_column]
    counts = torch.bincount(columns, minlength=d_sae)
    slot = torch.arange(len(columns), device=pre.device) - (counts.cumsum(0) - counts)[columns]
    padded = pre.new_full((d_sae, int(counts.max())), float("-inf"))
    padded[columns, slot] = pre[rows, columns]
    return padded.topk(count, dim=1, sorted=False).values.T


def feature_choice_thresholds(
    pre: torch.Tensor, k: int, across_ranks: Reduce = local
) -> torch.Tensor:
    """[d_sae] each latent's smallest kept score over the N rows of every process (pre: [n,
    d_sae] here), the selection ``feature_choice_mask`` makes in one process: the m-th best, or
    the (m+1)-th for the latents that win the remainder; 0 keeps all positive scores, +inf none.
    Each process's m + 1 best rows per latent are all the candidates."""
    n, d_sae = pre.shape
    total = int(across_ranks(torch.tensor(n), "sum"))
    m, extra = divmod(k * total, d_sae)
    if m >= total:
        return pre.new_zeros(d_sae)
    top = top_per_column(pre, min(n, m + 1)).relu()  # ReLU commutes with the top
    next_best = kth_largest(top, m + 1, across_ranks)
    theta = kth_largest(top, m, across_ranks) if m else torch.full_like(next_best, float("inf"))
    if extra:
        winners = next_best.topk(extra, sorted=False).indices
        theta[winners] = next_best[winners]
    return theta


@register
class FeatureChoiceSAE(SAE):
    config_class = FeatureChoiceConfig
    cfg: FeatureChoiceConfig
    sweep_axes = {"k": "k"}
    unit_norm_decoder = True
    saelens_architecture = "jumprelu"
    threshold: torch.Tensor

    def __init__(self, cfg: FeatureChoiceConfig) -> None:
        super().__init__(cfg)
        self.register_buffer("threshold", torch.full((cfg.d_sae,), UNSET, dtype=self.b_enc.dtype))

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        if self.training or bool((self.threshold < 0).all()):
            flat = pre.reshape(-1, pre.shape[-1])
            return (flat.relu() * feature_choice_mask(flat, self.cfg.k)).reshape(pre.shape)
        return pre * (pre > self.inference_threshold())

    def select(self, pre: torch.Tensor) -> Active:
        """The sparse path's pairs (``sae/sparse.py``): feature choice over the rows of every
        process (ties at a latent's smallest kept score all kept), or those above θ_i."""
        if self.training or bool((self.threshold < 0).all()):
            kept = feature_choice_thresholds(pre, self.cfg.k, self.across_ranks)
            # pre > 0 and pre ≥ kept in one comparison: ≥ the smallest positive float is > 0
            smallest = torch.zeros((), dtype=pre.dtype).nextafter(torch.ones((), dtype=pre.dtype))
            return Active.from_mask(above(pre, kept.clamp_min(smallest), or_equal=True))
        return Active.from_mask(pre > self.inference_threshold())

    def inference_threshold(self) -> torch.Tensor:
        """[d_sae] θ, +inf for latents whose θ was never estimated."""
        return self.threshold.masked_fill(self.threshold < 0, float("inf"))

    def penalties(self, out: SAEOutput, target: torch.Tensor, ctx: LossContext) -> Penalties:
        return zipf_penalties(self, self.cfg, out, target, ctx)

    @torch.no_grad()
    def update_state(self, out: SAEOutput, ctx: LossContext) -> None:
        """Fold each latent's smallest positive kept code of a training batch into its θ."""
        fold_threshold(self.threshold, ctx.across_ranks(out.codes.smallest_positive(), "min"))

    def export_state(self) -> dict[str, torch.Tensor]:
        """SAELens's JumpReLU layout. Once any θ is estimated, an unestimated one is written as
        +inf (never fires, as here); an SAE with none estimated keeps them unset (−1): its batch
        rule has no per-token form SAELens could compute."""
        state = super().export_state()
        if not bool((self.threshold < 0).all()):
            state["threshold"] = self.inference_threshold().contiguous()
        return state

    def import_state(self, state: dict[str, torch.Tensor]) -> None:
        """+inf thresholds are unestimated ones."""
        theta = state["threshold"]
        super().import_state({**state, "threshold": theta.masked_fill(theta.isinf(), UNSET)})
