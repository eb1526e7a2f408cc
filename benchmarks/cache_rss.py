"""Peak resident memory while training from a disk cache several times larger than the store's
memory budget (``DataConfig.buffer_rows`` rows, what a live run holds in its shuffle buffer).

    python benchmarks/cache_rss.py [--folder runs/cache-rss] [--times 4] [--d 576] [--steps 70]

A child process writes the cache (random rows, float32) once, so the measuring process's peak is
its own; this process then trains one TopK SAE from it for more than one epoch. Compare the
peak's growth at ``--times 1`` and ``--times 4``: what the cache adds must not grow with it. The
rest is the SAE (weights, gradients, Adam's moments: ``sae_mb``) and its step's activations.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from monosemantic.data.cache import ActivationCache, write_cache
from monosemantic.sae.registry import config, create
from monosemantic.training.trainer import TrainConfig, train

MB = 2**20


def rss_mb() -> float:
    """This process's resident memory now (Linux: VmRSS of /proc/self/status)."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def write(folder: Path, rows: int, d: int, shard_rows: int) -> None:
    generator = torch.Generator().manual_seed(0)
    shards = -(-rows // shard_rows)

    def make_shard(index: int) -> torch.Tensor | None:
        if index >= shards:
            return None
        return torch.randn(min(shard_rows, rows - index * shard_rows), d, generator=generator)

    write_cache(folder, make_shard, {"benchmark": "cache_rss", "rows": rows, "d": d})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--folder", type=Path, default=Path("runs/cache-rss"))
    parser.add_argument("--buffer-rows", type=int, default=65536, help="the store's budget")
    parser.add_argument("--times", type=int, default=4, help="cache size / budget")
    parser.add_argument("--d", type=int, default=576)
    parser.add_argument("--shard-rows", type=int, default=8192, help="64 windows of 128 tokens")
    parser.add_argument("--d-sae", type=int, default=2304)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=70)
    parser.add_argument("--write-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    rows = args.times * args.buffer_rows
    if args.write_only:
        write(args.folder, rows, args.d, args.shard_rows)
        return
    child = [sys.executable, __file__, "--write-only", "--folder", str(args.folder)]
    child += ["--buffer-rows", str(args.buffer_rows), "--times", str(args.times)]
    child += ["--d", str(args.d), "--shard-rows", str(args.shard_rows)]
    subprocess.run(child, check=True)

    cache = ActivationCache(args.folder)
    torch.manual_seed(0)
    sae = create(config("topk", d_in=args.d, d_sae=args.d_sae, k=32))
    cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=1e-3, progress=False)
    budget_mb = args.buffer_rows * args.d * 4 / MB
    sae_mb = 4 * sum(p.numel() * p.element_size() for p in sae.parameters()) / MB
    before = rss_mb()
    start = time.perf_counter()
    train([sae], cache.batches(cfg.batch_size, seed=0), cfg)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(
        json.dumps(
            {
                "cache_mb": round(len(cache) * args.d * 4 / MB),
                "budget_mb": round(budget_mb),
                "sae_mb": round(sae_mb),
                "epochs": round(cfg.steps * cfg.batch_size / len(cache), 2),
                "rss_before_training_mb": round(before),
                "peak_rss_mb": round(peak),
                "peak_growth_mb": round(peak - before),
                "tokens_per_s": round(cfg.steps * cfg.batch_size / seconds),
                "load_average": round(os.getloadavg()[0], 2),
            }
        )
    )


if __name__ == "__main__":
    main()
