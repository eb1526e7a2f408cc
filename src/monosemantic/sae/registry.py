"""Architectures by name. An architecture file decorates its SAE class with ``@register``; this
module, save/load, the sweep and the command line read the declarations and name none."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from monosemantic.config import ConfigError, check, dataclass_from_dict

if TYPE_CHECKING:
    from monosemantic.sae.base import SAE, SAEConfig

ARCHITECTURES: dict[str, type[SAE]] = {}
"""Every registered architecture, by its config's ``architecture`` name."""


def register(cls: type[SAE]) -> type[SAE]:
    """Class decorator: make ``cls`` available under ``cls.config_class.architecture``."""
    name = cls.config_class.architecture
    check(bool(name), "architecture", name, "a non-empty name on the config class")
    known = ARCHITECTURES.get(name)
    if known is not None and known.__qualname__ != cls.__qualname__:
        raise ValueError(f"architecture {name!r} is registered already by {known.__qualname__}")
    for axis in cls.sweep_axes:
        if axis not in architecture_fields(cls):
            raise ValueError(f"{cls.__qualname__} sweeps {axis!r}, which its config lacks")
    ARCHITECTURES[name] = cls
    return cls


def architecture(name: str) -> type[SAE]:
    """The SAE class registered as ``name``; ConfigError listing the valid names."""
    check(name in ARCHITECTURES, "architecture", name, f"one of {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[name]


def architecture_fields(cls: type[SAE]) -> dict[str, dataclasses.Field]:
    """The config fields an architecture adds to the shared ``SAEConfig`` ones."""
    from monosemantic.sae.base import SAEConfig

    shared = {f.name for f in dataclasses.fields(SAEConfig)}
    return {f.name: f for f in dataclasses.fields(cls.config_class) if f.name not in shared}


def config(name: str, **fields: Any) -> SAEConfig:
    """The config of architecture ``name`` built from ``fields`` (validated)."""
    return dataclass_from_dict(architecture(name).config_class, fields)


def config_from_dict(data: dict[str, Any]) -> SAEConfig:
    """Inverse of ``SAEConfig.to_dict``."""
    data = dict(data)
    if "architecture" not in data:
        raise ConfigError(f"an SAE config needs an 'architecture'; got fields {sorted(data)}")
    return config(data.pop("architecture"), **data)


def create(cfg: SAEConfig) -> SAE:
    """A freshly initialised SAE for ``cfg``."""
    return architecture(cfg.architecture)(cfg)


def reading_saelens(name: str) -> type[SAE] | None:
    """The architecture that loads SAELens folders of architecture ``name``, if any."""
    return next((cls for cls in ARCHITECTURES.values() if name in cls.saelens_reads), None)
