"""Activations on disk: ``monosemantic cache`` writes them once, training reads them many times.

A cache is a folder of shards ``shard-00000.safetensors`` (one tensor ``activations [rows, d]``
each, one row per token position) and ``manifest.json``:

    {"format": "monosemantic-activation-cache", "version": 1, "meta": {...model, hook, ...},
     "d": 576, "dtype": "bfloat16", "total_rows": 123, "complete": true,
     "shards": [{"file": "shard-00000.safetensors", "rows": 100, "sha256": "..."}, ...]}

Every file is written atomically (temporary file, then ``os.replace``) and the manifest after
every shard, so a killed run resumes where it stopped. Reading memory-maps the shards and drops
each shard's pages from resident memory once a batch's rows are copied out, so a cache larger
than RAM trains fine and the process holds at most one shard's pages beyond the batch.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import struct
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save

from monosemantic.data.store import WHOLE, Part, shuffled_indices
from monosemantic.files import atomic_write_bytes, remove_partial_writes

MANIFEST = "manifest.json"
FORMAT = "monosemantic-activation-cache"
KEY = "activations"
# cache dtype: (safetensors dtype, numpy dtype of the memory map, torch dtype of the rows)
_DTYPES = {
    "float32": ("F32", np.float32, torch.float32),
    "float16": ("F16", np.float16, torch.float16),
    "bfloat16": ("BF16", np.uint16, torch.bfloat16),  # numpy has no bfloat16: map bits as uint16
}
_NAME_OF = {torch_dtype: name for name, (_, _, torch_dtype) in _DTYPES.items()}


class CorruptShardError(ValueError):
    """A shard whose bytes do not match the manifest or whose safetensors header is inconsistent."""


@dataclass
class ShardInfo:
    """One shard's entry in the manifest."""

    file: str
    rows: int
    sha256: str


