"""BatchTopK SAE (Bussmann, Leask, Nanda 2024, "BatchTopK Sparse Autoencoders", arXiv 2412.06410).

Training mode (``sae.train()``): the sparsity budget is shared across the batch,

    pre   = (x − b_dec) W_enc + b_enc                                   [batch, d_sae]
    f     = ReLU(pre) on the batch·k largest entries of ReLU(pre) over the whole batch, 0 elsewhere

so a row may use more or fewer than k latents but the batch uses batch·k in total.

Inference (``sae.eval()``): a single global threshold θ makes each row independent,

    f     = pre · 1{pre > θ}

θ (buffer ``threshold``, a scalar) is an exponential moving average, decay 0.99 per training step,
of the smallest positive kept activation of each training batch; the first batch sets it. Until it
has been estimated (θ < 0) inference falls back to batch top-k.

    loss  = ‖x − x̂‖² + α · AuxK      (as TopK, Gao et al. 2024)

SAELens saves trained BatchTopK SAEs as JumpReLU with θ broadcast to [d_sae]; ``io`` does the same.
"""

from __future__ import annotations

import torch

from monosemantic.config import check
from monosemantic.sae.base import SAE, LossContext, SAEConfig, SAEOutput
from monosemantic.sae.topk import TopKSAE

THRESHOLD_DECAY = 0.99
UNSET = -1.0
"""θ before the first training step: inference then uses batch top-k."""


def batch_topk_codes(pre: torch.Tensor, k: int) -> torch.Tensor:
    """[..., d_sae] -> same shape keeping the k·(rows) largest entries of ReLU(pre) overall."""
    acts = pre.relu()
    flat = acts.flatten()
    rows = flat.numel() // pre.shape[-1]
    values, indices = flat.topk(k * rows, sorted=False)
    return torch.zeros_like(flat).scatter(0, indices, values).reshape(pre.shape)


class BatchTopKSAE(TopKSAE):
    """TopK's losses and unit-norm decoder; only the sparsity function and θ differ."""

    architecture = "batchtopk"
    saelens_architecture = "jumprelu"
    threshold: torch.Tensor

    def __init__(self, cfg: SAEConfig) -> None:
        super().__init__(cfg)
        self.register_buffer("threshold", torch.tensor(UNSET, dtype=self.b_enc.dtype))

    @classmethod
    def validate(cls, cfg: SAEConfig) -> None:
        check(
            cfg.k is not None, "k", cfg.k, "an integer mean number of active latents for batchtopk"
        )

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        assert self.cfg.k is not None
        if self.training or bool(self.threshold < 0):
            return batch_topk_codes(pre, self.cfg.k)
        return pre * (pre > self.threshold)

    def forward_full(self, x: torch.Tensor) -> SAEOutput:
        """The base class's dense path: the number of active latents varies from row to row."""
        return SAE.forward_full(self, x)

    @torch.no_grad()
    def update_threshold(self, f: torch.Tensor) -> None:
        """Fold the smallest positive code of a training batch f: [batch, d_sae] into θ."""
        kept = f[f > 0]
        if kept.numel() == 0:
            return
        smallest = kept.min().to(self.threshold.dtype)
        if bool(self.threshold < 0):
            self.threshold.copy_(smallest)
        else:
            self.threshold.lerp_(smallest, 1.0 - THRESHOLD_DECAY)

    def loss(self, x: torch.Tensor, out: SAEOutput, ctx: LossContext) -> dict[str, torch.Tensor]:
        """mse + α·AuxK. In training mode also updates θ: the trainer calls this once per step."""
        if self.training:
            self.update_threshold(out.f)
        return super().loss(x, out, ctx)

    def export_state(self) -> dict[str, torch.Tensor]:
        """SAELens's JumpReLU layout: θ broadcast to [d_sae]."""
        state = super().export_state()
        state["threshold"] = self.threshold.expand(self.d_sae).contiguous()
        return state

    def import_state(self, state: dict[str, torch.Tensor]) -> None:
        """Accepts θ as a scalar or as [d_sae] equal values (a JumpReLU-format folder)."""
        state = dict(state)
        theta = state["threshold"].flatten()
        if theta.numel() > 1 and not bool((theta == theta[0]).all()):
            raise ValueError(
                "a BatchTopK SAE has one global threshold but these weights hold per-latent "
                f"thresholds (min {theta.min().item():.4g}, max {theta.max().item():.4g}); "
                "load them as architecture 'jumprelu'"
            )
        state["threshold"] = theta[0].clone()
        super().import_state(state)
