"""Activation stores: where the trainer's ``[batch, d]`` tensors come from.

- ``ActivationSource``: a finite set of rows served as an infinite, seeded, resumable stream of
  shuffled batches (``MatrixSource`` in memory, ``cache.ActivationCache`` on disk);
- ``ShuffleBuffer``: mixes rows of a stream of chunks (e.g. activations harvested live, one
  chunk per forward pass) within a bounded buffer;
- ``check_finite``: the guard the trainer runs on every batch.

Data-parallel training splits every global batch into equal parts, one per process: a source's
``batches(b, ..., part=(i, n))`` yields part i of n of each batch of ``b`` rows, so n processes
together see exactly the rows one process would (``part_rows``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol

import numpy as np
import torch

from monosemantic.hooks import is_layer_pattern, layer_points

Step = torch.Tensor | dict[str, torch.Tensor]
"""One training step's activations: rows [batch, d], or ``{hook: [batch, d_hook]}`` from one
model pass at several hook points."""


def rows_at(step: Step, hook: str) -> torch.Tensor:
    """The rows [n, d] a step holds for ``hook`` (a plain tensor is every hook's); a layer
    pattern (``model.layers.*:output``) gets the rows of every layer it names, stacked layer
    after layer: a multi-layer SAE's inputs."""
    if isinstance(step, torch.Tensor):
        return step
    if hook in step or not is_layer_pattern(hook):
        return step[hook]
    layers = layer_points(hook, step)
    if not layers:
        raise KeyError(hook)
    return torch.cat([step[point] for point in layers])


Part = tuple[int, int]
"""(index, count): part ``index`` of ``count`` equal parts of every batch."""
WHOLE: Part = (0, 1)


def part_rows(batch_size: int, part: Part) -> slice:
    """The rows of a global batch of ``batch_size`` that ``part`` holds (contiguous, so the
    parts in order are the batch)."""
    index, count = part
    if batch_size % count:
        raise ValueError(
            f"batch_size={batch_size} does not split into {count} equal parts, one per process: "
            f"give a multiple of {count}"
        )
    size = batch_size // count
    return slice(index * size, (index + 1) * size)


class ActivationSource(Protocol):
    """A set of ``d``-dimensional rows served as shuffled batches.

    ``batches`` is infinite (a fresh permutation each epoch, derived from ``seed`` and the epoch)
    and deterministic, and ``batches(b, seed=s, start_step=k)`` yields exactly the k-th and later
    batches of ``batches(b, seed=s)``, which makes resuming a training run exact. With ``part``,
    each batch is that part of the global one (``part_rows``).
    """

    @property
    def d(self) -> int:
        """Width of a row; a plain attribute satisfies this too."""
        ...

    def batches(
        self, batch_size: int, *, seed: int, start_step: int = 0, part: Part = WHOLE
    ) -> Iterator[torch.Tensor]: ...


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """A permutation of ``range(n)`` that depends only on ``(seed, epoch)`` (any integer seed)."""
    index_dtype = np.int32 if n < 2**31 else np.int64  # halves the memory of huge caches
    return np.random.default_rng([seed % 2**64, epoch]).permutation(np.arange(n, dtype=index_dtype))


def shuffled_indices(
    n: int, batch_size: int, *, seed: int, start_step: int = 0, part: Part = WHOLE
) -> Iterator[np.ndarray]:
    """Row indices ``[batch_size / count]`` of each batch's ``part``, from ``start_step`` on,
    forever.

    The stream is the concatenation of ``epoch_permutation(n, seed, 0)``, ``(..., 1)``, ...; batch
    k is its slice ``[k * batch_size, (k + 1) * batch_size)``, so a batch may span two epochs and
    the k-th batch is found without generating the earlier ones.
    """
    if n < 1:
        raise ValueError("cannot draw batches from an empty source (0 rows)")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} is invalid: expected >= 1")
    if start_step < 0:
        raise ValueError(f"start_step={start_step} is invalid: expected >= 0")
    mine = part_rows(batch_size, part)
    epoch, offset = divmod(start_step * batch_size, n)
    perm = epoch_permutation(n, seed, epoch)
    while True:
        pieces = []
        need = batch_size
        while need:
            piece = perm[offset : offset + need]
            pieces.append(piece)
            need -= len(piece)
            offset += len(piece)
            if offset == n:
                epoch, offset = epoch + 1, 0
                perm = epoch_permutation(n, seed, epoch)
        yield (np.concatenate(pieces) if len(pieces) > 1 else pieces[0])[mine]


