"""Braun et al. (2024)'s comparison in miniature: local vs end-to-end SAEs, L0 against CE increase.

    python benchmarks/e2e_pareto.py [--out runs/e2e] [--steps 2000]
        [--local 0.03 0.1 ...] [--e2e 0.03 0.1 ...] [--e2e-ds 0.03 0.1 ...]
        [--figure docs/figures/e2e]

The subject is the project's 2-layer Shakespeare transformer with ReLU MLPs (`monosemantic zoo
train lm --mlp relu --n-layers 2`, trained here first if it is not in the zoo cache); the SAEs
read the residual stream after block 0 (``blocks.0:output``, d = 128) and have 1024 latents
(ReLU + L1, ``standard``). One sweep per objective over the sparsity coefficients, each SAE on the
same token windows (about 1024 tokens a step): ``local`` minimises the reconstruction error,
``e2e`` the KL divergence of the model's next-token distribution with the SAE spliced in,
``e2e+ds`` that plus the MSE of the residual stream after block 1 (α = β = 1).
Evaluation on 64 held-out windows: L0, CE increase (CE with the SAE spliced in minus clean CE,
nats/token), KL and FVU. Writes OUT/pareto.json and the figure FIGURE/pareto.png, and prints the
table docs/e2e.md shows.
"""

from __future__ import annotations

import argparse
import io
import json
from dataclasses import replace
from pathlib import Path

from monosemantic.data.sources import DataConfig
from monosemantic.files import atomic_write_bytes
from monosemantic.models.zoo.transformer import LMConfig, get_lm, zoo_folder
from monosemantic.runtime import set_threads
from monosemantic.training.sweep import SweepConfig, train_sweep
from monosemantic.training.trainer import TrainConfig

HOOK, LATER = "blocks.0:output", "blocks.1:output"
COLUMNS = ("sparsity_coefficient", "l0", "ce_increase", "kl", "fvu", "dead_fraction")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/e2e"))
    parser.add_argument("--figure", type=Path, default=Path("docs/figures/e2e"))
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--expansion", type=int, default=8)
    parser.add_argument("--local", type=float, nargs="+", default=[0.03, 0.06, 0.1, 0.2, 0.3, 0.5])
    parser.add_argument("--e2e", type=float, nargs="+", default=[0.03, 0.1, 0.3, 1, 2, 4])
    parser.add_argument("--e2e-ds", type=float, nargs="+", default=[0.03, 0.1, 0.3, 1, 2, 4])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    set_threads(args.threads)

    lm = LMConfig(mlp="relu", n_layers=2)
    get_lm(lm)  # trains and saves it once
    data = DataConfig(
        model=str(zoo_folder(lm)),
        hook=[HOOK],
        data="shakespeare",
        context_size=128,
        max_tokens=400_000,
        spliced_windows=64,
    )
    training = TrainConfig(
        steps=args.steps,
        batch_size=1024,
        lr=1e-3,
        lr_warmup_steps=50,
        sparsity_warmup_steps=args.steps // 10,
        dead_after_tokens=200_000,
        progress=False,
    )
    rows = []
    runs = {
        "local": (args.local, training),
        "e2e": (args.e2e, replace(training, objective="e2e")),
        "e2e+ds": (args.e2e_ds, replace(training, objective="e2e+ds", downstream_hooks=[LATER])),
    }
    for objective, (coefficients, run) in runs.items():
        sweep = SweepConfig("standard", [args.expansion], {"sparsity_coefficient": coefficients})
        folder = args.out / objective.replace("+", "_")
        for summary in train_sweep(data, sweep, run, folder, overwrite=True):
            metrics = summary["eval"]
            rows.append(
                {
                    "objective": objective,
                    "sparsity_coefficient": summary["config"]["sparsity_coefficient"],
                    "ce_increase": metrics["ce_sae"] - metrics["ce_clean"],
                    **{k: metrics[k] for k in ("l0", "kl", "fvu", "dead_fraction", "ce_clean")},
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    (args.out / "pareto.json").write_text(json.dumps(rows, indent=2))
    args.figure.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(args.figure / "pareto.png", plot(rows))

    print("\n| objective | " + " | ".join(COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 1) + "|")
    for row in rows:
        print(f"| {row['objective']} | " + " | ".join(f"{row[c]:.4g}" for c in COLUMNS) + " |")


def plot(rows: list[dict]) -> bytes:
    """PNG: L0 against CE increase, one line per objective."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    for objective, style in (("local", "o-"), ("e2e", "s-"), ("e2e+ds", "^-")):
        points = sorted((r["ce_increase"], r["l0"]) for r in rows if r["objective"] == objective)
        ax.plot(*zip(*points, strict=True), style, label=objective)
    ax.set(
        xlabel="CE increase with the SAE spliced in (nats/token)",
        ylabel="L0 (active latents per token)",
        yscale="log",
        title="2-layer Shakespeare transformer, blocks.0:output",
    )
    ax.legend()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    return buffer.getvalue()


if __name__ == "__main__":
    main()
