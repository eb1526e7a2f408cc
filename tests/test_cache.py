"""Activation cache: resume after interruption, checksums, corruption, memory-mapped reads."""

from __future__ import annotations

import itertools
import json
import os

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from monosemantic.data.cache import ActivationCache, CorruptShardError, write_cache
from monosemantic.data.store import shuffled_indices

META = {"model": "tiny", "hook": "model.layers.0:output", "context_size": 8}
ROWS = [5, 7, 3, 6, 4]  # shards of unequal sizes


def _shard(index, d=3, dtype=torch.float32):
    """Deterministic shard ``index`` (None past the end), like a harvest of fixed windows."""
    if index >= len(ROWS):
        return None
    g = torch.Generator().manual_seed(index)
    return torch.randn(ROWS[index], d, generator=g).to(dtype)


class Recorder:
    """make_shard that records its calls and can fail at one index (a killed run)."""

    def __init__(self, fail_at=None, dtype=torch.float32):
        self.calls: list[int] = []
        self.fail_at = fail_at
        self.dtype = dtype

    def __call__(self, index):
        self.calls.append(index)
        if index == self.fail_at:
            raise RuntimeError("killed")
        return _shard(index, dtype=self.dtype)


def _files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture
def cache_dir(tmp_path):
    folder = tmp_path / "cache"
    write_cache(folder, Recorder(), META)
    return folder


def test_interrupted_run_resumes_at_the_missing_shards(tmp_path):
    reference = tmp_path / "reference"
    write_cache(reference, Recorder(), META)

    folder = tmp_path / "resumed"
    with pytest.raises(RuntimeError, match="killed"):
        write_cache(folder, Recorder(fail_at=2), META)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["complete"] is False
    assert [s["file"] for s in manifest["shards"]] == [
        "shard-00000.safetensors",
        "shard-00001.safetensors",
    ]
    with pytest.raises(ValueError, match=r"incomplete .*2 shards.*allow_incomplete=True"):
        ActivationCache(folder)
    assert len(ActivationCache(folder, allow_incomplete=True)) == ROWS[0] + ROWS[1]

    again = Recorder()
    manifest = write_cache(folder, again, META)
    assert again.calls == [2, 3, 4, 5]  # 5 returns None: the end
    assert manifest.complete and manifest.total_rows == sum(ROWS) and manifest.d == 3
    assert _files(folder) == _files(reference)  # no temporary files left, same bytes
    ActivationCache(folder).verify()

    done = Recorder()
    write_cache(folder, done, META)
    assert done.calls == []  # a complete cache is left alone


def test_other_settings_are_refused(cache_dir):
    with pytest.raises(ValueError, match=r"other settings .*'hook'.*pick another folder or delete"):
        write_cache(cache_dir, Recorder(), {**META, "hook": "model.layers.1:output"})


def _flip_byte(path, position=-1):
    data = bytearray(path.read_bytes())
    data[position] ^= 0xFF
    path.write_bytes(bytes(data))


def test_corrupt_byte_fails_verify_and_is_rewritten(cache_dir):
    _flip_byte(cache_dir / "shard-00001.safetensors")
    cache = ActivationCache(cache_dir)  # the header is intact: only the checksum can tell
    with pytest.raises(CorruptShardError, match=r"shard-00001\.safetensors.*sha256 .*delete"):
        cache.verify()
    repair = Recorder()
    write_cache(cache_dir, repair, META)
    assert repair.calls == [1]
    ActivationCache(cache_dir).verify()


