"""Our bf16 step against our fp32 step, per architecture, both trainers in one process.

    python benchmarks/bf16_speedup.py [--architectures topk jumprelu ...] [--warmup 30]
        [--windows 4] [--window-steps 5] [--profile ARCH [--profile-dtype float32]]

Both trainers see the same synthetic batches as ``bench_peers.py`` (d 576, F 4608, batch 4096).
Each trains ``--warmup`` steps (so penalised architectures reach their sparse L0), then the two
alternate ``--windows`` windows of ``--window-steps`` steps; the median window gives tokens/s, so
machine drift hits both dtypes alike. ``--profile ARCH`` prints the step's top operators by
input shape (``--profile-dtype``, default bf16). On a CPU without fast bf16 matmuls (no AVX-512
or AMX) the bf16 step measures torch's fallback kernel, not ours.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from bench_peers import ARCHITECTURES, DTYPES, Sizes, batches, monosemantic_case, parse_args


def window(step, pool: list[torch.Tensor], start: int, steps: int) -> float:
    """Seconds for ``steps`` steps over the pool from ``start``."""
    begin = time.perf_counter()
    for i in range(steps):
        step(pool[(start + i) % len(pool)])
    return time.perf_counter() - begin


def speedup(arch: str, pool: list[torch.Tensor], sizes: Sizes, args: argparse.Namespace) -> dict:
    steps = {
        dtype: monosemantic_case(arch, sizes, dtype, pool[0])[0]
        for dtype in ("float32", "bfloat16")
    }
    for step in steps.values():
        window(step, pool, 0, args.warmup)
    times = {dtype: [] for dtype in steps}
    for w in range(args.windows):
        for dtype, step in steps.items():
            times[dtype].append(
                window(step, pool, args.warmup + w * args.window_steps, args.window_steps)
            )
    rate = {
        d: args.window_steps * sizes.batch_size / statistics.median(t) for d, t in times.items()
    }
    return {
        "architecture": arch,
        "float32": round(rate["float32"]),
        "bfloat16": round(rate["bfloat16"]),
        "ratio": round(rate["bfloat16"] / rate["float32"], 3),
    }


def profile(arch: str, pool: list[torch.Tensor], sizes: Sizes, args: argparse.Namespace) -> None:
    step = monosemantic_case(arch, sizes, args.profile_dtype, pool[0])[0]
    window(step, pool, 0, args.warmup)
    with torch.profiler.profile(record_shapes=True) as prof:
        window(step, pool, args.warmup, args.window_steps)
    averages = prof.key_averages(group_by_input_shape=True)
    print(averages.table(sort_by="self_cpu_time_total", row_limit=40, max_name_column_width=30))


def main() -> None:
    extra = argparse.ArgumentParser(add_help=False)
    extra.add_argument("--warmup", type=int, default=30)
    extra.add_argument("--windows", type=int, default=4)
    extra.add_argument("--window-steps", type=int, default=5)
    extra.add_argument("--profile", choices=ARCHITECTURES)
    extra.add_argument("--profile-dtype", choices=DTYPES, default="bfloat16")
    args, rest = extra.parse_known_args()
    peers = parse_args(rest)
    pool, _ = batches(peers)
    steps = args.warmup + args.windows * args.window_steps
    sizes = Sizes(peers.d_in, peers.d_sae, peers.k, peers.batch_size, steps)
    if args.profile:
        profile(args.profile, pool, sizes, args)
        return
    for arch in peers.architectures:
        print(json.dumps(speedup(arch, pool, sizes, args)), flush=True)


if __name__ == "__main__":
    main()
