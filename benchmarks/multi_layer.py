"""One multi-layer SAE over all 30 residual layers of SmolLM2-135M (Lawson et al. 2024).

    python benchmarks/multi_layer.py [--out runs/multi_layer] [--steps 500] [--expansion 8]
        [--k 32] [--figure docs/figures/multi_layer]

The demo's text (160k tokens of Shakespeare, BOS left out), ``model.layers.*:output``: every
decoder layer's output, each layer-token vector an input, standardised per vector.
TopK + AuxK with 4608 latents (``--expansion 8``), k = 32; each step holds 256 token positions ×
30 layers = 7680 inputs. Evaluated on the held-out windows: FVU per layer, CE and KL with the SAE
spliced in at one layer at a time (16 windows), and the spread of each latent over layers.
Writes the run under OUT, FIGURE/layers.png (the heatmap) and FIGURE/per_layer.png, and prints
the per-layer table docs/multi_layer.md shows.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
from pathlib import Path

from monosemantic.data.sources import DataConfig
from monosemantic.files import atomic_write_bytes
from monosemantic.runtime import set_threads
from monosemantic.training.sweep import SweepConfig, train_sweep
from monosemantic.training.trainer import TrainConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/multi_layer"))
    parser.add_argument("--figure", type=Path, default=Path("docs/figures/multi_layer"))
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--expansion", type=int, default=8)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    set_threads(args.threads)

    data = DataConfig(
        hook=["model.layers.*:output"],
        data="shakespeare",
        max_tokens=160_000,
        spliced_windows=16,
        buffer_rows=16_384,
    )
    sweep = SweepConfig("topk", [args.expansion], {"k": args.k}, standardize=True)
    training = TrainConfig(
        steps=args.steps,
        batch_size=256,
        lr=1e-3,
        lr_warmup_steps=50,
        dead_after_tokens=1_000_000,
        progress=False,
    )
    (summary,) = train_sweep(data, sweep, training, args.out, overwrite=True)
    metrics = summary["eval"]
    args.figure.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(summary["folder"]) / "layers.png", args.figure / "layers.png")
    atomic_write_bytes(args.figure / "per_layer.png", plot_per_layer(metrics["layers"]))
    timings = json.loads((args.out / "summary.json").read_text())["timings"]
    print(json.dumps({k: v for k, v in metrics.items() if not isinstance(v, dict)}, indent=1))
    print(json.dumps(timings))
    print("\n| layer | FVU | L0 | CE spliced − clean | KL | loss recovered |")
    print("|---|---|---|---|---|---|")
    for point, layer in metrics["layers"].items():
        delta = layer["ce_sae"] - layer["ce_clean"]
        cells = (layer["fvu"], layer["l0"], delta, layer["kl"], layer["loss_recovered"])
        print(f"| {point} | " + " | ".join(f"{c:.4g}" for c in cells) + " |")


def plot_per_layer(layers: dict) -> bytes:
    """PNG: FVU and CE increase against the layer."""
    from matplotlib.figure import Figure

    depth = range(len(layers))
    rows = list(layers.values())
    fig = Figure(figsize=(9, 3.4), layout="constrained")
    left, right = fig.subplots(1, 2)
    left.plot(depth, [r["fvu"] for r in rows], "o-")
    left.set(xlabel="layer", ylabel="FVU", title="reconstruction of each layer")
    right.plot(depth, [r["ce_sae"] - r["ce_clean"] for r in rows], "o-", color="tab:red")
    right.set(xlabel="layer", ylabel="CE increase (nats/token)", title="spliced in at that layer")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


if __name__ == "__main__":
    main()
