"""Sparse autoencoders: one file per architecture, a registry, and SAELens-layout save/load.

Importing the package registers the built-in architectures; an architecture defined elsewhere
registers itself the same way (``@registry.register``).
"""

from monosemantic.sae import (  # noqa: F401 (registers them)
    batchtopk,
    feature_choice,
    gated,
    groupmax,
    jumprelu,
    matching_pursuit,
    matryoshka,
    mutual_choice,
    p_anneal,
    relu,
    topk,
)
from monosemantic.sae.base import SAE, SAEConfig
from monosemantic.sae.io import load_sae, save_sae
from monosemantic.sae.registry import ARCHITECTURES, config, create, register

__all__ = [
    "ARCHITECTURES",
    "SAE",
    "SAEConfig",
    "config",
    "create",
    "load_sae",
    "register",
    "save_sae",
]
