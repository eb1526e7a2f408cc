"""Harvest throughput on SmolLM2-135M over Shakespeare: truncated vs full forward passes.

    python benchmarks/bench_harvest.py [--hook model.layers.3.mlp:output] [--windows 64]

Both run in the same process on the same windows; the ratio is what matters.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from monosemantic.data.harvest import harvest
from monosemantic.data.text import load_texts
from monosemantic.data.tokens import token_windows
from monosemantic.models.hf import load_model


def tokens_per_second(model, tokens, hook, truncate: bool) -> float:
    start = time.perf_counter()
    for _ in harvest(model, tokens, hook, batch_size=8, truncate=truncate):
        pass
    return tokens.numel() / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hook", default="model.layers.3.mlp:output")
    parser.add_argument("--windows", type=int, default=64)
    parser.add_argument("--context-size", type=int, default=128)
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()
    model, tokenizer = load_model("smollm2-135m", dtype=args.dtype)
    tokens = token_windows(
        load_texts("shakespeare"), tokenizer, args.context_size, max_windows=args.windows
    )
    tokens_per_second(model, tokens[:8], args.hook, True)  # warm-up
    truncated = tokens_per_second(model, tokens, args.hook, True)
    full = tokens_per_second(model, tokens, args.hook, False)
    print(
        json.dumps(
            {
                "hook": args.hook,
                "dtype": args.dtype,
                "threads": torch.get_num_threads(),
                "tokens": tokens.numel(),
                "truncated_tokens_per_s": round(truncated),
                "full_tokens_per_s": round(full),
                "speedup": round(truncated / full, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
