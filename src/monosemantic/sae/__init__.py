"""Sparse autoencoders: one file per architecture, a registry, and SAELens-layout save/load.

Importing the package registers the built-in architectures; an architecture defined elsewhere
registers itself the same way (``@registry.register``).
"""

from monosemantic.sae import batchtopk, gated, jumprelu, relu, topk  # noqa: F401 (registers them)
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
