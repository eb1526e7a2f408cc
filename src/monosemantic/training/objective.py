"""What a training step minimises: an objective maps (SAE, batch, context) to loss terms.

    objective(sae, batch, ctx) -> (terms, out)

``terms`` holds named scalar tensors, ``terms["loss"]`` the total that is minimised; ``out`` is the
SAE's forward pass (the trainer reads its codes for dead-latent tracking and L0). The trainer knows
nothing else about the objective, so new objectives (a transcoder's target, KL through the spliced
model, several layers at once) plug in without touching the loop: pass one to ``Trainer`` or
``train``. An objective that needs more (the subject model) is a callable object holding it;
``Batch.context`` carries whatever else the step held (token windows, the clean pass's logits:
``end_to_end.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from monosemantic.sae.base import SAE, LossContext, SAEOutput, squared_error

Terms = dict[str, torch.Tensor]


@dataclass
class Batch:
    """One step's data for one SAE (all in the SAE's normalised units).

    x: [batch, d_in] the input; target: [batch, d_out] what the reconstruction should match
    (None: x itself); target_scale: the factor from raw units to the target's (x_hat /
    target_scale is in the model's units); context: the step's other entries (token windows,
    clean logits, ...), for objectives that run the model.
    """

    x: torch.Tensor
    target: torch.Tensor | None = None
    target_scale: float = 1.0
    context: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def reconstruction_target(self) -> torch.Tensor:
        return self.x if self.target is None else self.target


Objective = Callable[[SAE, Batch, LossContext], tuple[Terms, SAEOutput]]


def with_penalties(
    sae: SAE, out: SAEOutput, target: torch.Tensor, ctx: LossContext, terms: Terms
) -> Terms:
    """``terms`` plus the architecture's penalties; ``loss`` = Σ terms + Σ weight·penalty.

    ``terms`` are the objective's own (already weighted) loss terms, e.g. ``mse``."""
    total = list(terms.values())
    out_terms = dict(terms)
    for name, (weight, value) in sae.penalties(out, target, ctx).items():
        out_terms[name] = value
        total.append(weight * value)
    out_terms["loss"] = torch.stack(total).sum() if len(total) > 1 else total[0]
    return out_terms


def reconstruction(sae: SAE, batch: Batch, ctx: LossContext) -> tuple[Terms, SAEOutput]:
    """The default objective: ``mse`` = Σ_d (target − x̂)² averaged over the batch, plus the
    architecture's penalties."""
    out = sae.forward_full(batch.x)
    target = batch.reconstruction_target
    mse = squared_error(out.x_hat, target)
    return with_penalties(sae, out, target, ctx, {"mse": mse}), out
