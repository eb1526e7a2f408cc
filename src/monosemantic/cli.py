"""The ``monosemantic`` command: thin; parses arguments and calls the library.

monosemantic train   train a sweep of SAEs on a model's activations (or a cache, or a matrix)
monosemantic cache   write a model's activations to disk in shards, resumable
monosemantic eval    evaluate a saved SAE (reconstruction, and spliced into the model)
monosemantic steer / ablate   what a latent does: generate with it added, or the loss without it
monosemantic browse  write a feature browser (a static site) for an SAE; serve shows it
monosemantic mdl     choose among trained SAEs by minimum description length
monosemantic info    list a model's hook points, or describe an SAE or cache folder
monosemantic demo    the end-to-end demo: SmolLM2-135M + Shakespeare → report.html
monosemantic bilinear ...   bilinear MLPs: eigendecompose a classifier, read an LM's MLP via SAEs
monosemantic zoo ...        the project's own models: train MNIST classifiers and Shakespeare LMs
"""

from __future__ import annotations

import argparse
import logging
import sys

from monosemantic.commands import (
    bilinear,
    browse,
    cache,
    causal,
    demo,
    evaluate,
    info,
    mdl,
    train,
    zoo,
)

KNOWN_ERRORS = (ValueError, OSError, ModuleNotFoundError, FloatingPointError)
"""The errors this package raises with a message written for the user (ConfigError and the
format errors are ValueErrors; a failed write says which file and that the old one stands)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="monosemantic",
        description="Find the features a neural network computes with.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of an error, not one line"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for command in (train, cache, evaluate, causal, browse, mdl, info, demo, bilinear, zoo):
        command.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(format="%(name)s: %(message)s", level=logging.WARNING)
    logging.getLogger("monosemantic").setLevel(logging.WARNING if args.quiet else logging.INFO)
    try:
        return int(args.func(args))
    except KNOWN_ERRORS as error:
        if args.debug:
            raise
        print(f"monosemantic {args.command}: error: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # anything else still gets one line; --debug shows where
        if args.debug:
            raise
        print(
            f"monosemantic {args.command}: error: {type(error).__name__}: {error} "
            "(rerun with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
