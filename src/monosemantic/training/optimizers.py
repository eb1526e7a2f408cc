"""Optimisers beyond Adam: Signum and Muon, as EleutherAI sparsify offers them.

``make_optimizer(name, params, lr, betas)`` builds the one a run asks for; all three keep their
state in ``state_dict`` so checkpoints resume exactly.

- **Signum** (Bernstein et al. 2018, "signSGD: Compressed Optimisation for Non-Convex Problems"):
  m ← β m + (1 − β) g;  p ← p − lr · sign(m). sparsify's ``signum`` takes the sign of the raw
  gradient inside a schedule-free average with momentum 0.95; the sign of an averaged gradient
  is the classic form, used here with β = 0.95.
- **Muon** (Jordan et al. 2024; sparsify's ``muon.py``): for matrices, m ← lerp(m, g, 1 − β);
  Nesterov u = lerp(g, m, β); O = NewtonSchulz5(u), an approximate orthogonalisation (U Vᵀ of
  u's SVD with singular values in about [0.7, 1.2]); p ← p (1 − lr·wd) − lr · 0.2 √max(rows,
  cols) · O, the 0.2 √max scale matching Adam's update size (Liu et al. 2025, arXiv 2502.16982).
  Vectors (biases) take Adam steps with the same lr, as sparsify does. Newton–Schulz runs in
  float32 here (sparsify: bfloat16 on GPU).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from torch import nn

OPTIMIZERS = ("adam", "signum", "muon")
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
"""The quintic Newton–Schulz iteration's (a, b, c): X ← a X + (b A + c A²) X, A = X Xᵀ."""


def newton_schulz(g: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """[rows, cols] -> the same shape with singular values pushed towards 1 (U Vᵀ approximately)."""
    a, b, c = NS_COEFFICIENTS
    x = g.float()
    wide = x.shape[0] > x.shape[1]
    if wide:
        x = x.T
    x = x / (x.norm() + 1e-7)
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x.T if wide else x).to(g.dtype)


def with_gradients(optimizer: torch.optim.Optimizer) -> Iterator[tuple[nn.Parameter, dict]]:
    """(parameter, its group) for every parameter that has a gradient."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            if p.grad is not None:
                yield p, group


class Signum(torch.optim.Optimizer):
    """p ← p − lr · sign(m), m the exponential average (β = ``momentum``) of the gradients."""

    def __init__(self, params: Iterable[nn.Parameter], lr: float, momentum: float = 0.95) -> None:
        super().__init__(params, {"lr": lr, "momentum": momentum})

    @torch.no_grad()
    def step(self, closure: None = None) -> None:  # type: ignore[override]
        for p, group in with_gradients(self):
            state = self.state[p]
            if "momentum" not in state:
                state["momentum"] = torch.zeros_like(p)
            m = state["momentum"]
            m.lerp_(p.grad, 1 - group["momentum"])
            p.sub_(group["lr"] * m.sign())


class Muon(torch.optim.Optimizer):
    """Muon for matrices, Adam for vectors; see the module docstring."""

    def __init__(
        self,
        params: Iterable[nn.Parameter],
        lr: float,
        momentum: float = 0.95,
        weight_decay: float = 0.1,
        ns_steps: int = 5,
        adam_betas: tuple[float, float] = (0.9, 0.999),
        adam_eps: float = 1e-8,
    ) -> None:
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "weight_decay": weight_decay,
            "ns_steps": ns_steps,
            "adam_betas": adam_betas,
            "adam_eps": adam_eps,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: None = None) -> None:  # type: ignore[override]
        for p, group in with_gradients(self):
            if p.ndim >= 2:
                self._muon(p, group)
            else:
                self._adam(p, group)

    def _muon(self, p: nn.Parameter, group: dict) -> None:
        state = self.state[p]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(p)
        grad, buf, beta, lr = p.grad, state["momentum_buffer"], group["momentum"], group["lr"]
        assert grad is not None
        buf.lerp_(grad, 1 - beta)
        update = grad.lerp(buf, beta)  # Nesterov
        p.mul_(1 - lr * group["weight_decay"])
        p.sub_(lr * 0.2 * max(p.shape) ** 0.5 * newton_schulz(update, group["ns_steps"]))

    def _adam(self, p: nn.Parameter, group: dict) -> None:
        state = self.state[p]
        if "step" not in state:
            state["step"] = torch.zeros((), dtype=torch.float64)
            state["exp_avg"] = torch.zeros_like(p)
            state["exp_avg_sq"] = torch.zeros_like(p)
        beta1, beta2 = group["adam_betas"]
        state["step"] += 1
        t = float(state["step"])
        state["exp_avg"].lerp_(p.grad, 1 - beta1)
        state["exp_avg_sq"].mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
        m_hat = state["exp_avg"] / (1 - beta1**t)
        v_hat = state["exp_avg_sq"] / (1 - beta2**t)
        p.sub_(group["lr"] * m_hat / (v_hat.sqrt() + group["adam_eps"]))


def make_optimizer(
    name: str, params: Iterable[nn.Parameter], lr: float, betas: tuple[float, float]
) -> torch.optim.Optimizer:
    """The optimiser ``name`` (one of ``OPTIMIZERS``) over ``params``; ``betas`` are Adam's
    (Muon's vector steps use them too)."""
    if name == "signum":
        return Signum(params, lr)
    if name == "muon":
        return Muon(params, lr, adam_betas=betas)
    # fused: one pass over each parameter instead of about ten (a quarter of a sparse TopK step)
    return torch.optim.Adam(params, lr=lr, betas=betas, fused=True)


def default_lr(name: str, d_sae: int) -> float:
    """sparsify's defaults: Adam 2e-4 and Signum 5e-3, both / sqrt(d_sae / 2^14) (Gao et al.
    2024's width scaling); Muon 2e-3 at any width."""
    scale = (d_sae / 2**14) ** 0.5
    return {"adam": 2e-4 / scale, "signum": 5e-3 / scale, "muon": 2e-3}[name]