@dataclass
class Manifest:
    """What ``manifest.json`` records; ``complete`` is False while ``write_cache`` is running."""

    meta: dict[str, Any]
    d: int
    dtype: str
    shards: list[ShardInfo] = field(default_factory=list)
    complete: bool = False

    @property
    def total_rows(self) -> int:
        return sum(s.rows for s in self.shards)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        return {"format": FORMAT, "version": 1, **data, "total_rows": self.total_rows}

    @classmethod
    def read(cls, folder: Path) -> Manifest:
        path = folder / MANIFEST
        if not path.is_file():
            raise FileNotFoundError(
                f"no {MANIFEST} in {str(folder)!r}: not an activation cache; write one with "
                "`monosemantic cache`"
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{path} is not valid JSON: {err}") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"{path} is not a {FORMAT} manifest")
        try:
            manifest = cls(
                meta=data["meta"],
                d=data["d"],
                dtype=data["dtype"],
                shards=[ShardInfo(**s) for s in data["shards"]],
                complete=data["complete"],
            )
        except (KeyError, TypeError) as err:
            raise ValueError(f"{path} lacks or mistypes a field: {err}") from None
        outside = [s.file for s in manifest.shards if Path(s.file).name != s.file]
        if outside:
            raise ValueError(
                f"{path} names shard files outside its folder ({', '.join(outside[:3])}): a "
                "manifest may only name files beside it"
            )
        return manifest

    def write(self, folder: Path) -> None:
        atomic_write_bytes(folder / MANIFEST, json.dumps(self.to_dict(), indent=1).encode())


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.safetensors"


def write_cache(
    folder: Path, make_shard: Callable[[int], torch.Tensor | None], meta: dict[str, Any]
) -> Manifest:
    """Write ``make_shard(0), make_shard(1), ...`` (each ``[rows, d]``) until it returns None.

    ``meta`` (model, hook, dtype, context size, ...) is recorded in the manifest. If ``folder``
    holds a cache from an interrupted run with the same ``meta``, its shards are checked against
    their sha256 and only missing or corrupt ones are made again; a cache with other ``meta`` is
    an error rather than being overwritten.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    remove_partial_writes(folder)
    meta = json.loads(json.dumps(meta))  # what the manifest will hold: tuples become lists
    old = _resumable(folder, meta)
    old_shards = [] if old is None else old.shards
    ok = [_shard_ok(folder, info) for info in old_shards]
    if old is not None and old.complete and all(ok):
        return old
    manifest = None if old is None else Manifest(meta, old.d, old.dtype, list(old_shards))
    index = 0
    while True:
        if index < len(old_shards) and ok[index]:
            index += 1
            continue
        if old is not None and old.complete and index >= len(old_shards):
            break  # the end is known: do not ask make_shard past it again
        shard = make_shard(index)
        if shard is None:
            break
        _check_shard(shard, index, manifest)
        if manifest is None:
            manifest = Manifest(meta, d=shard.shape[1], dtype=_NAME_OF[shard.dtype])
        manifest.shards[index : index + 1] = [_write_shard(folder, index, shard)]
        manifest.write(folder)
        index += 1
    if manifest is None:
        raise ValueError("make_shard(0) returned None: there are no activations to cache")
    del manifest.shards[index:]  # listed by an old manifest beyond the new end
    manifest.complete = True
    manifest.write(folder)
    return manifest


def _resumable(folder: Path, meta: dict[str, Any]) -> Manifest | None:
    """The manifest already in ``folder`` if it was written with the same ``meta``."""
    if not (folder / MANIFEST).exists():
        return None
    old = Manifest.read(folder)
    if old.meta != meta:
        keys = sorted(set(old.meta) | set(meta))
        diff = {k: (old.meta.get(k), meta.get(k)) for k in keys if old.meta.get(k) != meta.get(k)}
        raise ValueError(
            f"{folder} already holds an activation cache made with other settings "
            f"(field: (cached, requested)) {diff}; pick another folder or delete this one"
        )
    return old


def _shard_ok(folder: Path, info: ShardInfo) -> bool:
    path = folder / info.file
    return path.is_file() and sha256_file(path) == info.sha256


def _check_shard(shard: torch.Tensor, index: int, like: Manifest | None) -> None:
    """A shard must be ``[rows > 0, d]`` with the d and dtype of the cache's other shards."""
    if shard.dtype not in _NAME_OF:
        raise ValueError(
            f"make_shard({index}) returned dtype {shard.dtype}; a cache holds float32, float16 "
            "or bfloat16"
        )
    if like is not None and _NAME_OF[shard.dtype] != like.dtype:
        raise ValueError(
            f"make_shard({index}) returned dtype {shard.dtype}; the cache holds {like.dtype}"
        )
    d = shard.shape[-1] if like is None else like.d
    if shard.ndim != 2 or shard.shape[0] == 0 or shard.shape[1] != d:
        raise ValueError(
            f"make_shard({index}) returned shape {tuple(shard.shape)}; expected [rows > 0, "
            f"d={d}] (return None to end the cache)"
        )


def _write_shard(folder: Path, index: int, shard: torch.Tensor) -> ShardInfo:
    data = save({KEY: shard.detach().cpu().contiguous()})
    name = shard_name(index)
    atomic_write_bytes(folder / name, data)
    return ShardInfo(file=name, rows=shard.shape[0], sha256=hashlib.sha256(data).hexdigest())


class _Shard:
    """One shard's rows ``[rows, d]`` memory-mapped read-only; ``release`` drops the pages the
    process has read from its resident memory (they stay in the page cache, so a later read is
    cheap). Without it, reading random rows would grow resident memory to the whole cache."""

    def __init__(self, mapped: mmap.mmap, rows: np.ndarray) -> None:
        self.mapped = mapped
        self.rows = rows

    def release(self) -> None:
        if hasattr(mmap, "MADV_DONTNEED"):  # Linux, macOS; elsewhere the OS decides
            self.mapped.madvise(mmap.MADV_DONTNEED)


def _memmap(path: Path, rows: int, d: int, dtype: str) -> _Shard:
    """Map the ``activations`` tensor of a safetensors file, checking its header against the file.

    Layout: 8-byte little-endian header length n, n bytes of JSON header (dtype, shape,
    data_offsets relative to the end of the header), then the raw data.
    """
    size = path.stat().st_size

    def corrupt(why: str) -> CorruptShardError:
        return CorruptShardError(
            f"shard {path} is corrupt ({why}); delete it and rerun `monosemantic cache` with the "
            "same settings to rewrite it"
        )

    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise corrupt(f"{size} bytes, shorter than a safetensors header")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            raise corrupt(f"header length {n} exceeds the file size {size}")
        try:
            header = json.loads(f.read(n))
            entry = header[KEY]
            kind, shape, (start, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
        except (ValueError, KeyError, TypeError) as err:
            raise corrupt(f"unreadable header: {err!r}") from err
    kind_expected, np_dtype, _ = _DTYPES[dtype]
    if kind != kind_expected:
        raise corrupt(f"dtype {kind}, the manifest says {kind_expected}")
    if shape != [rows, d]:
        raise corrupt(f"shape {shape}, the manifest says [{rows}, {d}]")
    expected = rows * d * np.dtype(np_dtype).itemsize
    if end - start != expected or 8 + n + end != size:
        raise corrupt(f"{size} bytes, expected {8 + n + start + expected} for shape {shape}")
    with path.open("rb") as f:
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    array = np.frombuffer(mapped, dtype=np_dtype, count=rows * d, offset=8 + n + start)
    return _Shard(mapped, array.reshape(rows, d))


class ActivationCache:
    """A cache folder as an ``ActivationSource``: shards memory-mapped, rows gathered on demand.

    ``allow_incomplete`` lets a cache still being written (or interrupted) serve its shards so far;
    ``manifest``: the folder's manifest when the caller has read it already.
    """

    def __init__(
        self,
        folder: Path | str,
        *,
        allow_incomplete: bool = False,
        manifest: Manifest | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.manifest = manifest if manifest is not None else Manifest.read(self.folder)
        if not self.manifest.complete and not allow_incomplete:
            raise ValueError(
                f"the activation cache in {self.folder} is incomplete "
                f"({len(self.manifest.shards)} shards so far): rerun `monosemantic cache` with the "
                "same settings to finish it, or pass allow_incomplete=True to use what is there"
            )
        self.d = self.manifest.d
        self.torch_dtype = _DTYPES[self.manifest.dtype][2]
        self.maps = []
        for info in self.manifest.shards:
            path = self.folder / info.file
            if not path.is_file():
                raise FileNotFoundError(
                    f"shard {path} listed in {MANIFEST} is missing; rerun `monosemantic cache` "
                    "with the same settings to rewrite it"
                )
            self.maps.append(_memmap(path, info.rows, self.d, self.manifest.dtype))
        # starts[i]: global index of shard i's first row; starts[-1] = total rows
        self.starts = np.cumsum([0] + [s.rows for s in self.manifest.shards])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def rows(self, indices: np.ndarray) -> torch.Tensor:
        """Rows ``[len(indices), d]`` (float32) at global ``indices``, in that order."""
        indices = np.asarray(indices, dtype=np.int64)
        if len(indices) and (indices.min() < 0 or indices.max() >= len(self)):
            raise IndexError(f"row indices must lie in [0, {len(self)})")
        # Read in ascending order (kinder to the disk), shard by shard, then put rows in place.
        order = np.argsort(indices, kind="stable")
        ascending = indices[order]
        bounds = np.searchsorted(ascending, self.starts)
        # numpy, not torch indexing: this is many small copies, which torch's thread pool
        # slows down badly when the training step competes for the same cores.
        out = np.empty((len(indices), self.d), dtype=_DTYPES[self.manifest.dtype][1])
        for s in np.flatnonzero(bounds[1:] > bounds[:-1]):
            lo, hi = bounds[s], bounds[s + 1]
            out[order[lo:hi]] = self.maps[s].rows[ascending[lo:hi] - self.starts[s]]
            self.maps[s].release()  # at most one shard's pages resident at a time
        return torch.from_numpy(out).view(self.torch_dtype).float()

    def batches(
        self, batch_size: int, *, seed: int, start_step: int = 0, part: Part = WHOLE
    ) -> Iterator[torch.Tensor]:
        """Float32 batches ``[batch_size / count, d]`` of rows, see ``store.ActivationSource``;
        a part reads only its own rows, from whichever shards hold them."""
        indices = shuffled_indices(
            len(self), batch_size, seed=seed, start_step=start_step, part=part
        )
        for idx in indices:
            yield self.rows(idx)

    def verify(self) -> None:
        """Recompute every shard's sha256; ``CorruptShardError`` on the first mismatch."""
        for info in self.manifest.shards:
            path = self.folder / info.file
            actual = sha256_file(path)
            if actual != info.sha256:
                raise CorruptShardError(
                    f"shard {info.file} in {self.folder} is corrupt: sha256 {actual}, the manifest "
                    f"expects {info.sha256}; delete {path} and rerun `monosemantic cache` with the "
                    "same settings to rewrite it"
                )
