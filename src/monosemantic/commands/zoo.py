"""``monosemantic zoo train mnist|lm``: train the project's own small models from a seed.

monosemantic zoo train mnist --weight-decay 1.0 --noise 0.4
monosemantic zoo train mnist --dataset fashion-mnist --data-dir DIR
monosemantic zoo train lm --mlp bilinear --n-layers 1
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from monosemantic.commands.options import add_data_dir, add_out, add_threads
from monosemantic.config import add_arguments, argument_values, from_arguments
from monosemantic.data.images import load_images
from monosemantic.models.zoo import mnist, transformer
from monosemantic.runtime import set_threads


def start_run(args: argparse.Namespace, default: Path) -> tuple[Path, Path]:
    """Apply the options both training commands share: ``--threads``, and ``--out`` (else
    ``default``) as the run's folder, created. Returns (folder, metrics log); the log of an
    earlier run there is removed, since training restarts rather than resumes."""
    set_threads(args.threads)
    folder = Path(args.out) if args.out else default
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "metrics.jsonl"
    log.unlink(missing_ok=True)
    return folder, log


def print_saved(metrics: dict[str, Any], folder: Path) -> None:
    print(json.dumps(metrics, indent=1))
    print(f"saved to {folder}")


def classifier_config(args: argparse.Namespace) -> mnist.ClassifierConfig:
    """The options given, over the defaults of the chosen ``--dataset``: options left out are
    absent from ``args`` (``add_arguments(unset=True)``)."""
    return mnist.ClassifierConfig.for_dataset(**argument_values(mnist.ClassifierConfig, args))


def cmd_train_mnist(args: argparse.Namespace) -> int:
    cfg = classifier_config(args)
    data = load_images(cfg.dataset, args.data_dir)
    folder, log = start_run(args, mnist.zoo_folder(cfg))
    model, metrics = mnist.train_classifier(cfg, data, log=log)
    dtype = torch.float16 if args.half else torch.float32
    mnist.save_classifier(model, folder, metrics, dtype=dtype)
    print_saved(metrics, folder)
    return 0


def cmd_train_lm(args: argparse.Namespace) -> int:
    cfg = from_arguments(transformer.LMConfig, args)
    folder, log = start_run(args, transformer.zoo_folder(cfg))
    corpus = transformer.shakespeare_corpus(cfg)
    model, metrics = transformer.train_lm(cfg, corpus, log=log, eval_every=args.eval_every)
    dtype = torch.float16 if args.half else torch.float32
    transformer.save_lm(model, corpus.tokenizer, folder, metrics, dtype=dtype)
    print_saved(metrics, folder)
    return 0


def dataset_notes(defaults: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Per field, the data sets' own defaults as help text, e.g. ``{"epochs": "fashion-mnist:
    30"}``."""
    notes: dict[str, list[str]] = {}
    for dataset, fields in defaults.items():
        for name, value in fields.items():
            notes.setdefault(name, []).append(f"{dataset}: {value}")
    return {name: "; ".join(texts) for name, texts in notes.items()}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``zoo train mnist`` and ``zoo train lm`` to a parser's subcommands."""
    zoo = subparsers.add_parser(
        "zoo",
        help="the project's own small models: MNIST classifiers, Shakespeare transformers",
        description="Models the project trains itself from a seed, so every weight is known; "
        "read their features with `monosemantic bilinear decompose|lm-features`.",
    )
    zoo_commands = zoo.add_subparsers(dest="zoo_command", required=True)
    train = zoo_commands.add_parser(
        "train",
        help="train a zoo model from a seed",
        description="Train a zoo model from a seed: mnist (a bilinear image classifier) or lm "
        "(a Shakespeare transformer). Both take --out and --threads.",
    )
    models = train.add_subparsers(dest="zoo_model", required=True)

    shared = argparse.ArgumentParser(add_help=False)
    add_out(
        shared, "output folder (default: the config's zoo folder, ~/.cache/monosemantic/zoo/NAME)"
    )
    add_threads(shared)
    shared.add_argument("--half", action="store_true", help="store the weights as float16")

    classifier = models.add_parser(
        "mnist",
        parents=[shared],
        help="a bilinear image classifier: embed → bilinear → head",
        description="Train embed → bilinear → head and save model.safetensors, config.json "
        "(config and final metrics) and metrics.jsonl (one line per epoch). Options not given "
        "take the defaults of the chosen --dataset.",
    )
    add_data_dir(classifier)
    add_arguments(
        classifier,
        mnist.ClassifierConfig,
        skip=("d_input", "n_classes"),
        unset=True,
        notes=dataset_notes(mnist.DATASET_DEFAULTS),
    )
    classifier.set_defaults(func=cmd_train_mnist)

    lm = models.add_parser(
        "lm",
        parents=[shared],
        help="a 1- or 2-layer relu/gelu/bilinear transformer on Shakespeare",
        description="Train a small transformer on the Shakespeare plays and save "
        "model.safetensors, tokenizer.json, config.json (config and final metrics) and "
        "metrics.jsonl (a validation row every --eval-every steps).",
    )
    lm.add_argument(
        "--eval-every", type=int, default=500, help="steps between validations (default: 500)"
    )
    add_arguments(lm, transformer.LMConfig)
    lm.set_defaults(func=cmd_train_lm)
