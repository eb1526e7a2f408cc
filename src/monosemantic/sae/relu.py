"""ReLU SAE with a decoder-norm-weighted L1 penalty ("standard" in SAELens).

Bricken et al. 2023, "Towards Monosemanticity"; Cunningham et al. 2023, "Sparse Autoencoders Find
Highly Interpretable Features in Language Models" (arXiv 2309.08600).

    f     = ReLU((x − b_dec) W_enc + b_enc)
    loss  = ‖x − x̂‖² + λ Σ_i f_i ‖W_dec,i‖,   λ = sparsity_coefficient

Weighting each code by its decoder row's norm removes the incentive to shrink codes by growing
decoder rows, so the decoder is left unnormalised (``unit_norm_decoder = False``).
"""

from __future__ import annotations

import torch

from monosemantic.sae.base import SAE, LossContext, SAEOutput


class ReluSAE(SAE):
    architecture = "standard"
    unit_norm_decoder = False

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        return pre.relu()

    def loss(self, x: torch.Tensor, out: SAEOutput, ctx: LossContext) -> dict[str, torch.Tensor]:
        """Adds ``l1`` = Σ_i f_i ‖W_dec,i‖ averaged over the batch; ``loss`` = mse + λ·l1."""
        terms = super().loss(x, out, ctx)
        l1 = (out.f * self.W_dec.norm(dim=1)).sum(-1).mean()
        terms["l1"] = l1
        terms["loss"] = terms["mse"] + ctx.sparsity_coefficient * l1
        return terms
