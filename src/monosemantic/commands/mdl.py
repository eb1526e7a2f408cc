"""``monosemantic mdl``: the MDL-optimal SAE among a sweep's, at an FVU tolerance."""

from __future__ import annotations

import argparse
from pathlib import Path

from monosemantic.commands.options import add_out, add_threads
from monosemantic.config import add_arguments, from_arguments
from monosemantic.evaluation.selection import read_candidates, select
from monosemantic.interpret.mnist_mdl import MnistMDLConfig, run_mnist_mdl
from monosemantic.interpret.report import format_value
from monosemantic.runtime import set_threads

COLUMNS = ("d_sae", "l0", "fvu", "description_length", "description_length_bound")


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "mdl",
        help="choose among trained SAEs by minimum description length",
        description="List the SAEs of run or SAE folders (width, L0, FVU, description length in "
        "bits per input, loss recovered where measured), mark those whose FVU is within "
        "--tolerance, and name the one among them with the shortest description (Ayonrinde et "
        "al. 2024). Example: monosemantic mdl runs/sweep --tolerance 0.3",
    )
    parser.add_argument("folders", nargs="+", help="run folders or SAE folders")
    parser.add_argument("--tolerance", type=float, required=True, help="the largest FVU accepted")
    parser.set_defaults(func=run)

    study = commands.add_parser(
        "mdl-mnist",
        help="the MNIST description-length study: DL against dictionary width",
        description="TopK SAEs on MNIST pixels over --widths × --k; per width the SAE with the "
        "shortest description within --tolerance; writes mdl.json, dl_vs_width.png and "
        "decoders.png (the optimum beside the narrowest and widest) into --out.",
    )
    add_out(study, "output folder", default="runs/mdl-mnist")
    add_threads(study)
    add_arguments(study, MnistMDLConfig)
    study.set_defaults(func=run_study)


def run(args: argparse.Namespace) -> int:
    candidates = read_candidates([Path(f) for f in args.folders])
    best = select(candidates, args.tolerance)
    header = ["", "name", *COLUMNS, "loss_recovered"]
    rows = [header]
    for c in sorted(candidates, key=lambda c: (c.d_sae, c.metrics["l0"])):
        values = [c.d_sae, *(c.metrics[k] for k in COLUMNS[1:]), c.metrics.get("loss_recovered")]
        mark = "*" if c is best else ("+" if c.within else "")
        rows.append([mark, c.name, *("-" if v is None else format_value(v) for v in values)])
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(str(cell).rjust(width) for cell, width in zip(row, widths, strict=True)))
    print(f"\n+ within FVU {args.tolerance}; * the shortest description among them")
    if best is None:
        print(
            f"no SAE has FVU <= {args.tolerance}: raise --tolerance or train wider or denser SAEs"
        )
        return 1
    print(f"MDL-optimal: {best.name} ({best.description_length:.1f} bits per input) {best.folder}")
    return 0


def run_study(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    result = run_mnist_mdl(from_arguments(MnistMDLConfig, args), Path(args.out))
    for row in result["chosen"]:
        print(
            f"width {row['width']:5d}: k={row['k']:3d}  FVU {row['fvu']:.3f}  "
            f"{row['description_length']:.1f} bits per image"
        )
    print(f"MDL-optimal width {result['optimum_width']}; figures and mdl.json in {args.out}")
    return 0
