"""SAE training throughput: our Trainer against a minimal hand-written TopK loop, same process.

    python benchmarks/bench_train.py [--d-in 576] [--expansion 8] [--k 32] [--batch-size 1024]

The minimal loop (encode, TopK, decode, MSE, Adam) is the floor any trainer pays; the ratio shows
what the Trainer's extras (AuxK, decoder projection, dead-latent tracking, NaN guard) cost.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from monosemantic.sae.registry import config, create
from monosemantic.training.trainer import TrainConfig, Trainer


def minimal_loop(x: torch.Tensor, d_sae: int, k: int, steps: int) -> float:
    d_in = x.shape[1]
    w_enc = torch.randn(d_in, d_sae, requires_grad=True)
    w_dec = torch.randn(d_sae, d_in, requires_grad=True)
    b_dec = torch.zeros(d_in, requires_grad=True)
    opt = torch.optim.Adam([w_enc, w_dec, b_dec], lr=1e-4)
    start = time.perf_counter()
    for _ in range(steps):
        pre = (x - b_dec) @ w_enc
        values, indices = pre.topk(k, dim=-1)
        f = torch.zeros_like(pre).scatter(-1, indices, values.relu())
        loss = (f @ w_dec + b_dec - x).pow(2).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return steps * x.shape[0] / (time.perf_counter() - start)


def trainer_loop(x: torch.Tensor, d_sae: int, k: int, steps: int) -> float:
    sae = create(config("topk", d_in=x.shape[1], d_sae=d_sae, k=k))
    trainer = Trainer([sae], TrainConfig(steps=steps, batch_size=len(x), lr=1e-4, progress=False))
    trainer.initialise(x)
    start = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(x)
    return steps * x.shape[0] / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--d-in", type=int, default=576)
    parser.add_argument("--expansion", type=int, default=8)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    torch.manual_seed(0)
    x = torch.randn(args.batch_size, args.d_in)
    d_sae = args.expansion * args.d_in
    minimal_loop(x, d_sae, args.k, 2)  # warm-up
    minimal = minimal_loop(x, d_sae, args.k, args.steps)
    ours = trainer_loop(x, d_sae, args.k, args.steps)
    print(
        json.dumps(
            {
                "d_in": args.d_in,
                "d_sae": d_sae,
                "k": args.k,
                "batch_size": args.batch_size,
                "threads": torch.get_num_threads(),
                "minimal_tokens_per_s": round(minimal),
                "trainer_tokens_per_s": round(ours),
                "trainer_over_minimal": round(ours / minimal, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
