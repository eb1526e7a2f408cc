"""Atomic file writes: a reader never sees a half-written file, a killed run leaves the old one."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` on a temporary path beside ``path``, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        with tmp.open("rb+") as handle:  # on disk before the rename, so a crash cannot lose it
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; outputs are meant to be shared
        os.replace(tmp, path)
    except OSError as err:  # a full disk, a quota, a read-only folder
        tmp.unlink(missing_ok=True)
        raise OSError(
            err.errno,
            f"could not write {path} ({err.strerror or err}); the previous version, if "
            "any, is unchanged",
        ) from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def remove_partial_writes(folder: str | Path) -> None:
    """Delete the temporary files ``atomic_write`` left in ``folder`` when a process was killed
    mid-write (a SIGKILL runs no cleanup); the files they were meant to replace are intact."""
    for tmp in Path(folder).glob(".*.tmp"):
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def write_json(path: str | Path, data: Any, *, indent: int | None = 2) -> Path:
    """JSON (indented, unless ``indent`` is None), atomically; values JSON cannot hold (paths,
    tensors' repr) become strings, and NaN or ±Inf become null, so every file is valid JSON."""
    text = json.dumps(finite(data), indent=indent, default=str, allow_nan=False)
    return atomic_write_bytes(path, text.encode())


def finite(data: Any) -> Any:
    """``data`` with every non-finite float (NaN, ±Inf) replaced by None, recursively."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: finite(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [finite(v) for v in data]
    return data


def read_safetensors(path: str | Path) -> dict[str, Any]:
    """The tensors of a safetensors file; ValueError naming the file when it is not one (a
    truncated, corrupt or other kind of file). Never unpickles."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{path} is not a readable safetensors file: {err}") from None