class MatrixSource:
    """An in-memory matrix ``[n, d]`` (any activations, e.g. single-cell data) as a source."""

    def __init__(self, matrix: torch.Tensor) -> None:
        if matrix.ndim != 2 or matrix.shape[0] == 0:
            raise ValueError(
                f"MatrixSource needs a non-empty 2-D matrix [n, d], got shape {tuple(matrix.shape)}"
            )
        self.matrix = matrix
        self.d = matrix.shape[1]

    def __len__(self) -> int:
        return self.matrix.shape[0]

    def batches(
        self, batch_size: int, *, seed: int, start_step: int = 0, part: Part = WHOLE
    ) -> Iterator[torch.Tensor]:
        """Batches ``[batch_size / count, d]`` of rows, see ``ActivationSource``."""
        indices = shuffled_indices(
            len(self), batch_size, seed=seed, start_step=start_step, part=part
        )
        for idx in indices:
            yield self.matrix[torch.from_numpy(idx.astype(np.int64))]


class ShuffleBuffer:
    """Batches ``[batch_size, d]`` mixing rows of many chunks ``[m, d]`` with at most ``capacity``
    rows held.

    Fill the buffer, emit about half of it (random slots), refill those slots, and so on; when the
    chunks run out the rest is emitted in random order, the last batch possibly shorter. Every
    input row comes out exactly once. Rows of a chunk are strongly correlated (one document,
    neighbouring tokens), which is why they are mixed with many other chunks before training.
    """

    def __init__(
        self, chunks: Iterable[torch.Tensor], capacity: int, batch_size: int, seed: int
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} is invalid: expected >= 1")
        if capacity < 2 * batch_size:
            raise ValueError(
                f"capacity={capacity} is invalid: expected >= 2 * batch_size = {2 * batch_size} "
                "(the buffer emits half of itself at a time; more capacity mixes better)"
            )
        self.chunks = chunks
        self.capacity = capacity
        self.batch_size = batch_size
        self.seed = seed
        self.held = 0
        """Rows in the buffer right now (never above ``capacity``)."""

    def __iter__(self) -> Iterator[torch.Tensor]:
        generator = torch.Generator().manual_seed(self.seed)
        emit = (self.capacity // 2) // self.batch_size * self.batch_size
        buffer: torch.Tensor | None = None
        # Each row is copied in once and out once: emitted slots are refilled in place rather
        # than compacting the buffer.
        free = torch.arange(self.capacity)  # empty slots, filled front to back
        self.held = 0
        for chunk in self.chunks:
            if chunk.ndim != 2:
                raise ValueError(f"chunks must be [rows, d], got shape {tuple(chunk.shape)}")
            if buffer is None:
                buffer = chunk.new_empty((self.capacity, chunk.shape[1]))
            while len(chunk):
                take = min(len(free), len(chunk))
                buffer[free[:take].to(buffer.device)] = chunk[:take]
                free, chunk = free[take:], chunk[take:]
                self.held += take
                if self.held == self.capacity:
                    slots = torch.randperm(self.capacity, generator=generator)[:emit]
                    yield from self._emit(buffer, slots)
                    free = slots.sort().values  # refill in slot order: sequential-ish writes
        if buffer is not None:
            filled = torch.ones(self.capacity, dtype=torch.bool)
            filled[free] = False
            slots = filled.nonzero().squeeze(1)
            yield from self._emit(buffer, slots[torch.randperm(len(slots), generator=generator)])

    def _emit(self, buffer: torch.Tensor, slots: torch.Tensor) -> Iterator[torch.Tensor]:
        """The rows in ``slots`` (in that order) as batches; their slots become free."""
        out = buffer[slots.to(buffer.device)]
        self.held -= len(slots)
        yield from out.split(self.batch_size)


class NonFiniteActivationError(ValueError):
    """A batch of activations holding NaN or Inf."""


def check_finite(batch: torch.Tensor, *, step: int, hook: str, where: str = "step") -> None:
    """Raise ``NonFiniteActivationError`` if ``batch`` holds NaN or Inf (the trainer's guard and
    evaluation's), naming the rows."""
    if bool(torch.isfinite(batch).all()):
        return
    n_nan = int(torch.isnan(batch).sum())
    n_inf = int(torch.isinf(batch).sum())
    bad = (~torch.isfinite(batch.reshape(-1, batch.shape[-1]))).any(-1).nonzero().squeeze(-1)
    rows = ", ".join(str(int(r)) for r in bad[:8]) + (", ..." if bad.numel() > 8 else "")
    raise NonFiniteActivationError(
        f"non-finite activations in {where} {step}, hook {hook!r}: {n_nan} NaN and {n_inf} Inf "
        f"among {batch.numel()} values, in rows {rows} of the batch. A model that overflowed in "
        "its dtype is the usual cause: run it in float32 (--dtype float32), or check the model "
        "and its inputs"
    )
