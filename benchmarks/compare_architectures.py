"""TopK, BatchTopK, Feature Choice, Mutual Choice and Matryoshka side by side on the demo's data.

    python benchmarks/compare_architectures.py [--out runs/architectures] [--steps 600]
        [--expansion 4] [--k 32] [--architectures topk ...]

SmolLM2-135M ``model.layers.3.mlp:output`` over Shakespeare (the demo's 160k-token cache, made
once under OUT/cache), each architecture with 2304 latents (``--expansion 4``) and a mean of
k = 32 active latents per token, trained on the same 600 × 1024 activations with the demo's
schedule, then evaluated on the held-out windows (FVU, L0, dead fraction, loss recovered and KL
with the SAE spliced in). Each architecture trains alone, so its tokens/s is its own. Writes
OUT/comparison.json and prints the table docs/architectures.md shows.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import torch

from monosemantic.data.sources import DataConfig, cache_activations, open_sources, resolve
from monosemantic.demo import demo_configs
from monosemantic.evaluation.metrics import ReconstructionStats, evaluate_reconstruction
from monosemantic.models.subject import load_subject
from monosemantic.runtime import set_threads
from monosemantic.sae.base import SAE
from monosemantic.sae.io import load_sae
from monosemantic.sae.matryoshka import MatryoshkaSAE
from monosemantic.training.sweep import SweepConfig, train_sweep

ARCHITECTURES = ("topk", "batchtopk", "feature_choice", "mutual_choice", "matryoshka")
COLUMNS = (
    "fvu",
    "l0",
    "batch_rule_fvu",
    "dead_fraction",
    "loss_recovered",
    "kl",
    "train_tokens_per_s",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/architectures"))
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--expansion", type=int, default=4, help="d_sae = expansion × 576")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--architectures", nargs="+", default=list(ARCHITECTURES))
    args = parser.parse_args()
    set_threads(args.threads)

    data, _, training = demo_configs(quick=False)
    training = replace(training, steps=args.steps, progress=False)
    text = load_subject(resolve(data))
    assert text is not None
    cache = args.out / "cache"
    cache_activations(data, text, cache)
    from_cache = DataConfig(data=str(cache), spliced_windows=data.spliced_windows)

    rows = []
    for name in args.architectures:
        member = SweepConfig(architecture=name, expansion=[args.expansion], settings={"k": args.k})
        folder = args.out / name
        (summary,) = train_sweep(from_cache, member, training, folder, overwrite=True, text=text)
        timings = json.loads((folder / "summary.json").read_text())["timings"]
        row = {"architecture": name, **summary["eval"], **timings}
        rows.append({key: row[key] for key in ("architecture", *COLUMNS) if key in row})
        sae = load_sae(summary["folder"])
        held = [step[sae.cfg.hook] for step in open_sources(resolve(from_cache), text).eval_steps]
        rows[-1]["batch_rule_fvu"] = batch_rule_fvu(sae, held)
        if isinstance(sae, MatryoshkaSAE):
            rows[-1]["prefix_fvu"] = {
                w: evaluate_reconstruction(sae.prefix(w), held)["fvu"] for w in sae.cfg.widths
            }
        print(json.dumps(rows[-1]), flush=True)
    (args.out / "comparison.json").write_text(json.dumps(rows, indent=2))

    print("\n| architecture | " + " | ".join(COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 1) + "|")
    for row in rows:
        cells = [f"{row[c]:,.0f}" if c.endswith("per_s") else f"{row[c]:.4g}" for c in COLUMNS]
        print(f"| {row['architecture']} | " + " | ".join(cells) + " |")


@torch.no_grad()
def batch_rule_fvu(sae: SAE, held: list[torch.Tensor]) -> float:
    """Held-out FVU with the training-time selection (``sae.train()``: batch top-k, feature
    choice), where L0 is exactly k on average, beside the inference rule's FVU at its own L0."""
    stats = ReconstructionStats(sae.d_sae)
    sae.train()
    for rows in held:
        out = sae.forward_full(rows)
        stats.update(rows, out.x_hat, out.codes)
    sae.eval()
    return float(stats.result()["fvu"])


if __name__ == "__main__":
    main()
