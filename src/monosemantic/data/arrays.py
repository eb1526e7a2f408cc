"""Any matrix as an activation source: rows are samples (e.g. cells of single-cell data), columns
are dimensions. Loaded without pickle: ``.npy`` (``allow_pickle=False``), ``.safetensors``,
``.csv``, ``.parquet``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

SUPPORTED = (".npy", ".safetensors", ".csv", ".parquet")


def load_matrix(
    path: str | Path, *, key: str | None = None, drop_non_finite: bool = False
) -> torch.Tensor:
    """The matrix in ``path`` as float32 ``[n, d]``; ``key`` picks a tensor in a .safetensors file.

    A .csv may start with a header row (detected: a first row that does not parse as numbers).
    A .parquet contributes its numeric columns; other columns are skipped with a warning. Rows
    holding NaN or Inf are refused, naming them, or with ``drop_non_finite`` dropped and counted
    in the log.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"no matrix file {str(path)!r}")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        matrix = _npy(path)
    elif suffix == ".safetensors":
        matrix = _safetensors(path, key)
    elif suffix == ".csv":
        matrix = _csv(path)
    elif suffix == ".parquet":
        matrix = _parquet(path)
    else:
        raise ValueError(
            f"unsupported matrix file type {suffix!r} ({path}); supported: {', '.join(SUPPORTED)}"
        )
    if matrix.ndim != 2:
        raise ValueError(
            f"{path} holds an array of shape {tuple(matrix.shape)}; expected a 2-D matrix "
            "[n_samples, d] (reshape it, e.g. x.reshape(-1, x.shape[-1]))"
        )
    if matrix.shape[0] == 0 or matrix.shape[1] == 0:
        raise ValueError(f"{path} holds an empty matrix of shape {tuple(matrix.shape)}")
    matrix = matrix.float()
    finite = torch.isfinite(matrix).all(dim=1)
    bad = (~finite).nonzero().squeeze(-1)
    if bad.numel() and drop_non_finite and bad.numel() < len(matrix):
        dropped = f"{path}: dropped {bad.numel()} of {len(matrix)} rows holding NaN or Inf"
        warnings.warn(dropped, stacklevel=2)
        return matrix[finite]
    if bad.numel():
        shown = ", ".join(str(int(i)) for i in bad[:8]) + (", ..." if bad.numel() > 8 else "")
        raise ValueError(
            f"{path}: {bad.numel()} of {matrix.shape[0]} rows hold NaN or Inf (rows {shown}); "
            "drop or impute them, or pass --drop-non-finite to leave them out"
        )
    return matrix


def _non_numeric(path: Path, what: str) -> ValueError:
    return ValueError(f"{path} holds non-numeric data ({what}); expected a numeric matrix")


def _npy(path: Path) -> torch.Tensor:
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as err:  # object arrays need pickle, which we never run
        raise _non_numeric(path, str(err)) from err
    if array.dtype.kind not in "biuf":  # bool, int, unsigned, float
        raise _non_numeric(path, f"dtype {array.dtype}")
    return torch.from_numpy(np.asarray(array, dtype=np.float32))


def _safetensors(path: Path, key: str | None) -> torch.Tensor:
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        keys = sorted(f.keys())
        if key is None:
            if len(keys) != 1:
                raise ValueError(
                    f"{path} holds {len(keys)} tensors {keys}; pick one with key=... (--key)"
                )
            key = keys[0]
        if key not in keys:
            raise ValueError(f"{path} has no tensor {key!r}; its tensors: {keys}")
        tensor = f.get_tensor(key)
    if tensor.dtype.is_complex:
        raise _non_numeric(path, f"dtype {tensor.dtype}")
    return tensor


def _csv(path: Path) -> torch.Tensor:
    with path.open(encoding="utf-8") as f:
        first = f.readline()
    try:
        [float(v) for v in first.split(",")]
        header = 0
    except ValueError:
        header = 1
    try:
        array = np.loadtxt(path, delimiter=",", skiprows=header, dtype=np.float32, ndmin=2)
    except ValueError as err:
        raise _non_numeric(path, str(err)) from err
    return torch.from_numpy(array)


def _parquet(path: Path) -> torch.Tensor:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    numeric = [
        f.name for f in table.schema if pa.types.is_integer(f.type) or pa.types.is_floating(f.type)
    ]
    skipped = [name for name in table.column_names if name not in numeric]
    if not numeric:
        raise _non_numeric(path, f"no numeric columns among {table.column_names}")
    if skipped:
        warnings.warn(f"{path}: skipping non-numeric columns {skipped}", stacklevel=3)
    columns = [table.column(name).to_numpy(zero_copy_only=False) for name in numeric]
    return torch.from_numpy(np.stack(columns, axis=1).astype(np.float32))
