"""JumpReLU SAE (Rajamanoharan et al. 2024, "Jumping Ahead: Improving Reconstruction Fidelity with
JumpReLU Sparse Autoencoders", arXiv 2407.14435).

    pre   = (x − b_dec) W_enc + b_enc
    f     = pre ⊙ H(pre − θ),   θ = exp(log_threshold) > 0 per latent
    loss  = ‖x − x̂‖² + λ Σ_i H(pre_i − θ_i),   λ = sparsity_coefficient           ("step")

or, with ``jumprelu_sparsity_loss="tanh"`` (SAELens's ``jumprelu_sparsity_loss_mode="tanh"``,
after Anthropic's 2025 training update), a smooth count of the decoder-norm-weighted codes, with
an optional pre-activation penalty that pulls dead latents up to their thresholds:

    loss  = ‖x − x̂‖² + λ Σ_i tanh(c · f_i ‖W_dec,i‖) + μ Σ_{i dead} ReLU(θ_i − pre_i) ‖W_dec,i‖

c = ``jumprelu_tanh_scale`` (4), μ = ``pre_act_loss_coefficient`` (0: off; SAELens suggests
3e-6), sums averaged over the batch; f's gradient reaches θ through the estimator below.

H has no useful derivative, so both functions get straight-through pseudo-derivatives with the
rectangle kernel K(u) = 1{|u| < ½} and bandwidth ε = ``jumprelu_bandwidth``:

    ∂f/∂pre = H(pre − θ)      ∂f/∂θ = −(θ/ε) K((pre − θ)/ε)
    ∂H/∂pre = 0               ∂H/∂θ = −(1/ε) K((pre − θ)/ε)

θ is trained through log θ (chain rule ∂/∂log θ = θ ∂/∂θ), which keeps it positive. The L0
penalty does not fix the scale of the codes, so decoder rows are kept at unit norm. Saved as
SAELens's ``threshold`` (θ itself).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from monosemantic.config import check
from monosemantic.sae.base import SAE, LossContext, Penalties, SAEOutput
from monosemantic.sae.registry import register
from monosemantic.sae.relu import ReluConfig
from monosemantic.sae.sparse import Active, Encoding, above, sparse_enough


def rectangle(u: torch.Tensor) -> torch.Tensor:
    """K(u) = 1{|u| < ½}, in u's dtype."""
    return (u.abs() < 0.5).to(u.dtype)


