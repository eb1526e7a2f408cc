"""Logit effects: what each latent's decoder direction does to the next-token logits directly.

For a direction d written into the residual stream, the direct path to the logits is the final
norm then the unembedding. A norm divides by the whole vector's scale, which d alone does not
set, so the effect of a direction is taken as the norm's elementwise affine part applied to d:

    RMSNorm:   logits(d) = W_U (g ⊙ d)
    LayerNorm: logits(d) = W_U (g ⊙ (d − mean(d)))

(biases and the scale left out: they do not depend on d). The final norm and the unembedding are
found on the model itself: the unembedding is ``get_output_embeddings()`` (Hugging Face) or a
module named ``unembed``/``lm_head``, and the final norm the module whose output it reads in a
forward pass.

An SAE on an MLP's hidden neurons, read as the input of its down projection (``...mlp.down:input``,
``...mlp.down_proj:input``), writes to the residual stream through that projection: its
direction there is W_down d.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from monosemantic.hooks import HookPoint
from monosemantic.sae.base import SAE


@dataclass
class OutputPath:
    """The model's final norm (its elementwise gain, and whether it centres) and unembedding."""

    gain: torch.Tensor  # [d_model]
    centres: bool
    unembed: torch.Tensor  # [vocab, d_model]

    def logits(self, directions: torch.Tensor) -> torch.Tensor:
        """directions [n, d_model] -> their direct logit effects [n, vocab]."""
        d = directions.float()
        if self.centres:
            d = d - d.mean(-1, keepdim=True)
        return (d * self.gain.float()) @ self.unembed.float().T


@torch.no_grad()
def output_path(model: nn.Module) -> OutputPath:
    """Find the final norm and the unembedding of a causal LM (see the module docstring)."""
    getter = getattr(model, "get_output_embeddings", None)
    modules = dict(model.named_modules())
    unembed = getter() if callable(getter) else None
    if unembed is None:
        unembed = modules.get("unembed", modules.get("lm_head"))
    if not isinstance(unembed, nn.Linear):
        raise ValueError(
            f"cannot find the unembedding of {type(model).__name__}: expected "
            "get_output_embeddings() or a Linear module named unembed or lm_head"
        )
    seen: dict[str, torch.Tensor] = {}
    handles = [
        module.register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, o))
        for name, module in modules.items()
        if name and "norm" in type(module).__name__.lower()
    ]
    fed: list[torch.Tensor] = []
    handles.append(unembed.register_forward_pre_hook(lambda m, args: fed.append(args[0])))
    try:
        model(torch.zeros(1, 2, dtype=torch.long))
    finally:
        for handle in handles:
            handle.remove()
    feeding = [  # the unembedding may read a slice of the norm's output: compare values
        name
        for name, out in seen.items()
        if fed
        and isinstance(out, torch.Tensor)
        and out.shape == fed[0].shape
        and torch.equal(out, fed[0])
    ]
    if not feeding:
        raise ValueError(
            f"cannot find the final norm of {type(model).__name__}: no norm module's output is "
            "what its unembedding reads"
        )
    norm = modules[feeding[-1]]
    gain = getattr(norm, "weight", None)
    width = unembed.weight.shape[1]
    return OutputPath(
        gain=gain.detach() if isinstance(gain, torch.Tensor) else torch.ones(width),
        centres=isinstance(norm, nn.LayerNorm),
        unembed=unembed.weight.detach(),
    )


def residual_directions(model: nn.Module, sae: SAE, width: int) -> torch.Tensor:
    """[d_sae, width]: each latent's decoder direction in the residual stream (of ``width``),
    through the down projection it feeds when it reads one (see the module docstring)."""
    rows = sae.W_dec.detach().float()
    if rows.shape[-1] == width:
        return rows
    point = HookPoint.parse(sae.cfg.target_hook or "unknown")
    module = dict(model.named_modules()).get(point.module)
    if (
        point.side == "input"
        and isinstance(module, nn.Linear)
        and module.weight.shape == (width, rows.shape[-1])
    ):
        return rows @ module.weight.detach().float().T
    raise ValueError(
        f"the SAE writes {rows.shape[-1]}-wide vectors at {point} but the unembedding reads "
        f"{width}: logit effects need an SAE on the residual stream, an MLP's output, or an "
        "MLP's neurons read as its down projection's input (e.g. blocks.0.mlp.down:input)"
    )


def writes_residual(model: nn.Module, sae: SAE) -> bool:
    """Whether ``residual_directions`` can place ``sae``'s latents in ``model``'s residual."""
    try:
        residual_directions(model, sae, output_path(model).unembed.shape[1])
    except ValueError:
        return False
    return True


@dataclass
class LogitEffects:
    """Per latent: the ``top`` tokens its direction raises most (``raise_ids``, ``raise_values``
    [n, top], largest first) and lowers most (``lower_ids``, ``lower_values``, most negative
    first), and a histogram of its effect on every token (``hist_counts`` [n, bins] over
    ``hist_edges`` [n, bins + 1], equal-width from its smallest to its largest effect)."""

    raise_ids: torch.Tensor
    raise_values: torch.Tensor
    lower_ids: torch.Tensor
    lower_values: torch.Tensor
    hist_counts: torch.Tensor
    hist_edges: torch.Tensor


@torch.no_grad()
def logit_effects(
    model: nn.Module,
    sae: SAE,
    latents: torch.Tensor | None = None,
    *,
    top: int = 10,
    bins: int = 50,
    chunk: int = 256,
) -> LogitEffects:
    """The direct logit effects of each latent (default: all) of an SAE that writes to the
    residual stream, ``chunk`` latents at a time (memory ∝ chunk × vocab, not latents × vocab)."""
    path = output_path(model)
    rows = residual_directions(model, sae, path.unembed.shape[1])
    rows = rows if latents is None else rows[latents]
    parts = []
    for start in range(0, len(rows), chunk):
        effects = path.logits(rows[start : start + chunk])  # [chunk, vocab]
        raised, lowered = effects.topk(top, dim=-1), effects.topk(top, dim=-1, largest=False)
        low, high = effects.min(-1).values, effects.max(-1).values
        steps = torch.linspace(0, 1, bins + 1)
        edges = low[:, None] + (high - low)[:, None] * steps  # [chunk, bins + 1]
        scaled = (effects - low[:, None]) / (high - low).clamp_min(1e-12)[:, None] * bins
        which = scaled.long().clamp(0, bins - 1)
        counts = torch.zeros(len(effects), bins, dtype=torch.int64).scatter_add_(
            1, which, torch.ones_like(which)
        )
        found = (raised.indices, raised.values, lowered.indices, lowered.values, counts, edges)
        parts.append(found)
    return LogitEffects(*(torch.cat(column) for column in zip(*parts, strict=True)))
