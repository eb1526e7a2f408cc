"""Options several commands take, each defined once: ``--out`` and ``--threads``."""

from __future__ import annotations

import argparse


def add_out(
    parser: argparse.ArgumentParser,
    help: str,
    *,
    default: str | None = None,
    required: bool = False,
) -> None:
    """``--out FOLDER``: the folder a command writes into; ``help`` gets the default appended."""
    text = f"{help} (default: {default})" if default else help
    parser.add_argument("--out", metavar="FOLDER", default=default, required=required, help=text)


def add_threads(parser: argparse.ArgumentParser) -> None:
    """``--threads N``; the command applies it with ``runtime.set_threads(args.threads)``."""
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        metavar="N",
        help="torch CPU threads (default 0: torch's own choice; on a busy machine, the idle cores)",
    )
