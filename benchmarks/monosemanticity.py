"""Towards Monosemanticity in miniature: the numbers and figures of docs/monosemanticity.md.

    python benchmarks/monosemanticity.py [--out runs/monosemanticity] [--steps 1500]
        [--architecture topk standard] [--sparsity-coefficient 0.1 0.3 1]

For each architecture, ``monosemanticity.run_miniature``: 4096 latents on the 512 ReLU neurons of
the shipped one-layer Shakespeare transformer (``blocks.0.mlp.down:input``), trained live on all
the plays, evaluated on held-out windows (FVU, L0, dead fraction, loss recovered and KL with the
reconstruction spliced in), and a browser over every window. ``standard`` (ReLU + L1, the
paper's, with resampling) trains one dictionary per --sparsity-coefficient on the same batches.
Writes each dictionary's density histogram over every token browsed to
docs/figures/monosemanticity/NAME.png and prints one JSON line per dictionary.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from monosemantic.data.sources import resolve
from monosemantic.evaluation.metrics import density_histogram, log10_density
from monosemantic.interpret.browser import browse_text
from monosemantic.models.subject import load_subject
from monosemantic.monosemanticity import MODEL, miniature_configs
from monosemantic.runtime import set_threads
from monosemantic.sae.io import load_sae
from monosemantic.training.sweep import train_sweep

FIGURES = Path("docs/figures/monosemanticity")
COLUMNS = ("fvu", "l0", "dead_fraction", "loss_recovered", "kl", "ce_clean", "ce_sae")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/monosemanticity"))
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--architecture", nargs="+", default=["topk", "standard"])
    parser.add_argument("--sparsity-coefficient", type=float, nargs="+", default=[0.1, 0.3, 1.0])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    set_threads(args.threads)
    FIGURES.mkdir(parents=True, exist_ok=True)
    text = None
    for architecture in args.architecture:
        data, sweep, training = miniature_configs(architecture=architecture, steps=args.steps)
        if architecture == "standard":
            sweep = replace(sweep, settings={"sparsity_coefficient": args.sparsity_coefficient})
        text = text or load_subject(resolve(data))
        folder = args.out / architecture
        summaries = train_sweep(data, sweep, training, folder, overwrite=True, text=text)
        for summary in summaries:
            name = Path(summary["folder"]).name
            sae = load_sae(Path(summary["folder"]))
            meta = {"model": MODEL, "data": "shakespeare", "sae": name}
            dash, _ = browse_text(sae, text, args.out / "browsers" / name, meta=meta)
            density_histogram(log10_density(dash.stats.density), FIGURES / f"{name}.png")
            row = {"sae": name, **{k: summary["eval"][k] for k in COLUMNS}}
            row["alive_on_all_tokens"] = int((dash.stats.density > 0).sum())
            row["tokens_browsed"] = dash.n_tokens
            row["browse_s"] = round(dash.forward_s + dash.stats_s, 1)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
