"""A transcoder of SmolLM2's layer-3 MLP beside an SAE on the same MLP's output, at equal L0.

    python benchmarks/compare_transcoders.py [--out runs/transcoders] [--steps 600] [--k 32]
        [--expansion 4] [--architecture topk]

The demo's data (SmolLM2-135M over 160k tokens of Shakespeare) and schedule; every dictionary has
2304 latents (``--expansion 4``) and k = 32 active latents per token:
- an SAE reading and reconstructing ``model.layers.3.mlp:output``;
- a transcoder reading ``model.layers.3.mlp:input`` and reconstructing the MLP's output;
- a skip transcoder (the same plus a linear skip, Paulo et al. 2025).
The SAE and the transcoder train together on the same activations of one model pass; the skip
transcoder in a second run on the same stream. Each is evaluated on the held-out windows: FVU of
the MLP's output, L0, dead fraction, and loss recovered and KL with its output spliced in place
of the MLP's. Writes OUT/comparison.json and prints the table docs/transcoders.md shows.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from monosemantic.data.sources import resolve
from monosemantic.demo import demo_configs
from monosemantic.models.subject import load_subject
from monosemantic.runtime import set_threads
from monosemantic.training.sweep import SweepConfig, train_sweep

MLP_IN, MLP_OUT = "model.layers.3.mlp:input", "model.layers.3.mlp:output"
COLUMNS = ("fvu", "l0", "dead_fraction", "loss_recovered", "kl", "ce_sae", "ce_clean")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/transcoders"))
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--expansion", type=int, default=4, help="d_sae = expansion × 576")
    parser.add_argument("--architecture", default="topk")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    set_threads(args.threads)

    demo, _, training = demo_configs(quick=False)
    training = replace(training, steps=args.steps, progress=False)
    both = replace(demo, hook=[MLP_IN, MLP_OUT], hook_out=[MLP_OUT, ""])
    text = load_subject(resolve(both))
    sweep = SweepConfig(args.architecture, [args.expansion], {"k": args.k})
    rows = []
    for kind, sweep_kind, data in (
        ("transcoder + SAE", sweep, both),
        (
            "skip transcoder",
            replace(sweep, skip_transcoder=True),
            replace(both, hook=[MLP_IN], hook_out=[MLP_OUT]),
        ),
    ):
        folder = args.out / ("skip" if sweep_kind.skip_transcoder else "plain")
        summaries = train_sweep(data, sweep_kind, training, folder, overwrite=True, text=text)
        timings = json.loads((folder / "summary.json").read_text())["timings"]
        for summary in summaries:
            row = {"dictionary": summary["name"], "run": kind, **summary["eval"], **timings}
            rows.append({key: row[key] for key in ("dictionary", "run", *COLUMNS, "train_s")})
            print(json.dumps(rows[-1]), flush=True)
    (args.out / "comparison.json").write_text(json.dumps(rows, indent=2))

    print("\n| dictionary | " + " | ".join(COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 1) + "|")
    for row in rows:
        print(f"| {row['dictionary']} | " + " | ".join(f"{row[c]:.4g}" for c in COLUMNS) + " |")


if __name__ == "__main__":
    main()
