"""Architectures by name. Adding one: a file in this package and a line here."""

from __future__ import annotations

from monosemantic.config import check
from monosemantic.sae.base import SAE, SAEConfig
from monosemantic.sae.batchtopk import BatchTopKSAE
from monosemantic.sae.gated import GatedSAE
from monosemantic.sae.jumprelu import JumpReLUSAE
from monosemantic.sae.relu import ReluSAE
from monosemantic.sae.topk import TopKSAE

ARCHITECTURES: dict[str, type[SAE]] = {
    cls.architecture: cls for cls in (ReluSAE, TopKSAE, BatchTopKSAE, JumpReLUSAE, GatedSAE)
}


def check_architecture(name: str) -> None:
    """ConfigError unless ``name`` is a registered architecture."""
    check(name in ARCHITECTURES, "architecture", name, f"one of {sorted(ARCHITECTURES)}")


def create(cfg: SAEConfig) -> SAE:
    """A freshly initialised SAE of ``cfg.architecture``."""
    return ARCHITECTURES[cfg.architecture](cfg)
