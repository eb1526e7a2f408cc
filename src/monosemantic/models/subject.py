"""The subject model with its text: what evaluation on held-out text and live harvesting need."""

from __future__ import annotations

import logging

from monosemantic.data.sources import ResolvedData, Text, load_text
from monosemantic.models.hf import load_model

log = logging.getLogger(__name__)


def load_subject(data: ResolvedData) -> Text | None:
    """Load ``data``'s model and tokenise its text (the text itself, or the one a cache was made
    from) into training and held-out windows; None when there is no text (a matrix, or a cache
    that does not record its text)."""
    if data.text is None:
        return None
    cfg = data.cfg
    model, tokenizer = load_model(
        cfg.model, dtype=cfg.dtype, allow_pickled_weights=cfg.allow_pickled_weights
    )
    if cfg.truncate:
        log.info(
            "forward passes stop at %s: the layers after it are not run", ", ".join(cfg.points)
        )
    return load_text(cfg, model, tokenizer, data.text)
