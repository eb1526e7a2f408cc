"""Run by test_distributed.py under torchrun (and in-process as its one-process reference): four
tiny SAEs trained on a seeded matrix, each process on its part of every batch. ``--fail-at S``:
rank 1 dies at step S, after the checkpoint before it: it exits with an error, or with
``--sigkill`` it is killed by the kernel (no Python clean-up runs, as under an out-of-memory
kill or a scheduler's)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors.torch import save_file

from monosemantic.data.store import MatrixSource
from monosemantic.sae.registry import config, create
from monosemantic.training.distributed import SINGLE, World, launch
from monosemantic.training.trainer import TrainConfig, train

BATCH = 64
WEIGHTS = "weights.safetensors"
SETTINGS = dict(
    steps=30,
    batch_size=BATCH,
    lr=3e-3,
    progress=False,
    log_every=5,
    checkpoint_every=10,
    resample_every=10,  # dead latents are resampled from the gathered batch
    dead_after_tokens=128,
)


def run(
    out: Path,
    world: World = SINGLE,
    *,
    resume: bool = False,
    fail_at: int = -1,
    sigkill: bool = False,
) -> None:
    """Train and write the SAEs' weights to ``out/weights.safetensors`` (main process)."""
    torch.manual_seed(0)
    saes = [
        create(config("topk", d_in=16, d_sae=96, k=2)),
        create(config("standard", d_in=16, d_sae=32, sparsity_coefficient=1e-3)),
        # batch-level selections: the top codes of the global batch, found across processes
        create(config("batchtopk", d_in=16, d_sae=64, k=3)),
        create(config("feature_choice", d_in=16, d_sae=48, k=2)),
    ]
    rows = torch.randn(600, 16, generator=torch.Generator().manual_seed(0)) * 3 + 1
    source = MatrixSource(rows)

    def batches(start: int) -> Iterator[torch.Tensor]:
        for step, batch in enumerate(
            source.batches(BATCH, seed=0, start_step=start, part=world.part), start
        ):
            if step == fail_at and world.rank == 1:
                if sigkill:
                    os.kill(os.getpid(), signal.SIGKILL)
                sys.exit(f"rank 1 stops at step {step}, as if killed")
            yield batch

    train(saes, batches, TrainConfig(**SETTINGS), out, resume=resume, world=world)
    if world.main:
        weights = {
            f"{i}.{k}": v.contiguous()
            for i, s in enumerate(saes)
            for k, v in s.state_dict().items()
        }
        save_file(weights, out / WEIGHTS)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--fail-at", type=int, default=-1)
    parser.add_argument("--sigkill", action="store_true")
    args = parser.parse_args()
    with launch() as world:
        run(args.out, world, resume=args.resume, fail_at=args.fail_at, sigkill=args.sigkill)
