"""The ``monosemantic`` command: thin; parses arguments and calls the library.

monosemantic train   train a sweep of SAEs on a model's activations (or a cache, or a matrix)
monosemantic cache   write a model's activations to disk in shards, resumable
monosemantic eval    evaluate a saved SAE (reconstruction, and spliced into the model)
monosemantic info    list a model's hook points, or describe an SAE or cache folder
monosemantic demo    the end-to-end demo: SmolLM2-135M + Shakespeare → report.html
monosemantic bilinear ...   bilinear MLPs: train MNIST classifiers, decompose their weights
monosemantic zoo ...        small Shakespeare transformers; bilinear MLPs read via SAE features
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from monosemantic.config import add_arguments, from_arguments

if TYPE_CHECKING:
    from monosemantic.data.sources import DataConfig


def _data_config(args: argparse.Namespace) -> DataConfig:
    from monosemantic.data.sources import DataConfig

    return from_arguments(DataConfig, args)


def cmd_train(args: argparse.Namespace) -> int:
    from monosemantic.training.pipeline import SweepConfig, run
    from monosemantic.training.trainer import TrainConfig

    summaries = run(
        _data_config(args),
        from_arguments(SweepConfig, args),
        from_arguments(TrainConfig, args),
        Path(args.out),
        resume=args.resume,
    )
    for s in summaries:
        shown = {k: round(v, 4) for k, v in s["eval"].items() if isinstance(v, float)}
        print(f"{s['name']}: {json.dumps(shown)}\n  saved to {s['folder']}")
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    from monosemantic.training.pipeline import cache

    manifest = cache(
        _data_config(args),
        Path(args.out),
        shard_windows=args.shard_windows,
        store_dtype=args.store_dtype,
    )
    print(
        f"cache complete: {manifest.total_rows} rows in {len(manifest.shards)} shards at {args.out}"
    )
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from monosemantic.training.pipeline import evaluate_folder

    metrics = evaluate_folder(Path(args.sae), _data_config(args))
    print(json.dumps(metrics, indent=2))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    target = Path(args.target)
    if (target / "cfg.json").exists():
        print((target / "cfg.json").read_text())
    elif (target / "manifest.json").exists():
        from monosemantic.data.cache import ActivationCache

        cache = ActivationCache(target, allow_incomplete=True)
        print((target / "manifest.json").read_text())
        if args.verify:
            cache.verify()
            print("all shard checksums verify")
    else:
        from monosemantic.models.hf import describe, load_model

        model, _ = load_model(args.target)
        for name, kind in describe(model, args.depth):
            print(f"{name:60s} {kind}")
        print(
            "\nhook points: MODULE_PATH:input or MODULE_PATH:output, e.g. model.layers.3.mlp:output"
        )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from monosemantic.demo import run_demo

    report = run_demo(Path(args.out), quick=args.quick)
    print(f"report: {report}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from monosemantic.commands.bilinear import register as register_bilinear
    from monosemantic.commands.zoo import register as register_zoo
    from monosemantic.data.sources import DataConfig
    from monosemantic.training.pipeline import SweepConfig
    from monosemantic.training.trainer import TrainConfig

    parser = argparse.ArgumentParser(
        prog="monosemantic",
        description="Find the features a neural network computes with.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser(
        "train",
        help="train SAEs on activations",
        description="Train a sweep of SAEs (every combination of --expansion, --k, "
        "--sparsity-coefficient) on the same activation batches, evaluate and save them. "
        "Example: monosemantic train --hook model.layers.3.mlp:output --k 16 32 --out runs/l3",
    )
    train.add_argument("--out", default="runs/train", help="output folder")
    train.add_argument(
        "--resume", action="store_true", help="continue from the checkpoint in --out"
    )
    add_arguments(train, DataConfig, skip=("extra",))
    add_arguments(train, SweepConfig)
    add_arguments(train, TrainConfig, skip=("hook",))
    train.set_defaults(func=cmd_train)

    cache = commands.add_parser(
        "cache",
        help="write activations to disk in shards",
        description="Run the model over text and write its activations at --hook to --out as "
        "safetensors shards with a manifest of checksums. Rerun the same command to resume.",
    )
    cache.add_argument("--out", required=True, help="cache folder")
    cache.add_argument("--shard-windows", type=int, default=64, help="windows per shard")
    cache.add_argument(
        "--store-dtype", default="float32", choices=["float32", "bfloat16", "float16"]
    )
    add_arguments(cache, DataConfig, skip=("extra",))
    cache.set_defaults(func=cmd_cache)

    evaluate = commands.add_parser(
        "eval",
        help="evaluate a saved SAE",
        description="Reconstruction and spliced metrics of a saved SAE.",
    )
    evaluate.add_argument("sae", help="SAE folder (cfg.json + sae_weights.safetensors)")
    add_arguments(evaluate, DataConfig, skip=("extra",))
    evaluate.set_defaults(func=cmd_eval)

    info = commands.add_parser("info", help="hook points of a model, or an SAE/cache folder")
    info.add_argument("target", help="model name/folder/.gguf, SAE folder, or cache folder")
    info.add_argument("--depth", type=int, default=None, help="show module paths to this depth")
    info.add_argument("--verify", action="store_true", help="verify a cache's checksums")
    info.set_defaults(func=cmd_info)

    demo = commands.add_parser("demo", help="the end-to-end demo, writes report.html")
    demo.add_argument("--out", default="demo-out")
    demo.add_argument("--quick", action="store_true", help="a smaller run, for tests")
    demo.set_defaults(func=cmd_demo)

    register_bilinear(commands)
    register_zoo(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(format="%(name)s: %(message)s", level=logging.WARNING)
    logging.getLogger("monosemantic").setLevel(logging.WARNING if args.quiet else logging.INFO)
    try:
        return int(args.func(args))
    except (ValueError, FileNotFoundError, ModuleNotFoundError) as error:
        print(f"monosemantic {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
