"""Gated SAE (Rajamanoharan et al. 2024, "Improving Dictionary Learning with Gated Sparse
Autoencoders", arXiv 2404.16014).

Which latents fire and how strongly are estimated by two paths sharing W_enc (SAELens names):

    pre    = (x − b_dec) W_enc                                           [batch, d_sae]
    π_gate = pre + b_gate
    mag    = (x − b_dec)(W_enc ⊙ exp(r_mag)) + b_mag = exp(r_mag) ⊙ pre + b_mag
    f      = 1{π_gate > 0} ⊙ ReLU(mag)
    loss   = ‖x − x̂‖² + λ ‖ReLU(π_gate)‖₁ + ‖x − (ReLU(π_gate) sg(W_dec) + sg(b_dec))‖²

sg = stop-gradient: the auxiliary reconstruction trains the gate path only. Decoder rows are kept
at unit norm (as in the paper), so the L1 term needs no decoder-norm weights. There is no b_enc
(SAELens's GatedSAE has none either), so ``pre`` is the projection both paths share.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from monosemantic.sae.base import SAE, LossContext, Penalties, SAEOutput, squared_error
from monosemantic.sae.registry import register
from monosemantic.sae.relu import ReluConfig
from monosemantic.sae.sparse import Active, Encoding, above


@dataclass(kw_only=True)
class GatedConfig(ReluConfig):
    """λ weighs the L1 penalty on the gate."""

    architecture: ClassVar[str] = "gated"


@register
class GatedSAE(SAE):
    config_class = GatedConfig
    cfg: GatedConfig
    sweep_axes = {"sparsity_coefficient": "l"}
    unit_norm_decoder = True
    saelens_reads = ("gated",)

    def __init__(self, cfg: GatedConfig) -> None:
        super().__init__(cfg)
        del self.b_enc  # the gate and magnitude paths have their own biases
        zeros = torch.zeros(cfg.d_sae, dtype=self.W_enc.dtype)
        self.b_gate = nn.Parameter(zeros.clone())
        self.r_mag = nn.Parameter(zeros.clone())
        self.b_mag = nn.Parameter(zeros.clone())

    def latent_biases(self) -> list[nn.Parameter]:
        return [self.b_gate, self.r_mag, self.b_mag]

    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        """(x − b_dec) W_enc: [batch, d_in] -> [batch, d_sae], shared by both paths."""
        return self.centred(x) @ self.W_enc

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        """f = 1{pre + b_gate > 0} ⊙ ReLU(exp(r_mag) ⊙ pre + b_mag)."""
        magnitude = self.r_mag.exp() * pre + self.b_mag
        return (pre + self.b_gate > 0).to(pre.dtype) * magnitude.relu()

    def encoder_bias(self) -> None:
        return None

    def select(self, pre: torch.Tensor) -> Active | None:
        """For the sparse path (``sae/sparse.py``): the open gates, when few; f and the gate's
        ReLU are 0 elsewhere."""
        # pre > −b_gate, not pre + b_gate > 0: no [batch, d_sae] sum (under bf16 autocast a
        # mixed-dtype one took longer than the encoder's product)
        return Active.if_sparse(above(pre, -self.b_gate.detach()), self.sparse_density)

    def active_values(self, encoding: Encoding, active: Active) -> torch.Tensor:
        pre, latents = encoding.at(active), active.latents
        magnitude = self.r_mag.exp()[latents] * pre + self.b_mag[latents]
        return (pre + self.b_gate[latents] > 0).to(pre.dtype) * magnitude.relu()

    def penalties(self, out: SAEOutput, target: torch.Tensor, ctx: LossContext) -> Penalties:
        """``l1`` = ‖ReLU(π_gate)‖₁ weighted by λ, and ``aux`` (the target reconstructed by the
        gate path through a frozen decoder) weighted by 1; both averaged over the batch."""
        batch = out.pre.shape[0]
        if out.active is None:
            gate = (out.pre + self.b_gate).relu()
            l1, via_gate = gate.sum(-1).mean(), gate @ self.W_dec.detach()
        else:  # the open gates are the pairs
            pairs = out.active
            gate = (out.encoding.at(pairs) + self.b_gate[pairs.latents]).relu()
            l1 = gate.sum() / batch
            via_gate = out.encoding.decode(gate, pairs, self.W_dec.detach())
        via_gate = out.raw(via_gate + self.b_dec.detach())
        aux = squared_error(via_gate, target)
        return {"l1": (ctx.sparsity_scale * self.cfg.sparsity_coefficient, l1), "aux": (1.0, aux)}

    @classmethod
    def config_from_saelens(cls, raw: dict[str, Any]) -> dict[str, Any]:
        return {"sparsity_coefficient": float(raw.get("l1_coefficient", 0.0))}

    @classmethod
    def shift_encoder_bias(
        cls, weights: dict[str, torch.Tensor], shift: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Both paths read the shared projection: the gate bias takes the shift, the magnitude
        bias the shift scaled by exp(r_mag)."""
        return {
            **weights,
            "b_gate": weights["b_gate"] + shift,
            "b_mag": weights["b_mag"] + shift * weights["r_mag"].exp(),
        }
