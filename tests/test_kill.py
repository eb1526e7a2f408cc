"""`monosemantic train` killed with SIGKILL at random points, then resumed, ends with the same
SAE as a run never interrupted (issue 13: kills)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file


def command(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "monosemantic.cli", "-q", "train", "--data", str(data),
        "--out", str(out), "--steps", "6000", "--batch-size", "256", "--expansion", "8",
        "--k", "8", "--checkpoint-every", "100", "--no-progress", *extra,
    ]  # fmt: skip


def kill_when(process: subprocess.Popen, reached, timeout: float = 240.0) -> bool:
    """SIGKILL ``process`` as soon as ``reached()`` is true; False if it ended first."""
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        if reached():
            process.send_signal(signal.SIGKILL)
            process.wait()
            return True
        time.sleep(0.05)
    process.wait()
    return False


def lines_in(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def run(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_train_killed_at_random_points_resumes_to_the_same_sae(tmp_path: Path) -> None:
    data = tmp_path / "rows.npy"
    np.save(data, np.random.default_rng(0).normal(size=(8000, 64)).astype(np.float32))
    assert run(command(data, tmp_path / "whole")).returncode == 0
    out = tmp_path / "killed"
    rng = random.Random(0)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    kills = 0
    for target in sorted(rng.sample(range(3, 110), 3)):  # killed at three random logged steps
        resume = ["--resume"] if (out / "train" / "checkpoint.pt").exists() else []
        fresh = [] if resume or not out.exists() else ["--overwrite"]
        process = subprocess.Popen(command(data, out, *resume, *fresh), env=env)
        metrics = out / "train" / "metrics.jsonl"
        kills += kill_when(process, lambda m=metrics, t=target: lines_in(m) >= t)
    assert kills == 3, "each kill lands while it runs"
    (out / "train" / ".checkpoint.pt.killed.tmp").write_bytes(b"half")  # as a kill mid-write leaves
    while True:  # then let it finish
        resume = ["--resume"] if (out / "train" / "checkpoint.pt").exists() else []
        fresh = [] if resume or not out.exists() else ["--overwrite"]
        done = run(command(data, out, *resume, *fresh))
        assert done.returncode == 0, done.stderr
        if (out / "summary.json").exists():
            break
    (folder,) = (tmp_path / "whole" / "saes").iterdir()
    whole = load_file(folder / "sae_weights.safetensors")
    resumed = load_file(out / "saes" / folder.name / "sae_weights.safetensors")
    for name, tensor in whole.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=0, atol=1e-6, msg=name)
    steps = [line for line in (out / "train" / "metrics.jsonl").read_text().splitlines() if line]
    assert len(steps) == len(set(steps)) == 6000 // 50, "each logged step once"
    assert not list((out / "train").glob(".*.tmp")), "a killed write's temporary file is removed"


@pytest.mark.slow
def test_cache_killed_at_random_points_resumes_to_identical_shards(tmp_path: Path) -> None:
    """The demo's model and text: a cache killed twice mid-way, then rerun, holds byte-identical
    shards and manifest to one written in one go."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}

    def cache(out: Path) -> list[str]:
        return [sys.executable, "-m", "monosemantic.cli", "-q", "cache", "--max-tokens", "30000",
                "--shard-windows", "8", "--out", str(out)]  # fmt: skip

    assert subprocess.run(cache(tmp_path / "whole"), env=env, timeout=300).returncode == 0
    out, rng, kills = tmp_path / "killed", random.Random(1), 0
    for target in sorted(rng.sample(range(2, 27), 2)):  # killed at two random shard counts
        process = subprocess.Popen(cache(out), env=env)
        kills += kill_when(process, lambda t=target: len(list(out.glob("shard-*"))) >= t)
    assert kills == 2, "each kill lands while it runs"
    assert subprocess.run(cache(out), env=env, timeout=300).returncode == 0
    names = sorted(p.name for p in (tmp_path / "whole").iterdir())
    assert sorted(p.name for p in out.iterdir()) == names, "no temporary files left"
    for name in names:
        assert (out / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name
