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
        description="Reconstruction and spliced metrics of a saved SAE, on the model and at the "
        "hook point its config records (--model to use another; --hook for one that records "
        "none, as sparsify's and dictionary_learning's files do).",
    )
    parser.add_argument(
        "sae", help="SAE folder (ours, SAELens's or sparsify's) or dictionary_learning's ae.pt"
    )
    add_arguments(parser, DataConfig, skip=("extra",))
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    data = from_arguments(DataConfig, args)
    given = data.model != DataConfig.model  # an explicit --model wins over the SAE's record
    metrics = evaluate_folder(Path(args.sae), data, model_given=given)
    print(json.dumps(metrics, indent=2))
    return 0
