"""ReLU SAE with a decoder-norm-weighted L1 penalty ("standard" in SAELens).

Bricken et al. 2023, "Towards Monosemanticity"; Cunningham et al. 2023, "Sparse Autoencoders Find
Highly Interpretable Features in Language Models" (arXiv 2309.08600).

    f     = ReLU((x − b_dec) W_enc + b_enc)
    loss  = ‖x − x̂‖² + λ Σ_i f_i ‖W_dec,i‖,   λ = sparsity_coefficient

Weighting each code by its decoder row's norm removes the incentive to shrink codes by growing
decoder rows, so the decoder is left unnormalised (``unit_norm_decoder = False``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from monosemantic.config import check
from monosemantic.sae.base import SAE, LossContext, Penalties, SAEConfig, SAEOutput
from monosemantic.sae.registry import register
from monosemantic.sae.sparse import Active, above


@dataclass(kw_only=True)
class ReluConfig(SAEConfig):
    architecture: ClassVar[str] = "standard"
    sparsity_coefficient: float = 0.0
    """λ: weight of the sparsity penalty (L1 for standard and gated, L0 for jumprelu)."""

    def validate(self) -> None:
        check(
            self.sparsity_coefficient >= 0,
            "sparsity_coefficient",
            self.sparsity_coefficient,
            ">= 0",
        )


@register
class ReluSAE(SAE):
    config_class = ReluConfig
    cfg: ReluConfig
    sweep_axes = {"sparsity_coefficient": "l"}
    saelens_reads: ClassVar[tuple[str, ...]] = ("standard", "transcoder", "skip_transcoder")

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        return pre.relu()

    def select(self, pre: torch.Tensor) -> Active | None:
        """The positive pre-activations, when few enough for the sparse path (``sae/sparse.py``);
        ``above`` compares their bits (bf16: 7 against 10 ms at [4096, 4608])."""
        return Active.if_sparse(above(pre, pre.new_zeros(())), self.sparse_density)

    def penalties(self, out: SAEOutput, target: torch.Tensor, ctx: LossContext) -> Penalties:
        """``l1`` = Σ_i f_i ‖W_dec,i‖ averaged over the batch, weighted by λ."""
        l1 = out.weighted_total(self.W_dec.norm(dim=1)) / out.pre.shape[0]
        return {"l1": (ctx.sparsity_scale * self.cfg.sparsity_coefficient, l1)}

    @classmethod
    def config_from_saelens(cls, raw: dict[str, Any]) -> dict[str, Any]:
        return {"sparsity_coefficient": float(raw.get("l1_coefficient", 0.0))}
