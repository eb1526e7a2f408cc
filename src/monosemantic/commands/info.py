"""``monosemantic info``: a model's hook points, or what an SAE or cache folder holds."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from monosemantic.sae.peers import is_dictionary_learning, is_sparsify


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("info", help="hook points of a model, or an SAE/cache folder")
    parser.add_argument(
        "target",
        help="model name/folder/.gguf, SAE folder (ours, SAELens's, sparsify's, or "
        "dictionary_learning's ae.pt), or cache folder",
    )
    parser.add_argument("--depth", type=int, default=None, help="show module paths to this depth")
    parser.add_argument("--verify", action="store_true", help="verify a cache's checksums")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    target = Path(args.target)
    if (target / "cfg.json").exists() or is_sparsify(target) or is_dictionary_learning(target):
        from monosemantic.sae.io import load_sae

        sae = load_sae(target)  # the weights are read and checked, not only the config
        print(json.dumps(sae.cfg.to_dict(), indent=2))
        for name, tensor in sae.export_state().items():
            print(f"{name:12s} {tuple(tensor.shape)} {str(tensor.dtype).removeprefix('torch.')}")
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