def test_truncated_or_garbled_shard_is_a_corrupt_shard_error(cache_dir):
    path = cache_dir / "shard-00002.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[:-5])
    with pytest.raises(CorruptShardError, match=r"shard-00002\.safetensors is corrupt \(.* bytes"):
        ActivationCache(cache_dir)
    path.write_bytes(data[:4])
    with pytest.raises(CorruptShardError, match="shorter than a safetensors header"):
        ActivationCache(cache_dir)
    path.write_bytes((10**9).to_bytes(8, "little") + data[8:])
    with pytest.raises(CorruptShardError, match="header length 1000000000 exceeds"):
        ActivationCache(cache_dir)
    path.write_bytes(data[:8] + b"!" + data[9:])
    with pytest.raises(CorruptShardError, match="unreadable header"):
        ActivationCache(cache_dir)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_memory_mapped_rows_equal_safetensors(tmp_path, dtype):
    folder = tmp_path / str(dtype)
    manifest = write_cache(folder, Recorder(dtype=dtype), META)
    assert manifest.dtype == str(dtype).removeprefix("torch.")
    stored = torch.cat([load_file(folder / s.file)["activations"] for s in manifest.shards])
    assert stored.dtype == dtype
    assert torch.equal(stored, torch.cat([_shard(i, dtype=dtype) for i in range(len(ROWS))]))
    cache = ActivationCache(folder)
    everything = cache.rows(np.arange(len(cache)))
    assert everything.dtype == torch.float32
    assert torch.equal(everything, stored.float())
    scattered = np.array([24, 0, 13, 5, 5, 12])  # out of order, repeated, across shards
    assert torch.equal(cache.rows(scattered), stored.float()[torch.from_numpy(scattered)])


def test_batches_are_seeded_and_resume_exactly(cache_dir):
    cache = ActivationCache(cache_dir)
    assert cache.d == 3 and len(cache) == sum(ROWS)
    everything = cache.rows(np.arange(len(cache)))
    got = list(itertools.islice(cache.batches(8, seed=2), 12))
    indices = itertools.islice(shuffled_indices(len(cache), 8, seed=2), 12)
    for batch, idx in zip(got, indices, strict=True):
        assert torch.equal(batch, everything[torch.from_numpy(idx).long()])
    resumed = list(itertools.islice(cache.batches(8, seed=2, start_step=5), 7))
    assert all(torch.equal(a, b) for a, b in zip(got[5:], resumed, strict=True))


def test_bad_shards_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"make_shard\(0\) returned None"):
        write_cache(tmp_path / "empty", lambda i: None, META)
    with pytest.raises(ValueError, match=r"make_shard\(1\) returned shape \(2, 4\); .*d=3"):
        write_cache(tmp_path / "d", lambda i: torch.ones(2, 3 + i) if i < 2 else None, META)
    with pytest.raises(ValueError, match=r"make_shard\(1\) returned dtype torch.float16"):
        write_cache(
            tmp_path / "t",
            lambda i: torch.ones(2, 3, dtype=[torch.float32, torch.float16][i]),
            META,
        )
    with pytest.raises(ValueError, match=r"returned dtype torch.int64; a cache holds float32"):
        write_cache(tmp_path / "i", lambda i: torch.ones(2, 3, dtype=torch.long), META)
    with pytest.raises(FileNotFoundError, match=r"no manifest.json .*monosemantic cache"):
        ActivationCache(tmp_path)


def test_missing_shard_file(cache_dir):
    (cache_dir / "shard-00003.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"shard-00003\.safetensors .* is missing"):
        ActivationCache(cache_dir)
    repair = Recorder()
    write_cache(cache_dir, repair, META)
    assert repair.calls == [3]


def resident_kib(folder) -> int:
    """Resident memory (KiB) of this process's mappings of files in ``folder``."""
    total, in_folder = 0, False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            fields = line.split()
            if "-" in fields[0]:  # a mapping's header: address range, perms, ..., path
                in_folder = len(fields) > 5 and fields[5].startswith(str(folder))
            elif in_folder and fields[0] == "Rss:":
                total += int(fields[1])
    return total


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps"), reason="reads Linux's /proc")
def test_random_reads_keep_at_most_one_shard_resident(tmp_path):
    """Random batches touch every page of every shard; a memory map would keep them all in the
    process's resident memory (the whole cache) if reading did not let them go."""
    shards, rows, d = 8, 2048, 64
    write_cache(tmp_path, lambda i: torch.randn(rows, d) if i < shards else None, META)
    cache = ActivationCache(tmp_path)
    shard_kib = rows * d * 4 // 1024
    peak = 0
    for batch in itertools.islice(cache.batches(256, seed=0), 64):
        assert batch.shape == (256, d)
        peak = max(peak, resident_kib(tmp_path))
    assert peak <= shard_kib, f"{peak} KiB resident, the cache is {shards * shard_kib} KiB"
