"""``monosemantic zoo train-lm|lm-features``: the zoo's Shakespeare transformers and their features.

monosemantic zoo train-lm --mlp bilinear --n-layers 1
monosemantic zoo lm-features ~/.cache/monosemantic/zoo/shakespeare-bilinear-l1-... --out runs/lmf
"""

from __future__ import annotations

import argparse
from pathlib import Path

from monosemantic.config import add_arguments, from_arguments
from monosemantic.models.zoo import fresh_run_folder, print_saved


def cmd_train_lm(args: argparse.Namespace) -> int:
    import torch

    from monosemantic.models.zoo.transformer import (
        LMConfig,
        save_lm,
        shakespeare_corpus,
        train_lm,
        zoo_folder,
    )

    cfg = from_arguments(LMConfig, args)
    if args.threads:
        torch.set_num_threads(args.threads)
    folder, log = fresh_run_folder(args.out, zoo_folder(cfg))
    corpus = shakespeare_corpus(cfg)
    model, metrics = train_lm(cfg, corpus, log=log, eval_every=args.eval_every)
    save_lm(model, corpus.tokenizer, folder, metrics)
    print_saved(metrics, folder)
    return 0


def cmd_lm_features(args: argparse.Namespace) -> int:
    import torch

    from monosemantic.bilinear.sae_basis import FeatureConfig, run_lm_features

    cfg = from_arguments(FeatureConfig, args)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = run_lm_features(
        Path(args.model),
        Path(args.out),
        cfg,
        sae_in=Path(args.sae_in) if args.sae_in else None,
        sae_out=Path(args.sae_out) if args.sae_out else None,
    )
    for row in result["top_outputs"][: args.show]:
        pairs = ", ".join(f"{p['i']}×{p['j']} ({p['q']:+.3g})" for p in row["pairs"][:3])
        print(
            f"output feature {row['feature']}: top-2 |λ| sum {row['top2']:.3g} "
            f"[{row['tokens']}]; strongest input pairs {pairs}"
        )
    print(f"features.json and plots in {args.out}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``zoo train-lm`` and ``zoo lm-features`` to a parser's subcommands."""
    from monosemantic.bilinear.sae_basis import FeatureConfig
    from monosemantic.models.zoo.transformer import LMConfig

    zoo = subparsers.add_parser("zoo", help="the project's own small models (Shakespeare LMs)")
    commands = zoo.add_subparsers(dest="zoo_command", required=True)

    train = commands.add_parser(
        "train-lm", help="train a 1- or 2-layer relu/gelu/bilinear transformer on Shakespeare"
    )
    add_arguments(train, LMConfig)
    train.add_argument("--out", help="output folder (default: the user cache's zoo)")
    train.add_argument("--eval-every", type=int, default=500, help="steps between validations")
    train.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    train.set_defaults(func=cmd_train_lm)

    feats = commands.add_parser(
        "lm-features",
        help="a bilinear LM's MLP read through SAE features: interaction matrices, top pairs",
    )
    feats.add_argument("model", help="a folder written by `zoo train-lm` (bilinear MLP)")
    feats.add_argument("--sae-in", help="SAE folder on the MLP input (default: train one)")
    feats.add_argument("--sae-out", help="SAE folder on the MLP output (default: train one)")
    feats.add_argument("--out", required=True, help="output folder for JSON, SAEs and plots")
    feats.add_argument("--show", type=int, default=5, help="output features to print")
    feats.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    add_arguments(feats, FeatureConfig)
    feats.set_defaults(func=cmd_lm_features)
