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
    for _ in range(3):  # kill it three times at random moments of its run
        resume = ["--resume"] if (out / "train" / "checkpoint.pt").exists() else []
        fresh = [] if resume or not out.exists() else ["--overwrite"]
        process = subprocess.Popen(command(data, out, *resume, *fresh), env=env)
        time.sleep(rng.uniform(3.5, 8.0))  # start-up takes about 3 s, training about 11
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait()
    assert kills >= 2, "the kills must land while it runs"
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
