"""Activation stores: seeded permutations, exact resume, shuffle-buffer mixing and bounds."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from monosemantic.data.store import (
    MatrixSource,
    NonFiniteActivationError,
    ShuffleBuffer,
    check_finite,
    shuffled_indices,
)


def _take(iterator, k):
    return list(itertools.islice(iterator, k))


def test_every_epoch_is_a_permutation_and_epochs_differ():
    n, batch = 23, 5  # batches straddle epoch boundaries
    flat = np.concatenate(_take(shuffled_indices(n, batch, seed=3), 3 * n // batch + 1))
    epochs = flat[: 3 * n].reshape(3, n)
    for epoch in epochs:
        assert sorted(epoch.tolist()) == list(range(n))
    assert not np.array_equal(epochs[0], epochs[1])
    assert not np.array_equal(epochs[1], epochs[2])


def test_indices_are_seeded_and_resume_exactly():
    n, batch = 23, 5
    full = _take(shuffled_indices(n, batch, seed=7), 30)
    assert all(len(b) == batch for b in full)
    again = _take(shuffled_indices(n, batch, seed=7), 30)
    assert all(np.array_equal(a, b) for a, b in zip(full, again, strict=True))
    other = _take(shuffled_indices(n, batch, seed=8), 30)
    assert not all(np.array_equal(a, b) for a, b in zip(full, other, strict=True))
    for start in (1, 4, 5, 13, 29):
        resumed = _take(shuffled_indices(n, batch, seed=7, start_step=start), 30 - start)
        assert all(np.array_equal(a, b) for a, b in zip(full[start:], resumed, strict=True))


def test_batch_larger_than_the_data_and_negative_seed():
    batches = _take(shuffled_indices(3, 7, seed=-1), 3)
    flat = np.concatenate(batches)
    assert [sorted(flat[i : i + 3].tolist()) for i in range(0, 21, 3)] == [[0, 1, 2]] * 7


def test_index_errors():
    with pytest.raises(ValueError, match="empty source"):
        next(shuffled_indices(0, 4, seed=0))
    with pytest.raises(ValueError, match="batch_size=0 is invalid"):
        next(shuffled_indices(5, 0, seed=0))
    with pytest.raises(ValueError, match="start_step=-1 is invalid"):
        next(shuffled_indices(5, 2, seed=0, start_step=-1))


def test_matrix_source_serves_rows_of_the_permutation():
    matrix = torch.arange(40.0).reshape(20, 2)  # row i = [2i, 2i + 1]
    source = MatrixSource(matrix)
    assert source.d == 2 and len(source) == 20
    got = _take(source.batches(6, seed=1), 10)
    indices = _take(shuffled_indices(20, 6, seed=1), 10)
    for batch, idx in zip(got, indices, strict=True):
        assert torch.equal(batch, matrix[torch.from_numpy(idx).long()])
    resumed = _take(source.batches(6, seed=1, start_step=4), 6)
    assert all(torch.equal(a, b) for a, b in zip(got[4:], resumed, strict=True))
    with pytest.raises(ValueError, match=r"non-empty 2-D matrix \[n, d\], got shape \(5,\)"):
        MatrixSource(torch.ones(5))


def _chunks(n_chunks, rows, log=None, buffer=None, capacity=None):
    """Chunk c holds rows [global row id, c]; records rows pulled and checks the buffer bound."""
    for c in range(n_chunks):
        if buffer is not None:
            assert buffer.held <= capacity
        ids = torch.arange(c * rows, (c + 1) * rows, dtype=torch.float32)
        if log is not None:
            log.append(rows)
        yield torch.stack([ids, torch.full_like(ids, c)], dim=1)


def test_shuffle_buffer_emits_each_row_once_mixed_and_bounded():
    n_chunks, rows, capacity, batch = 40, 16, 128, 16
    pulled: list[int] = []
    buffer = ShuffleBuffer([], capacity=capacity, batch_size=batch, seed=0)
    buffer.chunks = _chunks(n_chunks, rows, pulled, buffer, capacity)
    emitted = 0
    out = []
    for b in buffer:
        out.append(b)
        emitted += len(b)
        # rows taken from the chunks but not yet emitted sit in the buffer (or the current chunk)
        assert sum(pulled) - emitted <= capacity + rows
        assert buffer.held <= capacity
    assert all(len(b) == batch for b in out)  # 640 rows = 40 full batches
    ids = torch.cat(out)[:, 0]
    assert sorted(ids.long().tolist()) == list(range(n_chunks * rows))
    # the first batch draws on the 8 chunks that filled the buffer, not just one or two
    assert len(set(out[0][:, 1].tolist())) >= 5


def test_shuffle_buffer_flushes_a_short_last_batch_and_big_chunks():
    # one chunk larger than the buffer, 100 rows not a multiple of the batch size
    chunks = [torch.arange(100.0).reshape(100, 1)]
    out = list(ShuffleBuffer(chunks, capacity=32, batch_size=16, seed=5))
    assert [len(b) for b in out][-1] == 100 % 16
    assert sorted(torch.cat(out).flatten().long().tolist()) == list(range(100))


def test_shuffle_buffer_is_seeded():
    def run(seed):
        return torch.cat(list(ShuffleBuffer(_chunks(10, 8), capacity=32, batch_size=8, seed=seed)))

    assert torch.equal(run(1), run(1))
    assert not torch.equal(run(1), run(2))
    with pytest.raises(ValueError, match=r"capacity=10 is invalid: expected >= 2 \* batch_size"):
        ShuffleBuffer([], capacity=10, batch_size=8, seed=0)


def test_check_finite():
    check_finite(torch.randn(4, 3), step=0, hook="h")
    bad = torch.zeros(4, 3)
    bad[0, 0] = float("nan")
    bad[1, 1] = float("nan")
    bad[2, 2] = float("-inf")
    with pytest.raises(
        NonFiniteActivationError,
        match=r"step 7, hook 'model.layers.0:output': 2 NaN and 1 Inf among 12 .*float32",
    ):
        check_finite(bad, step=7, hook="model.layers.0:output")
