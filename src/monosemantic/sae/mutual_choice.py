"""Mutual Choice SAE (Ayonrinde 2024, "Adaptive Sparse Allocation with Mutual Choice & Feature
Choice Sparse Autoencoders", arXiv 2411.02124).

The sparsity budget k·N of a training batch is allocated freely between tokens and latents: the
global top k·N entries of the score matrix ReLU(pre) [N, d_sae] are kept (the selection BatchTopK
makes, found concurrently by Bussmann et al. 2024), and the auxiliary loss is aux_zipf_loss for
dead and under-used latents instead of AuxK:

    f     = ReLU(pre) on the k·N largest entries of the batch, 0 elsewhere
    loss  = ‖x − x̂‖² + α · aux_zipf_loss                                   (sae/aux_zipf.py)

Inference uses one global threshold θ, the running mean of the smallest kept activation, as
BatchTopK does (``sae/batchtopk.py``: our choice; the paper's inference section could not be read
here). Saved as SAELens's ``jumprelu`` with θ broadcast to [d_sae].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from monosemantic.sae.aux_zipf import zipf_penalties
from monosemantic.sae.base import LossContext, Penalties, SAEOutput
from monosemantic.sae.batchtopk import BatchTopKConfig, BatchTopKSAE
from monosemantic.sae.registry import register


@dataclass(kw_only=True)
class MutualChoiceConfig(BatchTopKConfig):
    """BatchTopK's fields; ``aux_coefficient`` weighs aux_zipf_loss."""

    architecture: ClassVar[str] = "mutual_choice"


@register
class MutualChoiceSAE(BatchTopKSAE):
    config_class = MutualChoiceConfig
    cfg: MutualChoiceConfig
    saelens_reads: ClassVar[tuple[str, ...]] = ()

    def penalties(self, out: SAEOutput, target: torch.Tensor, ctx: LossContext) -> Penalties:
        return zipf_penalties(self, self.cfg, out, target, ctx)
