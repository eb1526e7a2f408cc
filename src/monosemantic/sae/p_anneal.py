"""p-annealing (Karvonen et al. 2024, "Measuring Progress in Dictionary Learning for Language
Model Interpretability with Board Game Models", arXiv 2408.00113; dictionary_learning's
``PAnnealTrainer``).

A ReLU SAE whose sparsity penalty is an Lp norm with p falling from ``p_start`` towards
``p_end``: L1 early, when it trains well, then closer to L0, which shrinks codes less.

    f     = ReLU((x − b_dec) W_enc + b_enc)          decoder rows kept at unit norm
    S_p   = mean over the batch of (Σ_i f_i^p)^(1/p)
    loss  = ‖x − x̂‖² + λ · s · S_p

p takes ``p_updates`` evenly spaced values from p_start to p_end, changing at evenly spaced steps
from ``anneal_start`` (a fraction of the run) to the last step. At each change the factor s is
multiplied by mean S_p / mean S_p' over the last 10 batches (p' the next value, both measured
on each batch's codes), so λ·s·S stays continuous as p moves, as dictionary_learning rescales its
coefficient. Unlike dictionary_learning, whose last p value is never reached when the anneal ends
at the final step, the last step here trains at p_end. s and the recent S values are training
state (checkpointed, not saved with the dictionary). Saved as SAELens's ``standard``: at
inference it is a ReLU SAE.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from monosemantic.config import check
from monosemantic.sae.base import LossContext, Penalties, SAEOutput
from monosemantic.sae.registry import register
from monosemantic.sae.relu import ReluConfig, ReluSAE

RECENT = 10
"""Batches over which S_p and S_p' are averaged for the rescaling."""


@dataclass(kw_only=True)
class PAnnealConfig(ReluConfig):
    """λ weighs the Lp penalty."""

    architecture: ClassVar[str] = "p_anneal"
    p_start: float = 1.0
    """p of the Lp penalty before annealing."""
    p_end: float = 0.2
    """p at the last step."""
    anneal_start: float = 0.5
    """Fraction of the run's steps after which p starts to fall."""
    p_updates: int = 10
    """Number of p values from p_start to p_end, each held for an equal share of the anneal."""

    def validate(self) -> None:
        super().validate()
        check(
            0 < self.p_end <= self.p_start, "p_end", self.p_end, f"in (0, p_start={self.p_start}]"
        )
        check(0 <= self.anneal_start < 1, "anneal_start", self.anneal_start, "in [0, 1)")
        check(self.p_updates >= 2, "p_updates", self.p_updates, "an integer >= 2")

    def schedule(self, steps: int) -> tuple[list[int], list[float]]:
        """The steps at which p changes and the values it takes (``p_updates`` of each)."""
        n = self.p_updates
        first = int(self.anneal_start * steps)
        at = torch.linspace(first, max(first, steps - 1), n).round().long().tolist()
        return at, torch.linspace(self.p_start, self.p_end, n, dtype=torch.float64).tolist()

    def p_at(self, step: int, steps: int) -> tuple[float, float]:
        """(p, the next p) in force at ``step`` of ``steps``."""
        at, values = self.schedule(steps)
        k = sum(s <= step for s in at) - 1
        p = self.p_start if k < 0 else values[k]
        return p, values[min(k + 1, len(values) - 1)]


def powered(values: torch.Tensor, p: float) -> torch.Tensor:
    """values ≥ 0 to the power p, 0^p read as 0 with gradient 0 (not p·0^(p−1))."""
    positive = values > 0
    return torch.where(positive, torch.where(positive, values, 1.0).pow(p), 0.0)


def lp_penalty(codes: torch.Tensor, p: float) -> torch.Tensor:
    """Codes ≥ 0 [batch, d_sae], or each row's pairs (``Codes.values``: zeros add nothing) ->
    mean over rows of (Σ_i f_i^p)^(1/p)."""
    return powered(codes, p).sum(-1).pow(1.0 / p).mean()


def output_lp(out: SAEOutput, p: float, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``lp_penalty`` of a training step's codes (in ``dtype``, default theirs): over the pairs
    on the sparse path, not over rows padded to the longest one."""
    if out.active is None or out.active_values is None:
        return lp_penalty(out.codes.values.to(dtype), p)
    terms = powered(out.active_values.to(dtype), p)
    per_row = terms.new_zeros(out.active.batch).index_add(0, out.active.rows, terms)
    return per_row.pow(1.0 / p).mean()


@register
class PAnnealSAE(ReluSAE):
    config_class = PAnnealConfig
    cfg: PAnnealConfig
    unit_norm_decoder = True
    saelens_architecture = "standard"
    saelens_reads: ClassVar[tuple[str, ...]] = ()

    def __init__(self, cfg: PAnnealConfig) -> None:
        super().__init__(cfg)
        self.scale = torch.ones((), dtype=torch.float64)
        self.recent = torch.zeros(RECENT, 2, dtype=torch.float64)
        self.recorded = torch.zeros((), dtype=torch.long)

    def penalties(self, out: SAEOutput, target: torch.Tensor, ctx: LossContext) -> Penalties:
        """``lp`` = S_p at the step's p, weighted by λ·s (and the sparsity warmup)."""
        p, _ = self.cfg.p_at(ctx.step, ctx.steps)
        weight = ctx.sparsity_scale * self.cfg.sparsity_coefficient * float(self.scale)
        return {"lp": (weight, output_lp(out, p))}

    @torch.no_grad()
    def update_state(self, out: SAEOutput, ctx: LossContext) -> None:
        """Record S_p and S_p' of this batch; before a change of p, rescale s."""
        p, following = self.cfg.p_at(ctx.step, ctx.steps)
        self.recent = torch.roll(self.recent, -1, dims=0)
        both = torch.stack([output_lp(out, q, torch.float64) for q in (p, following)])
        self.recent[-1] = ctx.across_ranks(both, "mean")
        self.recorded += 1
        coming, _ = self.cfg.p_at(ctx.step + 1, ctx.steps)
        if coming != p:
            recent = self.recent[-min(int(self.recorded), RECENT) :]
            self.scale *= recent[:, 0].mean() / recent[:, 1].mean().clamp_min(1e-12)

    def training_state(self) -> dict[str, torch.Tensor]:
        return {"scale": self.scale, "recent": self.recent, "recorded": self.recorded}

    def load_training_state(self, state: dict[str, torch.Tensor]) -> None:
        self.scale = state["scale"].clone()
        self.recent = state["recent"].clone()
        self.recorded = state["recorded"].clone()
