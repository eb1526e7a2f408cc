"""Causal tests of a latent: ablate it from the spliced reconstruction, or steer with it.

- ``ablated_logits``: the model's logits with the SAE spliced in at its hook and the chosen
  latents' codes set to 0 before decoding, x̂ − Σ_i f_i W_dec,i (in x's units: a standardising
  SAE's scale included), so their contribution is removed exactly and nothing else changes (a
  TopK SAE does not pick a replacement latent).
- ``steered_logits`` / ``steer``: the model with α × a latent's unit decoder direction added to
  the activation at the SAE's hook (a transcoder's: at its output point) at every position; greedy
  generation from a prompt, for any model whose forward takes token ids and returns logits.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from monosemantic.evaluation.spliced import Splice, logits_of, spliced_into
from monosemantic.hooks import HookPoint, hooked, is_layer_pattern
from monosemantic.sae.base import SAE, UNKNOWN_HOOK


@torch.no_grad()
def ablated_logits(
    model: nn.Module, tokens: torch.Tensor, sae: SAE, latents: Sequence[int] = ()
) -> torch.Tensor:
    """Logits [batch, ctx, vocab] for tokens [batch, ctx] with ``sae`` spliced in at its hook
    (every position) and ``latents`` removed from its reconstruction."""
    chosen = torch.as_tensor(list(latents), dtype=torch.long)
    check_latents(sae, chosen)
    param = sae.W_dec

    def reconstruct(x: torch.Tensor) -> torch.Tensor:
        out = sae.forward_full(x.to(device=param.device, dtype=param.dtype))
        removed = out.codes.dense()[:, chosen] @ sae.W_dec[chosen] * out.scale
        return (out.x_hat - removed).to(x.device, x.dtype)

    cfg = sae.cfg
    splice = Splice(HookPoint.parse(cfg.hook), HookPoint.parse(cfg.target_hook), reconstruct)
    with spliced_into(model, splice, torch.ones(tokens.shape, dtype=torch.bool)):
        return logits_of(model(tokens)).float()


@torch.no_grad()
def steered_logits(
    model: nn.Module, tokens: torch.Tensor, sae: SAE, latent: int, alpha: float
) -> torch.Tensor:
    """Logits [batch, ctx, vocab] with α × latent's unit decoder direction added at the SAE's
    (output) hook point at every position."""
    check_latents(sae, torch.tensor([latent]))
    direction = sae.W_dec[latent].detach().float()
    direction = direction / direction.norm().clamp_min(1e-12)

    def add(act: torch.Tensor) -> torch.Tensor:
        return act + (alpha * direction).to(act.dtype)

    with hooked(model, {sae.cfg.target_hook: add}):
        return logits_of(model(tokens)).float()


@torch.no_grad()
def steer(
    model: nn.Module,
    prompt: torch.Tensor,
    sae: SAE,
    latent: int,
    alpha: float,
    *,
    max_new_tokens: int = 20,
) -> torch.Tensor:
    """Greedy continuation [len(prompt) + max_new_tokens] of prompt token ids [ctx] under
    ``steered_logits`` (the whole sequence is rerun each step: no cache, any model)."""
    ids = prompt.reshape(1, -1)
    for _ in range(max_new_tokens):
        logits = steered_logits(model, ids, sae, latent, alpha)
        ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return ids[0]


def check_latents(sae: SAE, latents: torch.Tensor) -> None:
    """Clear errors for a latent that does not exist or an SAE that records no hook point."""
    if not sae.cfg.hook or sae.cfg.target_hook == UNKNOWN_HOOK:
        raise ValueError(
            "this SAE's files do not record the hook point it reads (sparsify's and "
            "dictionary_learning's do not): set sae.cfg.hook (and a transcoder's hook_out) first"
        )
    if is_layer_pattern(sae.cfg.hook):
        raise ValueError(
            f"this multi-layer SAE reads every layer ({sae.cfg.hook}): set sae.cfg.hook to the "
            "one layer to splice or steer at, e.g. model.layers.6:output"
        )
    bad = latents[(latents < 0) | (latents >= sae.d_sae)]
    if bad.numel():
        raise ValueError(
            f"latent {int(bad[0])} does not exist: this SAE has latents 0..{sae.d_sae - 1}"
        )
