"""Options several commands take, each defined once: ``--out``, ``--threads``, ``--data-dir``."""

from __future__ import annotations

import argparse
from pathlib import Path

from monosemantic.data.images import FASHION_FILES, FASHION_ROOT


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


def add_data_dir(parser: argparse.ArgumentParser) -> None:
    """``--data-dir DIR``: the folder of an image data set's files, a Path or None."""
    parser.add_argument(
        "--data-dir",
        type=Path,
        metavar="DIR",
        help=f"folder of the Fashion-MNIST IDX files {', '.join(FASHION_FILES.values())} "
        f"(default: {FASHION_ROOT}, where `apt-get install dataset-fashion-mnist` puts them)",
    )
