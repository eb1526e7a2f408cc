"""Training from a live model: does the background producer hide the SAE step behind the forward?

    python benchmarks/harvest_overlap.py [--model zoo:shakespeare-relu-l1-d128-h512-s1500-seed0]
        [--hook blocks.0.mlp.down:input] [--d-sae 4096] [--steps 30] [--producer-threads 1]

In one process, on the same Shakespeare windows and the same TopK SAE:
(a) the bare truncated forward (``harvest``) alone; (b) training from ``LiveActivations``
synchronously, forward and SAE step in turn; (c) the same with ``prefetch``, the forward in a
background thread; and (d) the SAE steps alone, from rows harvested beforehand. Tokens/s of
(b), (c), (d) count the rows trained on; those of (b) and (c) include filling the shuffle
buffer. Acceptance: c / a >= 0.9, reachable only where the SAE step is faster than the forward
(d > a) and the two do not compete for the same cores.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

from monosemantic.data.harvest import LiveActivations, harvest
from monosemantic.data.store import MatrixSource
from monosemantic.data.text import load_texts
from monosemantic.data.tokens import token_windows
from monosemantic.models.hf import load_model
from monosemantic.sae.registry import config, create
from monosemantic.training.trainer import TrainConfig, train


def forward_rate(model, tokens, hook: str, windows_per_forward: int) -> float:
    """(a): tokens/s of the truncated forward passes alone."""
    start = time.perf_counter()
    for _ in harvest(model, tokens, [hook], batch_size=windows_per_forward):
        pass
    return tokens.numel() / (time.perf_counter() - start)


def training_rate(source: LiveActivations | MatrixSource, args, d_in: int) -> float:
    """(b), (c) or (d): rows trained on per second, from the first batch to the last step."""
    torch.manual_seed(0)
    sae = create(config("topk", d_in=d_in, d_sae=args.d_sae, k=args.k, hook=args.hook))
    cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=1e-3, progress=False)
    start = time.perf_counter()
    train([sae], source.batches(cfg.batch_size, seed=0), cfg)
    return cfg.steps * cfg.batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="zoo:shakespeare-relu-l1-d128-h512-s1500-seed0")
    parser.add_argument("--hook", default="blocks.0.mlp.down:input")
    parser.add_argument("--d-sae", type=int, default=4096)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--context-size", type=int, default=128)
    parser.add_argument("--windows-per-forward", type=int, default=8)
    parser.add_argument("--prefetch", type=int, default=2, help="queue depth of (c)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds; medians are reported")
    parser.add_argument(
        "--producer-threads", type=int, default=None, help="torch threads of (c)'s producer"
    )
    args = parser.parse_args()
    model, tokenizer = load_model(args.model)
    # enough windows for the steps and the buffer, so no window is harvested twice
    buffer_rows = 4 * args.batch_size
    windows = -(-(args.steps * args.batch_size + buffer_rows) // args.context_size) + 1
    tokens = token_windows(
        load_texts("shakespeare"), tokenizer, args.context_size, max_windows=windows
    )
    d_in = next(harvest(model, tokens[:1], [args.hook]))[args.hook].shape[1]

    def live(**fields) -> LiveActivations:
        return LiveActivations(
            model, tokens, [args.hook], windows_per_forward=args.windows_per_forward,
            buffer_rows=buffer_rows, **fields,
        )  # fmt: skip

    forward_rate(model, tokens[:16], args.hook, args.windows_per_forward)  # warm-up
    rows = torch.cat([acts[args.hook] for acts in harvest(model, tokens, [args.hook])])
    rates: dict[str, list[float]] = {"a": [], "b": [], "c": [], "d": []}
    for _ in range(args.repeats):  # rounds of all four, so a change of load hits each alike
        rates["a"].append(forward_rate(model, tokens, args.hook, args.windows_per_forward))
        rates["b"].append(training_rate(live(), args, d_in))
        ahead = live(prefetch=args.prefetch, producer_threads=args.producer_threads)
        rates["c"].append(training_rate(ahead, args, d_in))
        rates["d"].append(training_rate(MatrixSource(rows), args, d_in))
    bare, sync, ahead, alone = (statistics.median(rates[case]) for case in "abcd")
    print(
        json.dumps(
            {
                "model": args.model,
                "hook": args.hook,
                "d_sae": args.d_sae,
                "threads": torch.get_num_threads(),
                "producer_threads": args.producer_threads,
                "load_average": round(os.getloadavg()[0], 2),
                "a_forward_tokens_per_s": round(bare),
                "b_sync_tokens_per_s": round(sync),
                "c_prefetch_tokens_per_s": round(ahead),
                "d_sae_alone_tokens_per_s": round(alone),
                "c_over_a": round(ahead / bare, 3),
                "c_over_b": round(ahead / sync, 3),
                "rounds": {case: [round(r) for r in rates[case]] for case in "abcd"},
            }
        )
    )


if __name__ == "__main__":
    main()
