"""``monosemantic cache``: a model's activations at one hook point, written to disk in shards."""

from __future__ import annotations

import argparse
from pathlib import Path

from monosemantic.commands.options import add_out
from monosemantic.config import add_arguments, from_arguments
from monosemantic.data.sources import DataConfig, cache_activations, resolve
from monosemantic.models.subject import load_subject


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "cache",
        help="write activations to disk in shards",
        description="Run the model over text and write its activations at --hook to --out as "
        "safetensors shards with a manifest of checksums. Rerun the same command to resume.",
    )
    add_out(parser, "cache folder", required=True)
    parser.add_argument("--shard-windows", type=int, default=64, help="windows per shard")
    parser.add_argument(
        "--store-dtype", default="float32", choices=["float32", "bfloat16", "float16"]
    )
    add_arguments(parser, DataConfig, skip=("extra",))
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    data = resolve(from_arguments(DataConfig, args))
    if data.kind != "text":
        raise ValueError(
            f"cache needs text data to run the model on; {data.cfg.data!r} is a {data.kind} already"
        )
    text = load_subject(data)
    assert text is not None  # text data always has a subject model
    manifest = cache_activations(
        data.cfg,
        text,
        Path(args.out),
        shard_windows=args.shard_windows,
        store_dtype=args.store_dtype,
    )
    print(
        f"cache complete: {manifest.total_rows} rows in {len(manifest.shards)} shards at {args.out}"
    )
    return 0
