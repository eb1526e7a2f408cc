"""Data-parallel training under torchrun (gloo, 2 CPU processes) ends where one process ends at
the same global batch; a 2-process run killed after a checkpoint (a rank exiting with an error, or
SIGKILLed) resumes to the same SAEs; the
sweep mode (--distribute saes) trains each SAE as the one-process sweep does."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from ddp_worker import WEIGHTS, run
from safetensors.torch import load_file

import monosemantic
from monosemantic.cli import main
from monosemantic.config import ConfigError
from monosemantic.data.store import part_rows, shuffled_indices

NAMES = ("topk-32-k4", "topk-64-k4")


def torchrun_command(*args: str) -> tuple[list[str], dict[str, str]]:
    """(command, environment): 2 processes on this machine; they import the package the tests
    import."""
    src = str(Path(monosemantic.__file__).parents[1])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": src}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
               "2", *args]  # fmt: skip
    return command, env


def torchrun(*args: str) -> subprocess.CompletedProcess:
    command, env = torchrun_command(*args)
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def train_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["-q", "train", "--data", str(data), "--out", str(out), "--architecture", "topk",
            "--k", "4", "--expansion", "2", "4", "--steps", "30", "--batch-size", "64",
            "--lr", "3e-3", "--checkpoint-every", "10", "--log-every", "5", "--no-progress",
            *extra]  # fmt: skip


def assert_same_weights(a: Path, b: Path) -> None:
    ours, theirs = load_file(a), load_file(b)
    assert ours.keys() == theirs.keys()
    for name, tensor in ours.items():
        torch.testing.assert_close(theirs[name], tensor, rtol=0, atol=1e-5, msg=name)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``one``: a one-process sweep in this process; ``two``: the same under torchrun."""
    root = tmp_path_factory.mktemp("ddp")
    rows = np.random.default_rng(0).normal(size=(600, 16)) * 3 + 1
    np.save(root / "rows.npy", rows.astype(np.float32))
    assert main(train_args(root / "rows.npy", root / "one")) == 0
    done = torchrun("-m", "monosemantic.cli", *train_args(root / "rows.npy", root / "two"))
    assert done.returncode == 0, done.stderr[-3000:]
    return root


def test_parts_of_every_batch_make_the_batch() -> None:
    whole = shuffled_indices(100, 64, seed=3, start_step=2)
    halves = [shuffled_indices(100, 64, seed=3, start_step=2, part=(i, 2)) for i in range(2)]
    for _ in range(4):
        np.testing.assert_array_equal(np.concatenate([next(h) for h in halves]), next(whole))
    with pytest.raises(ValueError, match="batch_size=65 does not split into 2 equal parts"):
        part_rows(65, (0, 2))


def test_two_processes_end_where_one_does(runs: Path) -> None:
    for name in NAMES:
        assert_same_weights(
            runs / "one" / "saes" / name / "sae_weights.safetensors",
            runs / "two" / "saes" / name / "sae_weights.safetensors",
        )
    one, two = (
        (runs / r / "train" / "metrics.jsonl").read_text().splitlines() for r in ("one", "two")
    )
    assert len(one) == len(two) == 6, "rank 0 alone writes the log"
    for a, b in zip(one, two, strict=True):  # the logged loss is the global batch's
        assert json.loads(a)["saes"]["0"]["loss"] == pytest.approx(
            json.loads(b)["saes"]["0"]["loss"], rel=1e-4
        )
    summary = json.loads((runs / "two" / "summary.json").read_text())
    assert [s["name"] for s in summary["saes"]] == list(NAMES)
    assert json.loads((runs / "two" / "config.json").read_text())["launch"] == {"world_size": 2}


def test_resuming_with_another_world_size_says_so(runs: Path) -> None:
    with pytest.raises(ConfigError, match=r"launch\.world_size: 2 then, 1 now"):
        main(["--debug", *train_args(runs / "rows.npy", runs / "two", "--resume")])


def test_distribute_saes_trains_each_as_the_sweep_does(runs: Path) -> None:
    out = runs / "by-sae"
    done = torchrun(
        "-m", "monosemantic.cli", *train_args(runs / "rows.npy", out, "--distribute", "saes")
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for name in NAMES:
        assert_same_weights(
            runs / "one" / "saes" / name / "sae_weights.safetensors",
            out / "saes" / name / "sae_weights.safetensors",
        )
    assert sorted(p.name for p in (out / "train").iterdir()) == ["rank-0", "rank-1"]
    summary = json.loads((out / "summary.json").read_text())
    assert [s["name"] for s in summary["saes"]] == list(NAMES), "every rank's SAEs, in order"


@pytest.mark.parametrize("how", ["exit", "sigkill"])
def test_killed_two_process_run_resumes_to_the_one_process_result(tmp_path: Path, how: str) -> None:
    worker = str(Path(__file__).with_name("ddp_worker.py"))
    kill = ["--sigkill"] if how == "sigkill" else []
    killed = torchrun(worker, str(tmp_path / "two"), "--fail-at", "15", *kill)
    expected = "Signal 9 (SIGKILL)" if how == "sigkill" else "rank 1 stops at step 15"
    assert killed.returncode != 0 and expected in killed.stderr, killed.stderr[-3000:]
    assert torch.load(tmp_path / "two" / "checkpoint.pt", weights_only=True)["step"] == 10
    with pytest.raises(ValueError, match="written by 2 data-parallel processes, this run has 1"):
        run(tmp_path / "two", resume=True)
    resumed = torchrun(worker, str(tmp_path / "two"), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    run(tmp_path / "one")
    assert_same_weights(tmp_path / "one" / WEIGHTS, tmp_path / "two" / WEIGHTS)


def test_sigkilled_two_process_cli_run_resumes_to_the_one_process_result(runs: Path) -> None:
    """The whole torchrun job is SIGKILLed from outside once a checkpoint is on disk, wherever
    its processes are (a step, a write, a collective); ``--resume`` ends where an uninterrupted
    one-process run ends."""
    longer = ("--steps", "400", "--checkpoint-every", "50")
    out = runs / "sigkilled"
    command, env = torchrun_command(
        "-m", "monosemantic.cli", *train_args(runs / "rows.npy", out, *longer)
    )
    job = subprocess.Popen(command, env=env, start_new_session=True, stderr=subprocess.PIPE)
    checkpoint = out / "train" / "checkpoint.pt"
    deadline = time.monotonic() + 240
    while not checkpoint.exists() and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(job.pid, signal.SIGKILL)
    job.wait(timeout=60)
    assert checkpoint.exists(), job.stderr.read().decode()[-3000:] if job.stderr else ""
    assert not (out / "summary.json").exists(), "the run ended before it was killed"
    resumed = torchrun(
        "-m", "monosemantic.cli", *train_args(runs / "rows.npy", out, *longer, "--resume")
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert main(train_args(runs / "rows.npy", runs / "one-longer", *longer)) == 0
    for name in NAMES:
        assert_same_weights(
            runs / "one-longer" / "saes" / name / "sae_weights.safetensors",
            out / "saes" / name / "sae_weights.safetensors",
        )
