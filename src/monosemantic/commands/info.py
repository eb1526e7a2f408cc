"""``monosemantic info``: a model's hook points, or what an SAE or cache folder holds."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("info", help="hook points of a model, or an SAE/cache folder")
    parser.add_argument("target", help="model name/folder/.gguf, SAE folder, or cache folder")
    parser.add_argument("--depth", type=int, default=None, help="show module paths to this depth")
    parser.add_argument("--verify", action="store_true", help="verify a cache's checksums")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
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
