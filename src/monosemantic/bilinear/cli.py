"""``monosemantic bilinear train|decompose``: the zoo's bilinear classifiers and their features.

monosemantic bilinear train --dataset mnist --weight-decay 1.0 --noise 0.4
monosemantic bilinear decompose mnist --out runs/bilinear
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

from monosemantic.config import add_arguments, from_arguments
from monosemantic.files import write_json
from monosemantic.models.zoo import fresh_run_folder, print_saved

DEFAULT_MODEL = "mnist"
"""The decompose argument naming the default zoo classifier (shipped, else trained)."""


def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from monosemantic.data.images import load_images
    from monosemantic.models.zoo.mnist import (
        ClassifierConfig,
        save_classifier,
        train_classifier,
        zoo_folder,
    )

    cfg = from_arguments(ClassifierConfig, args)
    if args.threads:
        torch.set_num_threads(args.threads)
    folder, log = fresh_run_folder(args.out, zoo_folder(cfg))
    model, metrics = train_classifier(cfg, load_images(cfg.dataset), log=log)
    dtype = torch.float16 if args.half else torch.float32
    save_classifier(model, folder, metrics, dtype=dtype)
    print_saved(metrics, folder)
    return 0


def cmd_decompose(args: argparse.Namespace) -> int:
    import torch

    from monosemantic.bilinear.report import DecomposeConfig, decompose_classifier
    from monosemantic.data.images import load_images
    from monosemantic.models.zoo.mnist import ClassifierConfig, get_classifier, load_classifier

    cfg = from_arguments(DecomposeConfig, args)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model == DEFAULT_MODEL:
        model_cfg = ClassifierConfig()
        data = load_images(model_cfg.dataset)
        model, _ = get_classifier(model_cfg, data)
    else:
        model, _ = load_classifier(Path(args.model))
        data = load_images(model.cfg.dataset)
    out = Path(args.out)
    res = decompose_classifier(model, data, out, cfg)
    record = {"model": args.model, "model_config": asdict(model.cfg), **asdict(cfg)}
    write_json(out / "config.json", record)
    acc = res["truncation"]["test_accuracy"]
    shown = ", ".join(f"k={k}: {acc[k]:.4f}" for k in (1, 10, 20, cfg.k_max) if k <= cfg.k_max)
    print(
        f"test accuracy {res['test_accuracy']:.4f}; truncated {shown}\n"
        f"mean effective rank {res['effective_rank_mean']:.2f}; decomposition "
        f"{res['decompose_seconds']:.3f} s"
    )
    if cfg.adversarial:
        adv = res["adversarial"]
        print(
            f"masks at strength {cfg.strength}: accuracy {adv['adversarial']:.4f} "
            f"(random masks {adv['random']:.4f}, clean {adv['clean']:.4f})"
        )
    print(f"plots and decomposition.json in {out}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``bilinear`` command with its ``train`` and ``decompose`` subcommands."""
    from monosemantic.bilinear.report import DecomposeConfig
    from monosemantic.models.zoo.mnist import ClassifierConfig

    bilinear = subparsers.add_parser(
        "bilinear",
        help="bilinear MLPs: train zoo classifiers, read features from their weights",
        description="Bilinear layers compute exactly with a third-order tensor, so their "
        "features are eigenvectors read off the weights (Pearce et al. 2024).",
    )
    commands = bilinear.add_subparsers(dest="bilinear_command", required=True)

    train = commands.add_parser(
        "train",
        help="train a bilinear image classifier of the zoo",
        description="Train embed → bilinear → head from a seed and save model.safetensors + "
        "config.json (default folder: the user cache, ~/.cache/monosemantic/zoo/NAME).",
    )
    train.add_argument(
        "--out", default="", help="output folder (default: the zoo cache folder of the config)"
    )
    train.add_argument("--half", action="store_true", help="store the weights as float16")
    train.add_argument(
        "--threads", type=int, default=0, help="torch threads (default 0: torch's own choice)"
    )
    add_arguments(train, ClassifierConfig, skip=("d_input", "n_classes"))
    train.set_defaults(func=cmd_train)

    decompose = commands.add_parser(
        "decompose",
        help="eigenvectors, spectra, truncation and adversarial masks of a classifier",
        description="Decompose a saved bilinear classifier: writes eigenvectors.png, "
        "spectra.png, truncation.png, adversarial.png, sweep.png, decomposition.json and "
        "config.json into --out.",
    )
    decompose.add_argument(
        "model",
        help=f"a folder written by `bilinear train`, or '{DEFAULT_MODEL}' for the default "
        "classifier (shipped weights, else trained and cached)",
    )
    decompose.add_argument(
        "--out", default="runs/bilinear", help="output folder (default: runs/bilinear)"
    )
    decompose.add_argument(
        "--threads", type=int, default=0, help="torch threads (default 0: torch's own choice)"
    )
    add_arguments(decompose, DecomposeConfig)
    decompose.set_defaults(func=cmd_decompose)
