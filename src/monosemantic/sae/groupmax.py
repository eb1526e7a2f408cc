"""GroupMax SAE (EleutherAI sparsify's ``activation="groupmax"``).

The latents are split into k contiguous groups of d_sae / k; each group keeps its largest
activation, so every input has exactly k (index, value) pairs, as with TopK, without a sort over
all latents:

    a     = ReLU((x − b_dec) W_enc + b_enc)                          [batch, d_sae]
    f_g   = max over group g of a,  at that group's arg-max latent    g = 1..k
    loss  = ‖x − x̂‖² + α · AuxK                                       (as TopK)

sparsify applies ReLU before the group max, as here; a group whose latents are all ≤ 0
contributes a 0. SAELens has no GroupMax, so folders keep the name ``groupmax``: ``load_sae``
reads them, sae-lens does not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from monosemantic.config import check
from monosemantic.sae.base import SAE, LossContext, Penalties, SAEOutput
from monosemantic.sae.registry import register
from monosemantic.sae.sparse import Active
from monosemantic.sae.topk import TopKConfig, topk_penalties


@dataclass(kw_only=True)
class GroupMaxConfig(TopKConfig):
    """TopK's fields; ``k`` is the number of groups and must divide d_sae."""

    architecture: ClassVar[str] = "groupmax"

    def validate(self) -> None:
        super().validate()
        check(self.d_sae % self.k == 0, "k", self.k, f"a divisor of d_sae={self.d_sae}")


def group_max(pre: torch.Tensor, groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[..., d_sae] -> (values, indices) [..., groups]: each contiguous group's largest ReLU(pre)
    and its latent's index."""
    values, within = pre.relu().unflatten(-1, (groups, -1)).max(dim=-1)
    size = pre.shape[-1] // groups
    offsets = torch.arange(0, pre.shape[-1], size, device=pre.device)
    return values, within + offsets


@register
class GroupMaxSAE(SAE):
    config_class = GroupMaxConfig
    cfg: GroupMaxConfig
    sweep_axes = {"k": "k"}
    unit_norm_decoder = True

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        values, indices = group_max(pre, self.cfg.k)
        return torch.zeros_like(pre).scatter(-1, indices, values)

    def select(self, pre: torch.Tensor) -> Active:
        """Each group's largest pre-activation (the sparse path: ``sae/sparse.py``)."""
        return Active.per_row(group_max(pre, self.cfg.k)[1], self.d_sae)

    def penalties(self, out: SAEOutput, target: torch.Tensor, ctx: LossContext) -> Penalties:
        return topk_penalties(self, self.cfg, out, target, ctx)
