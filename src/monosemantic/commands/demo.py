"""``monosemantic demo``: the end-to-end demo, SmolLM2-135M + Shakespeare → report.html."""

from __future__ import annotations

import argparse
from pathlib import Path

from monosemantic.commands.options import add_out


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("demo", help="the end-to-end demo, writes report.html")
    add_out(parser, "folder for the cache, the SAE and report.html", default="demo-out")
    parser.add_argument("--quick", action="store_true", help="a smaller run, for tests")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from monosemantic.demo import run_demo

    report = run_demo(Path(args.out), quick=args.quick)
    print(f"report: {report}")
    return 0
