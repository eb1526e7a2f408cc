"""Architectures by name. Adding one: a file in this package and a line here."""

from __future__ import annotations

from monosemantic.sae.base import SAE, SAEConfig
from monosemantic.sae.topk import TopKSAE

ARCHITECTURES: dict[str, type[SAE]] = {cls.architecture: cls for cls in (TopKSAE,)}


def create(cfg: SAEConfig) -> SAE:
    """A freshly initialised SAE of ``cfg.architecture``."""
    return ARCHITECTURES[cfg.architecture](cfg)
