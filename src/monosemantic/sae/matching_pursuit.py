"""Matching Pursuit SAE (Costa et al. 2025, "From Flat to Hierarchical: Extracting Sparse
Representations with Matching Pursuit", arXiv 2506.03093; SAELens's ``matching_pursuit``).

No encoder: codes come from greedy pursuit over the (unit-norm) decoder rows d_i, starting from
the centred input,

    r_0 = x − b_dec,  f = 0
    for t = 1 .. k:
        i_t = argmax_i ReLU(⟨r_{t−1}, d_i⟩)        the atom most aligned with the residual
        v_t = ReLU(⟨r_{t−1}, d_{i_t}⟩)             its coefficient (rows have unit norm)
        f_{i_t} += v_t;   r_t = r_{t−1} − v_t d_{i_t}
        stop a row when its support did not change (``stop_on_duplicate_support``) or
        ‖r_t‖ < ``residual_threshold``
    x̂ = f W_dec + b_dec,   loss = ‖x − x̂‖² (no sparsity penalty: k bounds L0)

as SAELens computes it; each step leaves r_t orthogonal to d_{i_t}. Gradients flow through the
chosen rows and coefficients, not through the argmax. Cost: k products of the residual with the
whole decoder, so a step costs about k times a TopK encoder's (measured in docs/benchmarks.md).
``W_enc`` is W_decᵀ (read-only), there is no b_enc, and a folder holds W_dec and b_dec only, as
SAELens writes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from monosemantic.config import check
from monosemantic.sae.base import SAE, Codes, SAEConfig, SAEOutput
from monosemantic.sae.registry import register


@dataclass(kw_only=True)
class MatchingPursuitConfig(SAEConfig):
    architecture: ClassVar[str] = "matching_pursuit"
    k: int = 32
    """Pursuit steps per input: at most k latents fire (SAELens's max_iterations)."""
    residual_threshold: float = 1e-2
    """Stop a row once its residual norm is below this (0: never)."""
    stop_on_duplicate_support: bool = True
    """Stop a row once a step picks an atom it already uses."""

    def validate(self) -> None:
        check(self.k > 0, "k", self.k, "a positive integer")
        check(self.residual_threshold >= 0, "residual_threshold", self.residual_threshold, ">= 0")
        check(
            not self.transcoder,
            "hook_out",
            self.hook_out,
            "empty: matching pursuit searches its decoder for the input itself, so it cannot "
            "map one hook point to another; use a TopK transcoder (--architecture topk)",
        )
        check(not self.standardize, "standardize", self.standardize, "False for matching pursuit")


def matching_pursuit(
    centred: torch.Tensor,
    w_dec: torch.Tensor,
    steps: int,
    residual_threshold: float,
    stop_on_duplicate_support: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """centred [batch, d_in] (x − b_dec), w_dec [d_sae, d_in] -> (codes [batch, d_sae],
    residual [batch, d_in]); see the module docstring."""
    residual = centred
    codes = centred.new_zeros(centred.shape[0], w_dec.shape[0])
    done = torch.zeros(centred.shape[0], dtype=torch.bool, device=centred.device)
    support = torch.zeros_like(codes, dtype=torch.bool)
    for _ in range(steps):
        with torch.no_grad():
            chosen = (residual @ w_dec.T).relu().argmax(dim=-1)
        atoms = w_dec[chosen]  # [batch, d_in]
        value = (residual * atoms).sum(-1, keepdim=True).relu() * ~done[:, None]
        codes = codes.scatter_add(1, chosen[:, None], value)
        residual = residual - value * atoms
        with torch.no_grad():
            if stop_on_duplicate_support:
                now = codes != 0
                done |= (now == support).all(-1)
                support = now
            if residual_threshold > 0:
                done |= residual.norm(dim=-1) < residual_threshold
            if bool(done.all()):
                break
    return codes, residual


@register
class MatchingPursuitSAE(SAE):
    config_class = MatchingPursuitConfig
    cfg: MatchingPursuitConfig
    sweep_axes = {"k": "k"}
    unit_norm_decoder = True
    saelens_reads: ClassVar[tuple[str, ...]] = ("matching_pursuit",)

    def init_encoder(self, directions: torch.Tensor) -> None:
        """None: the decoder is the dictionary searched."""

    @property
    def W_enc(self) -> torch.Tensor:  # type: ignore[override]
        """W_decᵀ [d_in, d_sae]: the inner products the pursuit starts from."""
        return self.W_dec.T

    def latent_biases(self) -> list[torch.nn.Parameter]:
        return []

    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        """The first step's scores ⟨x − b_dec, d_i⟩ [batch, d_sae]."""
        return (x - self.b_dec) @ self.W_dec.T

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        raise TypeError("matching pursuit encodes from x (sae.encode), not from pre-activations")

    def pursue(self, x: torch.Tensor) -> torch.Tensor:
        """[batch, d_in] -> codes [batch, d_sae]."""
        cfg = self.cfg
        codes, _ = matching_pursuit(
            x - self.b_dec, self.W_dec, cfg.k, cfg.residual_threshold, cfg.stop_on_duplicate_support
        )
        return codes

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        shape = x.shape
        return self.pursue(x.reshape(-1, shape[-1])).reshape(*shape[:-1], self.d_sae)

    def autoencode(self, x: torch.Tensor) -> SAEOutput:
        codes = self.pursue(x)
        return SAEOutput(x_hat=self.decode(codes), codes=Codes(codes), pre=self.pre_acts(x))

    @torch.no_grad()
    def fold_input_scale(self, scale: float, out_scale: float | None = None) -> None:
        """Pursuit is homogeneous: codes of s·x are s times those of x. So on raw x it runs with
        b_dec/s and residual_threshold/s, and its codes are the trained codes divided by s."""
        self.b_dec.div_(scale)
        self.cfg.residual_threshold /= scale

    @classmethod
    def saelens_fields(cls, cfg: SAEConfig) -> dict[str, Any]:
        assert isinstance(cfg, MatchingPursuitConfig)
        return {
            "max_iterations": cfg.k,
            "residual_threshold": cfg.residual_threshold,
            "stop_on_duplicate_support": cfg.stop_on_duplicate_support,
        }

    @classmethod
    def config_from_saelens(cls, raw: dict[str, Any]) -> dict[str, Any]:
        return {
            "k": int(raw.get("max_iterations") or raw["d_in"]),
            "residual_threshold": float(raw.get("residual_threshold", 1e-2)),
            "stop_on_duplicate_support": bool(raw.get("stop_on_duplicate_support", True)),
        }

    @classmethod
    def shift_encoder_bias(
        cls, weights: dict[str, torch.Tensor], shift: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        raise ValueError(
            "a matching-pursuit folder with apply_b_dec_to_input=False has no encoder bias to "
            "fold b_dec into; save it from SAELens with apply_b_dec_to_input=True"
        )
