"""Where and how code runs: dtype names, the user cache folder, devices and threads.

The lowest layer beside ``config``, ``files`` and ``hooks``: every other module takes these from
here, so a dtype name or a cache path means the same thing everywhere.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

DTYPES = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "float64": torch.float64,
}
"""The dtype names configs and the command line accept."""


def dtype_named(name: str) -> torch.dtype:
    """The torch dtype called ``name``; ValueError listing the valid names otherwise."""
    if name not in DTYPES:
        raise ValueError(f"dtype={name!r} is invalid: expected one of {sorted(DTYPES)}")
    return DTYPES[name]


def cache_dir(*parts: str) -> Path:
    """The user cache folder ``$XDG_CACHE_HOME/monosemantic/...`` (default ``~/.cache``)."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root.joinpath("monosemantic", *parts)


def device_of(model: nn.Module) -> torch.device:
    """The device of a module's first parameter (CPU for a module without parameters)."""
    param = next(model.parameters(), None)
    return torch.device("cpu") if param is None else param.device


def set_threads(threads: int) -> None:
    """Use ``threads`` CPU threads for torch; 0 keeps torch's own choice."""
    if threads < 0:
        raise ValueError(f"threads={threads} is invalid: expected 0 (torch's choice) or more")
    if threads:
        torch.set_num_threads(threads)
