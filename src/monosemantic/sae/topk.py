"""TopK SAE with the AuxK loss (Gao et al. 2024, "Scaling and evaluating sparse autoencoders",
arXiv 2406.04093).

    f     = ReLU(TopK_k((x − b_dec) W_enc + b_enc))      # keep the k largest, zero the rest
    loss  = ‖x − x̂‖² + α · AuxK,   α = aux_coefficient (1/32)
    AuxK  = ‖e − ê‖² / ‖e‖²,   e = x − x̂ (detached),  ê = TopK_{k_aux}(pre restricted to dead) W_dec

The unit-norm decoder is kept by the trainer (gradient projection + renormalisation). Training
takes the sparse path (``sae/sparse.py``): codes stay as (indices, values), and past the encoder's
forward product every product (the decoder, the encoder's gradients, b_dec's through W_enc, AuxK's)
reads only the k active (or k_aux dead) latents of each row; the gradients are the dense ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from monosemantic.config import check
from monosemantic.sae.base import (
    SAE,
    LossContext,
    Penalties,
    Reduce,
    SAEConfig,
    SAEOutput,
    local,
    squared_error,
)
from monosemantic.sae.registry import register
from monosemantic.sae.sparse import Active, Encoding


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


def auxk_loss(
    w_dec: torch.Tensor,
    pre: Encoding,
    residual: torch.Tensor,
    dead: torch.Tensor | None,
    aux_k: int,
    *,
    across_ranks: Reduce = local,
) -> torch.Tensor:
    """Reconstruct ``residual`` [batch, d_in] (target − x̂, detached) with the top ``aux_k`` dead
    latents of ``pre`` (a batch's ``Encoding``), normalised by ‖residual‖² (``residual_power``).
    Zero when no latent is dead."""
    if dead is None or not bool(dead.any()):
        return residual.new_zeros(())
    dead_latents = dead.nonzero().squeeze(-1)
    scores = pre.dense.detach()[:, dead_latents]  # the choice needs no gradient
    chosen = scores.topk(min(aux_k, dead_latents.numel()), dim=-1, sorted=False).indices
    active = Active.per_row(dead_latents[chosen], pre.dense.shape[-1])
    recon = pre.decode(pre.at(active).relu(), active, w_dec)
    error = squared_error(recon, residual)
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
        sae.W_dec, out.encoding, residual, ctx.dead, cfg.resolved_aux_k,
        across_ranks=ctx.across_ranks,
    )  # fmt: skip
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

    def select(self, pre: torch.Tensor) -> Active:
        """Each row's k largest pre-activations (the sparse path: ``sae/sparse.py``)."""
        return Active.per_row(pre.topk(self.cfg.k, dim=-1, sorted=False).indices, self.d_sae)

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
