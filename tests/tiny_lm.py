"""A tiny zoo transformer with sharpened predictions, shared by the tests that run a model."""

from __future__ import annotations

import torch

from monosemantic.models.zoo.transformer import LMConfig, TinyLM, build_lm


def sharp_lm(n_layers: int = 1, *, d_model: int = 16, vocab_size: int = 300, context_size: int = 12,
             gain: float = 20.0, **fields) -> TinyLM:  # fmt: skip
    """A frozen TinyLM (ReLU MLP, 2 heads, seed 0) with every weight scaled by ``gain``: GPT-2's
    small init predicts nearly uniformly, which would leave KL and CE differences at noise level."""
    torch.manual_seed(0)
    cfg = LMConfig(mlp="relu", n_layers=n_layers, d_model=d_model, n_heads=2,
                   vocab_size=vocab_size, context_size=context_size, **fields)  # fmt: skip
    lm = build_lm(cfg).eval()
    with torch.no_grad():
        for p in lm.parameters():
            p.mul_(gain)
    return lm.requires_grad_(False)
