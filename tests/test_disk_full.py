"""A full disk while checkpointing or caching: a clear error naming the file, and the previous
checkpoint or shards intact (an injected failing flush stands for the full disk)."""

from __future__ import annotations

import errno
import os

import numpy as np
import pytest
import torch

from monosemantic import files
from monosemantic.data.cache import ActivationCache, write_cache
from monosemantic.data.store import MatrixSource
from monosemantic.sae.registry import config, create
from monosemantic.training.trainer import TrainConfig, Trainer


def fail_flush_after(monkeypatch, calls: int) -> None:
    """os.fsync in files.atomic_write raises ENOSPC after ``calls`` successful calls."""
    real, count = os.fsync, {"n": 0}

    def fsync(fd: int) -> None:
        count["n"] += 1
        if count["n"] > calls:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd)

    monkeypatch.setattr(files.os, "fsync", fsync)


def test_a_full_disk_while_checkpointing_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    source = MatrixSource(torch.randn(1024, 8, generator=torch.Generator().manual_seed(0)))
    cfg = TrainConfig(steps=20, batch_size=64, progress=False, checkpoint_every=5)
    trainer = Trainer([create(config("topk", d_in=8, d_sae=32, k=4))], cfg, tmp_path)
    fail_flush_after(monkeypatch, calls=2)  # metrics.jsonl, then the step-5 checkpoint
    with pytest.raises(OSError, match=r"could not write .*checkpoint\.pt \(No space left on dev"):
        trainer.fit(source.batches(64, seed=0))
    monkeypatch.undo()
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert saved["step"] == 5, "the step-5 checkpoint is intact"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "metrics.jsonl"]


def test_a_full_disk_while_caching_keeps_the_written_shards(tmp_path, monkeypatch):
    shards = [torch.full((4, 3), float(i)) for i in range(5)]

    def make(i: int):
        return shards[i] if i < len(shards) else None

    fail_flush_after(monkeypatch, calls=5)  # shards and manifests alternate
    with pytest.raises(OSError, match=r"could not write .*; the previous version, if any, is unch"):
        write_cache(tmp_path, make, {"model": "m"})
    monkeypatch.undo()
    assert not list(tmp_path.glob(".*.tmp")), "no temporary file left behind"
    write_cache(tmp_path, make, {"model": "m"})  # rerun: resumes and completes
    cache = ActivationCache(tmp_path)
    cache.verify()
    assert torch.equal(cache.rows(np.arange(20)), torch.cat(shards))
