"""Where and how code runs: dtype names, autocast, the user cache folder, devices and threads.

The lowest layer beside ``config``, ``files`` and ``hooks``: every other module takes these from
here, so a dtype name or a cache path means the same thing everywhere.
"""

from __future__ import annotations

import functools
import os
import warnings
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


def mixed_precision(device_type: str, name: str | None) -> torch.autocast:
    """torch.autocast in the dtype called ``name`` on ``device_type``; disabled for None. On a CPU
    without fast kernels for that dtype it warns once (see ``cpu_has_fast_matmul``)."""
    if name is not None and device_type == "cpu":
        warn_if_slow_on_cpu(name)
    return torch.autocast(
        device_type, dtype=dtype_named(name or "bfloat16"), enabled=name is not None
    )


def cpu_has_fast_matmul(name: str) -> bool:
    """Whether torch routes ``name`` (bfloat16, float16) matmuls on this CPU to oneDNN, which
    needs AVX-512 (bf16) or AVX-512-FP16 / AMX (fp16). Without it torch falls back to a reference
    kernel: on an AVX2 EPYC, 1.1 GFLOP/s in bf16 against 90 in float32."""
    supported = {
        "bfloat16": torch.ops.mkldnn._is_mkldnn_bf16_supported,
        "float16": torch.ops.mkldnn._is_mkldnn_fp16_supported,
    }
    return name not in supported or bool(supported[name]())


@functools.cache
def warn_if_slow_on_cpu(name: str) -> None:
    """Warn, once per dtype, when ``name`` autocast on this CPU lacks fast matmuls."""
    if not cpu_has_fast_matmul(name):
        warnings.warn(
            f"{name} autocast on this CPU is tens of times slower than float32: the CPU lacks the "
            f"instructions torch's fast {name} matmuls need (AVX-512 or AMX), so they run in a "
            "reference kernel. Train and harvest in float32 here (leave out --autocast), or on a "
            "GPU.",
            stacklevel=3,
        )


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