class JumpReLUFunction(torch.autograd.Function):
    """f = pre ⊙ H(pre − θ). pre: [..., d_sae], θ: [d_sae]; see the module docstring."""

    @staticmethod
    def forward(ctx: Any, pre: torch.Tensor, theta: torch.Tensor, bandwidth: float) -> torch.Tensor:
        ctx.save_for_backward(pre, theta)
        ctx.bandwidth = bandwidth
        return pre * (pre > theta).to(pre.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        pre, theta = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_pre = grad * (pre > theta).to(grad.dtype)
        grad_theta = -(theta / eps) * rectangle((pre - theta) / eps) * grad
        return grad_pre, grad_theta.sum_to_size(theta.shape), None


class HeavisideFunction(torch.autograd.Function):
    """H(pre − θ) with ∂H/∂pre = 0 and the rectangle-kernel estimate of ∂H/∂θ."""

    @staticmethod
    def forward(ctx: Any, pre: torch.Tensor, theta: torch.Tensor, bandwidth: float) -> torch.Tensor:
        ctx.save_for_backward(pre, theta)
        ctx.bandwidth = bandwidth
        return (pre > theta).to(pre.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, torch.Tensor, None]:
        pre, theta = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_theta = -(1.0 / eps) * rectangle((pre - theta) / eps) * grad
        return None, grad_theta.sum_to_size(theta.shape), None


def jumprelu(pre: torch.Tensor, theta: torch.Tensor, bandwidth: float) -> torch.Tensor:
    out: torch.Tensor = JumpReLUFunction.apply(pre, theta, bandwidth)
    return out


def heaviside(pre: torch.Tensor, theta: torch.Tensor, bandwidth: float) -> torch.Tensor:
    out: torch.Tensor = HeavisideFunction.apply(pre, theta, bandwidth)
    return out


SPARSITY_LOSSES = ("step", "tanh")


@dataclass(kw_only=True)
class JumpReLUConfig(ReluConfig):
    """λ weighs the L0 penalty."""

    architecture: ClassVar[str] = "jumprelu"
    jumprelu_bandwidth: float = 1e-3
    """ε of the rectangle kernel in JumpReLU's straight-through estimators."""
    jumprelu_init_threshold: float = 1e-3
    """θ of every latent before training."""
    jumprelu_sparsity_loss: str = "step"
    """step: λ·L0 through the Heaviside estimator; tanh: λ·Σ tanh(c·f·‖W_dec‖) (SAELens)."""
    jumprelu_tanh_scale: float = 4.0
    """c of the tanh sparsity loss."""
    pre_act_loss_coefficient: float = 0.0
    """μ: weight of Σ_dead ReLU(θ − pre)·‖W_dec‖, which revives dead latents (0: off)."""

    def validate(self) -> None:
        super().validate()
        check(
            self.jumprelu_sparsity_loss in SPARSITY_LOSSES,
            "jumprelu_sparsity_loss",
            self.jumprelu_sparsity_loss,
            f"one of {', '.join(SPARSITY_LOSSES)}",
        )
        check(self.jumprelu_tanh_scale > 0, "jumprelu_tanh_scale", self.jumprelu_tanh_scale, "> 0")
        check(
            self.pre_act_loss_coefficient >= 0,
            "pre_act_loss_coefficient",
            self.pre_act_loss_coefficient,
            ">= 0",
        )
        check(self.jumprelu_bandwidth > 0, "jumprelu_bandwidth", self.jumprelu_bandwidth, "> 0")
        check(
            self.jumprelu_init_threshold > 0,
            "jumprelu_init_threshold",
            self.jumprelu_init_threshold,
            "> 0",
        )


@register
class JumpReLUSAE(SAE):
    config_class = JumpReLUConfig
    cfg: JumpReLUConfig
    sweep_axes = {"sparsity_coefficient": "l"}
    unit_norm_decoder = True
    saelens_reads = ("jumprelu", "jumprelu_transcoder", "jumprelu_skip_transcoder")

    def __init__(self, cfg: JumpReLUConfig) -> None:
        super().__init__(cfg)
        init = torch.full((cfg.d_sae,), math.log(cfg.jumprelu_init_threshold))
        self.log_threshold = nn.Parameter(init.to(self.b_enc.dtype))

    @property
    def threshold(self) -> torch.Tensor:
        """θ: [d_sae]."""
        return self.log_threshold.exp()

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        return jumprelu(pre, self.threshold, self.cfg.jumprelu_bandwidth)

    def select(self, pre: torch.Tensor) -> Active | None:
        """For the sparse path (``sae/sparse.py``): the entries above θ − ε/2, i.e. those that
        fire and those whose θ-gradient is not 0 (the rectangle kernel's support), when few
        fire. Those below θ cost a product of d_in per step (their code and its gradient
        through pre are 0, which the sums drop), so the crossover counts the firing ones
        (compared only when the window itself is too dense)."""
        threshold = self.threshold.detach()
        window = above(pre, threshold - self.cfg.jumprelu_bandwidth / 2)
        density = self.sparse_density
        if not sparse_enough(window, density) and not sparse_enough(above(pre, threshold), density):
            return None
        return Active.from_mask(window)

    def active_values(self, encoding: Encoding, active: Active) -> torch.Tensor:
        theta = self.threshold[active.latents]
        return jumprelu(encoding.at(active), theta, self.cfg.jumprelu_bandwidth)

    def penalties(self, out: SAEOutput, target: torch.Tensor, ctx: LossContext) -> Penalties:
        """``l0`` = Σ_i H(pre_i − θ_i) (step) or ``tanh`` = Σ_i tanh(c f_i ‖W_dec,i‖), averaged
        over the batch and weighted by λ; ``pre_act`` for dead latents when μ > 0."""
        cfg = self.cfg
        weight = ctx.sparsity_scale * cfg.sparsity_coefficient
        norms = self.W_dec.norm(dim=-1)
        if cfg.jumprelu_sparsity_loss == "tanh":
            smooth = (cfg.jumprelu_tanh_scale * out.codes.scaled(norms)).tanh()
            terms: Penalties = {"tanh": (weight, smooth.sum(-1).mean())}
        else:
            terms = {"l0": (weight, self.l0(out))}
        if cfg.pre_act_loss_coefficient > 0:
            terms["pre_act"] = (cfg.pre_act_loss_coefficient, self.pre_act_loss(out, ctx, norms))
        return terms

    def l0(self, out: SAEOutput) -> torch.Tensor:
        """Σ_i H(pre_i − θ_i) averaged over the batch; on the sparse path over the pairs, which
        hold every entry that fires or has a θ-gradient (``select``)."""
        eps = self.cfg.jumprelu_bandwidth
        if out.active is None:
            return heaviside(out.pre, self.threshold, eps).sum(-1).mean()
        pairs = out.active  # the codes' read of pre (no gradient reaches pre through H)
        pre = out.encoding.at(pairs)
        return heaviside(pre, self.threshold[pairs.latents], eps).sum() / pairs.batch

    def pre_act_loss(self, out: SAEOutput, ctx: LossContext, norms: torch.Tensor) -> torch.Tensor:
        """Σ_{i dead} ReLU(θ_i − pre_i) ‖W_dec,i‖ averaged over the batch, read at the dead
        latents' entries only."""
        dead = (ctx.dead if ctx.dead is not None else norms.new_zeros(0)).nonzero().squeeze(-1)
        batch = out.pre.shape[0]
        if dead.numel() == 0:
            return out.pre.new_zeros(())
        pairs = Active.per_row(dead.expand(batch, -1), self.d_sae)
        below = self.threshold[dead] - out.encoding.at(pairs).reshape(batch, -1)
        return (below.relu() * norms[dead]).sum(-1).mean()

    @classmethod
    def config_from_saelens(cls, raw: dict[str, Any]) -> dict[str, Any]:
        details = {**(raw.get("metadata") or {}).get("training_architecture_details", {}), **raw}
        fields: dict[str, Any] = {
            "sparsity_coefficient": float(details.get("l0_coefficient") or 0.0),
            "pre_act_loss_coefficient": float(details.get("pre_act_loss_coefficient") or 0.0),
        }
        if details.get("jumprelu_sparsity_loss_mode") in SPARSITY_LOSSES:
            fields["jumprelu_sparsity_loss"] = details["jumprelu_sparsity_loss_mode"]
        names = ("jumprelu_bandwidth", "jumprelu_init_threshold", "jumprelu_tanh_scale")
        return {**fields, **{name: details[name] for name in names if name in details}}

    def export_state(self) -> dict[str, torch.Tensor]:
        """SAELens names: θ as ``threshold``. Computed in float64 and cast, so save → load gives
        back log θ exactly in float32 for θ < 1/e (above, to one ulp: θ's grid is coarser)."""
        state = super().export_state()
        log_threshold = state.pop("log_threshold")
        state["threshold"] = log_threshold.double().exp().to(log_threshold.dtype)
        return state

    def import_state(self, state: dict[str, torch.Tensor]) -> None:
        """From SAELens's ``threshold``. θ ≤ 0 acts as θ = 0 there (its f is ReLU(pre)·H(pre−θ)),
        so it is clamped to 0 (log θ = −inf) to keep the same function."""
        state = dict(state)
        threshold = state.pop("threshold")
        state["log_threshold"] = threshold.double().clamp_min(0).log().to(threshold.dtype)
        super().import_state(state)
