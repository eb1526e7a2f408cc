"""Training from a live model: does the background producer hide the SAE step behind the forward?

    python benchmarks/harvest_overlap.py [--model zoo:shakespeare-relu-l1-d128-h512-s1500-seed0]
        [--hook blocks.0.mlp.down:input] [--d-sae 4096] [--steps 30] [--producer-threads 1]

In one process, on the same Shakespeare windows and the same TopK SAE:
(a) the bare truncated forward (``harvest``) alone; (b) training from ``LiveActivations``
synchronously, forward and SAE step in turn; (c) the same with ``prefetch``, the forward in a
background thread; and (d) the SAE steps alone, from rows harvested beforehand. Tokens/s of
(b), (c), (d) count the rows trained on, which in a short run are fewer than the model reads
(it fills the shuffle buffer of 4 batches first: at 12 steps, 12 of every 16); (b) and (c) also
report the tokens the model ran on per second (``*_model_*``), the rate both tend to in a long
run. Acceptance: c / a >= 0.9, reachable where the SAE step is fast against the forward (d ≫ a)
or the two do not compete for the same cores.
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


class TokenCount:
    """Counts the tokens ``model`` is run on (its first argument, ``input_ids`` [windows, ctx])."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.tokens = 0
        model.register_forward_pre_hook(self.count, with_kwargs=True)

    def count(self, module, args, kwargs) -> None:
        ids = args[0] if args else kwargs["input_ids"]
        self.tokens += ids.numel()


def training_rate(
    source: LiveActivations | MatrixSource, args, d_in: int, forwarded: TokenCount
) -> tuple[float, float]:
    """(b), (c) or (d): (rows trained on, tokens the model ran on) per second, from the first
    batch to the last step. Short runs train on fewer rows than the model reads (it fills the
    shuffle buffer first); in a long run the two rates meet."""
    torch.manual_seed(0)
    sae = create(config("topk", d_in=d_in, d_sae=args.d_sae, k=args.k, hook=args.hook))
    cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=1e-3, progress=False)
    before = forwarded.tokens
    start = time.perf_counter()
    train([sae], source.batches(cfg.batch_size, seed=0), cfg)
    seconds = time.perf_counter() - start
    return cfg.steps * cfg.batch_size / seconds, (forwarded.tokens - before) / seconds


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
    forwarded = TokenCount(model)
    rates: dict[str, list[float]] = {"a": [], "b": [], "c": [], "d": []}
    read: dict[str, list[float]] = {"b": [], "c": []}
    for _ in range(args.repeats):  # rounds of all four, so a change of load hits each alike
        rates["a"].append(forward_rate(model, tokens, args.hook, args.windows_per_forward))
        for case, source in (
            ("b", live()),
            ("c", live(prefetch=args.prefetch, producer_threads=args.producer_threads)),
        ):
            trained, through_model = training_rate(source, args, d_in, forwarded)
            rates[case].append(trained)
            read[case].append(through_model)
        rates["d"].append(training_rate(MatrixSource(rows), args, d_in, forwarded)[0])
    bare, sync, ahead, alone = (statistics.median(rates[case]) for case in "abcd")
    sync_read, ahead_read = (statistics.median(read[case]) for case in "bc")
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
                "b_model_tokens_per_s": round(sync_read),
                "c_model_tokens_per_s": round(ahead_read),
                "c_over_a": round(ahead / bare, 3),
                "c_over_b": round(ahead / sync, 3),
                "b_model_over_a": round(sync_read / bare, 3),
                "c_model_over_a": round(ahead_read / bare, 3),
                "rounds": {case: [round(r) for r in rates[case]] for case in "abcd"},
            }
        )
    )


if __name__ == "__main__":
    main()
