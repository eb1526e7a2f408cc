"""Matryoshka BatchTopK SAE (Bussmann, Nabeshima, Karvonen, Nanda 2025, "Learning Multi-Level
Features with Matryoshka Sparse Autoencoders", arXiv 2503.17547; Nabeshima 2024).

The latents are ordered and nested: prefixes of widths w_1 < w_2 < … < w_L = d_sae each
reconstruct the input on their own, so the first latents must carry the most general features
(less feature absorption, slightly worse full reconstruction). Codes are BatchTopK's over the whole
dictionary; each prefix decodes from its own latents and b_dec:

    f      = BatchTopK_k(pre)                                   (sae/batchtopk.py)
    x̂_j    = f[:, :w_j] W_dec[:w_j] + b_dec
    loss   = Σ_j ‖x − x̂_j‖² + α · AuxK                          (AuxK on the full reconstruction)

as SAELens's ``matryoshka_batchtopk`` and dictionary_learning's trainer compute it (prefix losses
summed, unweighted, nothing detached between prefixes). The full reconstruction's term is the
objective's; the inner prefixes' sum is the ``prefix_mse`` penalty. Widths halve from d_sae down
``levels`` times (d_sae/8, d_sae/4, d_sae/2, d_sae for 4 levels) unless ``prefix_widths`` names
the inner ones. Inference and saving are BatchTopK's (a global threshold; SAELens ``jumprelu``).
Because that threshold acts on each latent alone, ``prefix(w)`` is a working SAE of the first w
latents: its codes are those latents' codes and its reconstruction is x̂ of that prefix.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from monosemantic.config import check
from monosemantic.sae.base import LossContext, Penalties, SAEConfig, SAEOutput, squared_error
from monosemantic.sae.batchtopk import BatchTopKConfig, BatchTopKSAE
from monosemantic.sae.registry import register
from monosemantic.sae.topk import TopKSAE, topk_penalties


@dataclass(kw_only=True)
class MatryoshkaConfig(BatchTopKConfig):
    """BatchTopK's fields and the nested prefixes."""

    architecture: ClassVar[str] = "matryoshka"
    levels: int = 4
    """Nested prefixes, each half the next: d_sae/2^(levels-1), ..., d_sae/2, d_sae."""
    prefix_widths: list[int] | None = None
    """The inner prefix widths, increasing and below d_sae (overrides levels); None: halving."""

    def validate(self) -> None:
        super().validate()
        check(
            self.levels > 0 and self.d_sae >> (self.levels - 1) > 0,
            "levels",
            self.levels,
            f"in 1..{self.d_sae.bit_length()} (halving d_sae={self.d_sae} that often leaves ≥ 1)",
        )
        if self.prefix_widths is not None:
            widths = [*self.prefix_widths, self.d_sae]
            check(
                all(0 < a < b for a, b in itertools.pairwise(widths)),
                "prefix_widths",
                self.prefix_widths,
                f"increasing positive widths below d_sae={self.d_sae}",
            )

    @property
    def widths(self) -> list[int]:
        """Every prefix's width, the last d_sae."""
        if self.prefix_widths is not None:
            return [*self.prefix_widths, self.d_sae]
        return [self.d_sae >> (self.levels - 1 - j) for j in range(self.levels)]


def prefix_reconstructions(
    codes: torch.Tensor, w_dec: torch.Tensor, b_dec: torch.Tensor, widths: list[int]
) -> list[torch.Tensor]:
    """codes [batch, d_sae] -> one reconstruction [batch, d_out] per width: x̂_j from the first
    widths[j] latents and b_dec, accumulated group by group (one full decode in all)."""
    out, running, start = [], b_dec.expand(codes.shape[0], -1), 0
    for width in widths:
        running = running + codes[:, start:width] @ w_dec[start:width]
        out.append(running)
        start = width
    return out


def sparse_prefix_reconstructions(
    out: SAEOutput, w_dec: torch.Tensor, b_dec: torch.Tensor, widths: list[int]
) -> list[torch.Tensor]:
    """``prefix_reconstructions`` of the sparse path's codes (``out.active``): each group of
    latents decoded from its own pairs only."""
    active, values = out.active, out.active_values
    assert active is not None and values is not None
    bounds = torch.tensor(widths, device=active.latents.device)
    group = torch.bucketize(active.latents, bounds, right=True)  # latents in [w_{g-1}, w_g): g
    recons, running = [], b_dec.expand(active.batch, -1)
    for g in range(len(widths)):
        keep = group == g
        running = running + out.encoding.decode(values[keep], active.subset(keep), w_dec)
        recons.append(running)
    return recons


@register
class MatryoshkaSAE(BatchTopKSAE):
    config_class = MatryoshkaConfig
    cfg: MatryoshkaConfig
    sweep_axes = {"k": "k", "levels": "lv"}
    saelens_reads: ClassVar[tuple[str, ...]] = ("matryoshka_batchtopk",)

    def penalties(self, out: SAEOutput, target: torch.Tensor, ctx: LossContext) -> Penalties:
        inner = self.cfg.widths[:-1]
        if out.active is None:
            recons = prefix_reconstructions(out.codes.dense(), self.W_dec, self.b_dec, inner)
        else:
            recons = sparse_prefix_reconstructions(out, self.W_dec, self.b_dec, inner)
        prefix = sum((squared_error(out.raw(r), target) for r in recons), target.new_zeros(()))
        return {"prefix_mse": (1.0, prefix), **topk_penalties(self, self.cfg, out, target, ctx)}

    def prefix(self, width: int) -> BatchTopKSAE:
        """The first ``width`` latents as a BatchTopK SAE with the same threshold (eval mode)."""
        cfg = self.cfg
        check(0 < width <= cfg.d_sae, "width", width, f"in 1..d_sae={cfg.d_sae}")
        names = ("d_in", "d_out", "dtype", "hook", "hook_out", "skip", "model")
        shared: dict[str, Any] = {f: getattr(cfg, f) for f in names}
        small = BatchTopKSAE(BatchTopKConfig(**shared, d_sae=width, k=min(cfg.k, width)))
        with torch.no_grad():
            small.W_enc.copy_(self.W_enc[:, :width])
            small.b_enc.copy_(self.b_enc[:width])
            small.W_dec.copy_(self.W_dec[:width])
            small.b_dec.copy_(self.b_dec)
            small.threshold.copy_(self.threshold)
            if self.W_skip is not None and small.W_skip is not None:
                small.W_skip.copy_(self.W_skip)
        return small.eval()

    @classmethod
    def config_from_saelens(cls, raw: dict[str, Any]) -> dict[str, Any]:
        """SAELens's ``matryoshka_widths`` (cumulative, usually ending at d_sae)."""
        widths = [int(w) for w in raw.get("matryoshka_widths") or []]
        inner = [w for w in widths if w < int(raw["d_sae"])]
        return {**TopKSAE.config_from_saelens(raw), "prefix_widths": inner or None}

    @classmethod
    def saelens_fields(cls, cfg: SAEConfig) -> dict[str, Any]:
        assert isinstance(cfg, MatryoshkaConfig)
        return {"matryoshka_widths": cfg.widths}
