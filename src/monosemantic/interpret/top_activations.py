"""Top-activating contexts: for every latent, the token positions where it fires most strongly."""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from monosemantic.data.harvest import forward_activations
from monosemantic.hooks import HookPoint
from monosemantic.sae.base import SAE


@dataclass
class TopActivations:
    """values, where: [d_sae, top_n]; ``where`` holds flat positions window·ctx + position
    (−1 where a latent fired fewer than top_n times)."""

    values: torch.Tensor
    where: torch.Tensor
    context_size: int

    def examples(self, feature: int) -> list[tuple[float, int, int]]:
        """(activation, window, position) of ``feature``'s strongest firings, strongest first."""
        return [
            (float(v), int(w) // self.context_size, int(w) % self.context_size)
            for v, w in zip(self.values[feature], self.where[feature], strict=True)
            if w >= 0
        ]


@torch.no_grad()
def top_activations(
    model: nn.Module,
    sae: SAE,
    tokens: torch.Tensor,
    hook: str,
    *,
    top_n: int = 8,
    batch_size: int = 8,
    exclude: torch.Tensor | None = None,
) -> TopActivations:
    """Run ``tokens`` [n, ctx] through the model and ``sae`` (with ``encode``) at ``hook``,
    keeping each latent's ``top_n`` largest positive activations. ``exclude`` [n, ctx] marks
    positions (BOS, padding) never counted."""
    n, ctx = tokens.shape
    values = where = None
    for start in range(0, n, batch_size):
        acts = forward_activations(model, tokens[start : start + batch_size], [hook])
        x = acts[str(HookPoint.parse(hook))]
        codes = sae.encode(x.reshape(-1, x.shape[-1]).to(sae.W_dec.dtype)).float()  # [b·ctx, F]
        if exclude is not None:
            codes[exclude[start : start + batch_size].reshape(-1)] = 0.0
        codes = codes.T  # [F, b·ctx]
        flat = torch.arange(start * ctx, start * ctx + codes.shape[1]).expand_as(codes)
        if values is not None and where is not None:
            codes = torch.cat([values, codes], dim=1)
            flat = torch.cat([where, flat], dim=1)
        values, picked = codes.topk(min(top_n, codes.shape[1]), dim=1)
        where = flat.gather(1, picked)
    assert values is not None and where is not None, "no tokens given"
    where = where.masked_fill(values <= 0, -1)
    return TopActivations(values.clamp_min(0), where, ctx)


def render_contexts(
    top: TopActivations,
    feature: int,
    tokens: torch.Tensor,
    tokenizer: Any,
    *,
    left: int = 10,
    right: int = 3,
    limit: int = 5,
) -> str:
    """HTML table of ``feature``'s strongest contexts: ``left`` tokens before the firing token
    (highlighted) and ``right`` after it, with the activation."""
    rows = []
    for value, window, position in top.examples(feature)[:limit]:
        ids = tokens[window].tolist()
        before = tokenizer.decode(ids[max(0, position - left) : position])
        token = tokenizer.decode(ids[position : position + 1])
        after = tokenizer.decode(ids[position + 1 : position + 1 + right])
        rows.append(
            f"<tr><td class='num'>{value:.3g}</td><td class='ctx'>{html.escape(before)}"
            f"<mark>{html.escape(token)}</mark>{html.escape(after)}</td></tr>"
        )
    return f"<table class='contexts'>{''.join(rows)}</table>"
