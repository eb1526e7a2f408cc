"""TopK SAE with the AuxK loss (Gao et al. 2024, "Scaling and evaluating sparse autoencoders",
arXiv 2406.04093).

    f     = ReLU(TopK_k((x − b_dec) W_enc + b_enc))      # keep the k largest, zero the rest
    loss  = ‖x − x̂‖² + α · AuxK,   α = aux_coefficient (1/32)
    AuxK  = ‖e − ê‖² / ‖e‖²,   e = x − x̂ (detached),  ê = TopK_{k_aux}(pre restricted to dead) W_dec

The unit-norm decoder is kept by the trainer (gradient projection + renormalisation). Decoding
gathers only the k active decoder rows (``sparse_decode``), so the decoder costs batch·k·d_in
instead of batch·d_sae·d_in in both directions; the gradients are those of the dense product.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from monosemantic.config import check
from monosemantic.sae.base import SAE, LossContext, SAEConfig, SAEOutput, default_aux_k


def topk_codes(pre: torch.Tensor, k: int) -> torch.Tensor:
    """[batch, d_sae] -> same shape with all but the k largest entries per row zeroed, ReLU'd."""
    values, indices = pre.topk(k, dim=-1, sorted=False)
    return torch.zeros_like(pre).scatter(-1, indices, values.relu())


def sparse_decode(values: torch.Tensor, indices: torch.Tensor, w_dec: torch.Tensor) -> torch.Tensor:
    """Σ_j values[:, j] · w_dec[indices[:, j]]: values, indices [batch, k] -> [batch, d_in]."""
    return F.embedding_bag(indices, w_dec, per_sample_weights=values, mode="sum")


def auxk_loss(sae: SAE, x: torch.Tensor, out: SAEOutput, dead: torch.Tensor | None) -> torch.Tensor:
    """Reconstruct the residual x − x̂ with the top k_aux dead latents, normalised by ‖e‖².

    Zero when no latent is dead. x: [batch, d_in]; dead: [d_sae] bool.
    """
    if dead is None or not bool(dead.any()):
        return x.new_zeros(())
    k_aux = min(default_aux_k(sae.cfg), int(dead.sum()))
    residual = (x - out.x_hat).detach()
    values, indices = out.pre.masked_fill(~dead, float("-inf")).topk(k_aux, dim=-1, sorted=False)
    recon = sparse_decode(values.relu(), indices, sae.W_dec)
    return (recon - residual).pow(2).sum(-1).mean() / residual.pow(2).sum(-1).mean().clamp_min(
        1e-12
    )


class TopKSAE(SAE):
    architecture = "topk"
    unit_norm_decoder = True

    @classmethod
    def validate(cls, cfg: SAEConfig) -> None:
        check(cfg.k is not None, "k", cfg.k, "an integer number of active latents for topk")

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        assert self.cfg.k is not None
        return topk_codes(pre, self.cfg.k)

    def forward_full(self, x: torch.Tensor) -> SAEOutput:
        """As the base class, with the reconstruction decoded from the k active latents only."""
        assert self.cfg.k is not None
        self.check_input(x)
        pre = self.pre_acts(x)
        values, indices = pre.topk(self.cfg.k, dim=-1, sorted=False)
        values = values.relu()
        f = torch.zeros_like(pre).scatter(-1, indices, values)
        x_hat = sparse_decode(values, indices, self.W_dec) + self.b_dec
        return SAEOutput(x_hat=x_hat, f=f, pre=pre)

    def loss(self, x: torch.Tensor, out: SAEOutput, ctx: LossContext) -> dict[str, torch.Tensor]:
        terms = super().loss(x, out, ctx)
        aux = auxk_loss(self, x, out, ctx.dead)
        terms["auxk"] = aux
        terms["loss"] = terms["mse"] + self.cfg.aux_coefficient * aux
        return terms
