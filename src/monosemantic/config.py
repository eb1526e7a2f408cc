"""Config validation shared by every dataclass config: errors name the field, value and fix."""

from __future__ import annotations

from typing import Any


class ConfigError(ValueError):
    """A config field with an invalid value."""


def check(ok: bool, name: str, value: Any, valid: str) -> None:
    """Raise ConfigError saying which field was wrong and what would be valid."""
    if not ok:
        raise ConfigError(f"{name}={value!r} is invalid: expected {valid}")
