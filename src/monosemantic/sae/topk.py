"""TopK SAE with the AuxK loss (Gao et al. 2024, "Scaling and evaluating sparse autoencoders",
arXiv 2406.04093).

    f     = ReLU(TopK_k((x − b_dec) W_enc + b_enc))      # keep the k largest, zero the rest
    loss  = ‖x − x̂‖² + α · AuxK,   α = aux_coefficient (1/32)
    AuxK  = ‖e − ê‖² / ‖e‖²,   e = x − x̂ (detached),  ê = TopK_{k_aux}(pre restricted to dead) W_dec

The unit-norm decoder is kept by the trainer (gradient projection + renormalisation). Codes stay
as (indices, values) and decoding gathers only the k active decoder rows (``sparse_decode``), so
the decoder costs batch·k·d_in instead of batch·d_sae·d_in in both directions; the gradients are
those of the dense product.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from monosemantic.config import check
from monosemantic.sae.base import (
    SAE,
    Codes,
    LossContext,
    Penalties,
    Reduce,
    SAEConfig,
    SAEOutput,
    local,
)
from monosemantic.sae.registry import register


@dataclass(kw_only=True)
class TopKConfig(SAEConfig):
    architecture: ClassVar[str] = "topk"
    k: int = 32
    """Active latents per input (topk; the mean per input for batchtopk)."""
    aux_k: int | None = None
    """Dead latents used by the AuxK loss; None: d_in // 2."""
    aux_coefficient: float = 1 / 32
    """Weight of the AuxK loss."""

    def validate(self) -> None:
        check(0 < self.k <= self.d_sae, "k", self.k, f"in 1..d_sae={self.d_sae}")
        if self.aux_k is not None:
            check(self.aux_k > 0, "aux_k", self.aux_k, "a positive integer or None")
        check(self.aux_coefficient >= 0, "aux_coefficient", self.aux_coefficient, ">= 0")

    @property
    def resolved_aux_k(self) -> int:
        return self.aux_k if self.aux_k is not None else min(self.d_sae, max(1, self.d_in // 2))


def sparse_decode(values: torch.Tensor, indices: torch.Tensor, w_dec: torch.Tensor) -> torch.Tensor:
    """Σ_j values[:, j] · w_dec[indices[:, j]]: values, indices [batch, k] -> [batch, d_in]."""
    return F.embedding_bag(indices, w_dec, per_sample_weights=values, mode="sum")


def auxk_loss(
    w_dec: torch.Tensor,
    pre: torch.Tensor,
    residual: torch.Tensor,
    dead: torch.Tensor | None,
    aux_k: int,
    *,
    across_ranks: Reduce = local,
) -> torch.Tensor:
    """Reconstruct ``residual`` [batch, d_in] (target − x̂, detached) with the top ``aux_k`` dead
    latents of ``pre`` [batch, d_sae], normalised by ‖residual‖² (``residual_power``). Zero when
    no latent is dead."""
    if dead is None or not bool(dead.any()):
        return residual.new_zeros(())
    k_aux = min(aux_k, int(dead.sum()))
    values, indices = pre.masked_fill(~dead, float("-inf")).topk(k_aux, dim=-1, sorted=False)
    recon = sparse_decode(values.relu(), indices, w_dec)
    error = (recon - residual).pow(2).sum(-1).mean()
    return error / residual_power(residual, across_ranks)


def residual_power(residual: torch.Tensor, across_ranks: Reduce = local) -> torch.Tensor:
    """Mean ‖residual‖² over the whole batch (every data-parallel process's rows, so a
    process's share of the loss has the global normaliser): the auxiliary losses' scale."""
    return across_ranks(residual.pow(2).sum(-1).mean(), "mean").clamp_min(1e-12)


def topk_penalties(
    sae: SAE, cfg: TopKConfig, out: SAEOutput, target: torch.Tensor, ctx: LossContext
) -> Penalties:
    """AuxK, weighted by ``aux_coefficient``: shared by TopK and BatchTopK."""
    residual = ((target - out.x_hat) / out.scale).detach()  # in the decoder's units
    aux = auxk_loss(
        sae.W_dec, out.pre, residual, ctx.dead, cfg.resolved_aux_k, across_ranks=ctx.across_ranks
    )
    return {"auxk": (cfg.aux_coefficient, aux)}


@register
class TopKSAE(SAE):
    config_class = TopKConfig
    cfg: TopKConfig
    sweep_axes = {"k": "k"}
    unit_norm_decoder = True
    saelens_reads = ("topk",)

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        values, indices = pre.topk(self.cfg.k, dim=-1, sorted=False)
        return torch.zeros_like(pre).scatter(-1, indices, values.relu())

    def autoencode(self, x: torch.Tensor) -> SAEOutput:
        """Codes as (indices, values); the reconstruction decoded from the k active rows."""
        pre = self.pre_acts(x)
        values, indices = pre.topk(self.cfg.k, dim=-1, sorted=False)
        values = values.relu()
        x_hat = sparse_decode(values, indices, self.W_dec) + self.b_dec
        return SAEOutput(x_hat=x_hat, codes=Codes(values, indices, self.d_sae), pre=pre)

    def penalties(self, out: SAEOutput, target: torch.Tensor, ctx: LossContext) -> Penalties:
        return topk_penalties(self, self.cfg, out, target, ctx)

    @classmethod
    def saelens_fields(cls, cfg: SAEConfig) -> dict[str, Any]:
        assert isinstance(cfg, TopKConfig)
        return {"k": cfg.k, "rescale_acts_by_decoder_norm": False}

    @classmethod
    def config_from_saelens(cls, raw: dict[str, Any]) -> dict[str, Any]:
        k = raw.get("k")
        if k is None or k != int(k):
            raise ValueError(f"k={k!r}: only an integer k is supported")
        return {"k": int(k)}
