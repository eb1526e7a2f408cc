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
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

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


@torch.no_grad()
def logit_effects(
    model: nn.Module, sae: SAE, latents: torch.Tensor | None = None, *, top: int = 10
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each latent (default: all), the ``top`` tokens its decoder direction raises most and
    the ``top`` it lowers most: (top_tokens, bottom_tokens), each [n_latents, top] token ids.
    The SAE must write to the residual stream (its output width = the model's)."""
    path = output_path(model)
    rows = sae.W_dec.detach() if latents is None else sae.W_dec.detach()[latents]
    if rows.shape[-1] != path.unembed.shape[1]:
        raise ValueError(
            f"the SAE writes {rows.shape[-1]}-wide vectors but the unembedding reads "
            f"{path.unembed.shape[1]}: logit effects need an SAE on the residual stream "
            "(or an MLP's output)"
        )
    effects = path.logits(rows)
    return effects.topk(top, dim=-1).indices, effects.topk(top, dim=-1, largest=False).indices
