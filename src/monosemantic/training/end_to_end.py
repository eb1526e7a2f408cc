"""End-to-end objectives: train an SAE on what the model does with its reconstruction.

Braun, Taylor, Goldowsky-Dill, Sharkey 2024, "Identifying Functionally Important Features with
End-to-End Sparse Dictionary Learning" (arXiv 2405.12241), as their code (ApolloResearch/e2e_sae,
``losses.py``) computes the terms:

    local   : the reconstruction objective (``objective.reconstruction``)    + penalties
    e2e     : α KL(p_clean ‖ p_sae)                                            + penalties
    e2e+ds  : α KL(p_clean ‖ p_sae) + β/|D| Σ_{k∈D} MSE(a_k^sae, a_k^clean)     + penalties

KL is over the next-token distributions at every scored position ("batchmean": summed over the
vocabulary, averaged over positions); MSE is the mean over elements of the activations at each
downstream hook point k (their ``in_to_orig`` loss), in the model's units; the penalties are the
architecture's own (the paper's φ L_sp is a ReLU SAE's L1). Data come as token windows:
``WindowSteps`` runs the clean pass once per step for every SAE of a sweep (no gradient, never
truncated: the logits are needed) and hands each step's activations, windows and clean results
to the trainer; ``EndToEnd`` then runs one pass per SAE with its output spliced in place of the
activation (BOS and other excluded positions keep theirs and are not scored), and gradients flow
through the frozen model into the SAE.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from monosemantic.data.store import WHOLE, Part, part_rows
from monosemantic.evaluation.spliced import logits_of
from monosemantic.hooks import HookPoint, capture, hooked
from monosemantic.sae.base import SAE, LossContext, SAEOutput
from monosemantic.training.objective import Batch, Terms, with_penalties

TOKENS, KEEP, LOGITS = "tokens", "keep", "logits"
"""Keys of a step's windows [b, ctx], kept positions [b, ctx] and clean logits [b, ctx, V]."""
CLEAN = "clean:"
"""Prefix of a downstream hook point's clean activations [b, ctx, d] in a step."""


@dataclass
class WindowSteps:
    """Steps of whole token windows for end-to-end training: each step holds the activation rows
    at ``hooks`` of its kept positions (raw units, float32), and under ``TOKENS``, ``KEEP``,
    ``LOGITS`` and ``CLEAN + hook`` what the spliced passes compare against. Windows come in a
    seeded order per epoch; ``batches(..., start_step=s)`` skips s steps without running them."""

    model: nn.Module
    tokens: torch.Tensor  # [n, ctx]
    hooks: list[str]
    downstream: list[str]
    exclude: torch.Tensor | None = None  # [n, ctx]

    def batches(
        self, batch_size: int, *, seed: int, start_step: int = 0, part: Part = WHOLE
    ) -> Iterator[dict]:
        """Steps of ⌈batch_size / ctx⌉ windows (about ``batch_size`` positions) each; with
        ``part``, that part of each step's windows."""
        per_step = max(1, -(-batch_size // self.tokens.shape[1]))
        mine = part_rows(per_step, part)
        step = 0
        for epoch in itertools.count():
            order = torch.randperm(
                len(self.tokens), generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch)
            )
            for start in range(0, len(order) - per_step + 1, per_step):
                if step >= start_step:
                    yield self.clean_pass(order[start : start + per_step][mine])
                step += 1

    @torch.no_grad()
    def clean_pass(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        ids = self.tokens[rows]
        keep = (
            torch.ones_like(ids, dtype=torch.bool) if self.exclude is None else ~self.exclude[rows]
        )
        points = list(dict.fromkeys([*self.hooks, *self.downstream]))
        with capture(self.model, points) as acts:
            logits = logits_of(self.model(ids))
        step = {hook: acts[str(HookPoint.parse(hook))][keep].float() for hook in self.hooks}
        step.update({TOKENS: ids, KEEP: keep, LOGITS: logits.detach()})
        for hook in self.downstream:
            step[CLEAN + hook] = acts[str(HookPoint.parse(hook))].detach()
        return step


@dataclass
class EndToEnd:
    """The ``e2e`` objective (``downstream`` empty) or ``e2e+ds``; see the module docstring.
    ``model``'s weights should be frozen (``requires_grad_(False)``): gradients reach only the
    SAE."""

    model: nn.Module
    kl_coefficient: float = 1.0
    """α, the weight of the KL term."""
    downstream: Sequence[str] = ()
    """D: later hook points whose activations should stay as they were."""
    downstream_coefficient: float = 1.0
    """β, shared equally by the points of D."""

    def __call__(self, sae: SAE, batch: Batch, ctx: LossContext) -> tuple[Terms, SAEOutput]:
        out = sae.forward_full(batch.x)
        keep, clean = batch.context[KEEP], batch.context[LOGITS]
        replacement = out.x_hat / batch.target_scale  # raw units

        def splice(act: torch.Tensor) -> torch.Tensor:
            spliced = act.clone()
            spliced[keep] = replacement.to(act.dtype)
            return spliced

        points = [str(HookPoint.parse(p)) for p in self.downstream]
        with hooked(self.model, {sae.cfg.target_hook: splice}), capture(self.model, points) as acts:
            logits = logits_of(self.model(batch.context[TOKENS]))
        kl = F.kl_div(
            logits[keep].float().log_softmax(-1),
            clean[keep].float().log_softmax(-1),
            log_target=True,
            reduction="batchmean",
        )
        terms = {"kl": self.kl_coefficient * kl}
        if points:
            mse = [
                F.mse_loss(acts[p].float(), batch.context[CLEAN + h].float())
                for p, h in zip(points, self.downstream, strict=True)
            ]
            terms["downstream"] = self.downstream_coefficient / len(mse) * torch.stack(mse).sum()
        return with_penalties(sae, out, batch.reconstruction_target, ctx, terms), out
