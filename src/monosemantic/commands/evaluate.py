"""``monosemantic eval``: reconstruction and spliced metrics of a saved SAE."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from monosemantic.config import add_arguments, from_arguments
from monosemantic.data.sources import DataConfig
from monosemantic.evaluation.evaluate import evaluate_folder


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "eval",
        help="evaluate a saved SAE",
        description="Reconstruction and spliced metrics of a saved SAE, at the hook point its "
        "config records (--hook for one that records none, as sparsify's and "
        "dictionary_learning's files do).",
    )
    parser.add_argument(
        "sae", help="SAE folder (ours, SAELens's or sparsify's) or dictionary_learning's ae.pt"
    )
    add_arguments(parser, DataConfig, skip=("extra",))
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    metrics = evaluate_folder(Path(args.sae), from_arguments(DataConfig, args))
    print(json.dumps(metrics, indent=2))
    return 0
