"""Towards Monosemanticity (Bricken et al. 2023) in miniature.

A dictionary on the 512 ReLU neurons of the project's one-layer Shakespeare transformer (shipped
in the package, float16), read as the input of its down projection, so each latent's logit
effect is W_U (g ⊙ W_down d): the original set-up (a one-layer model, its MLP activations, a
wide dictionary, loss recovered with the reconstruction spliced in, density histogram, a
browser) at a size a CPU trains in minutes. ``docs/monosemanticity.md`` is the study;
``make demo`` runs a shorter version.
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any

from monosemantic.data.sources import DataConfig, resolve
from monosemantic.evaluation.metrics import density_histogram, log10_density
from monosemantic.interpret.browser import browse_text
from monosemantic.interpret.report import ReportSection
from monosemantic.models.subject import load_subject
from monosemantic.sae.io import load_sae
from monosemantic.training.sweep import SweepConfig, train_sweep
from monosemantic.training.trainer import TrainConfig

MODEL = "zoo:shakespeare-relu-l1-d128-h512-s1500-seed0"
HOOK = "blocks.0.mlp.down:input"
LATENTS = 4096


def miniature_configs(
    *, quick: bool = False, architecture: str = "topk", steps: int = 600
) -> tuple[DataConfig, SweepConfig, TrainConfig]:
    """Settings for ``run_miniature``: 4096 latents on all of Shakespeare (1.6M tokens);
    ``quick`` shrinks them for tests. ``architecture``: topk (k = 32) or standard (ReLU + L1,
    the paper's, with resampling of dead latents)."""
    data = DataConfig(
        model=MODEL,
        hook=[HOOK],
        data="shakespeare",
        max_tokens=16_384 if quick else 2_000_000,
        spliced_windows=4 if quick else 64,
    )
    settings: dict[str, Any] = {"k": 32} if architecture == "topk" else {}
    sweep = SweepConfig(architecture=architecture, d_sae=[LATENTS], settings=settings)
    training = TrainConfig(
        steps=20 if quick else steps,
        batch_size=256 if quick else 1024,
        lr=1e-3 if architecture == "topk" else 4e-4,
        lr_warmup_steps=5 if quick else 50,
        dead_after_tokens=200_000,
        resample_every=None if architecture == "topk" else max(steps // 4, 1),
        seed=0,
        log_every=5 if quick else 50,
    )
    return data, sweep, training


def run_miniature(
    out: Path,
    *,
    quick: bool = False,
    architecture: str = "topk",
    steps: int = 600,
    browse_windows: int | None = None,
) -> dict[str, Any]:
    """Train the dictionary, evaluate it spliced into the model, and write its browser over
    the first ``browse_windows`` windows (default all) into ``out/browser``. Returns the run's
    summary (metrics under ``eval``) plus ``browser``, ``density_png`` (the density histogram
    over the tokens browsed), ``latents_alive`` and ``tokens_browsed``."""
    data, sweep, training = miniature_configs(quick=quick, architecture=architecture, steps=steps)
    text = load_subject(resolve(data))
    assert text is not None
    (summary,) = train_sweep(data, sweep, training, out / "run", overwrite=True, text=text)
    sae = load_sae(summary["folder"])
    meta = {"model": MODEL, "data": "shakespeare", "sae": summary["folder"]}
    dash, index = browse_text(sae, text, out / "browser", meta=meta, max_windows=browse_windows)
    density_png = out / "density.png"
    density_histogram(log10_density(dash.stats.density), density_png)
    return {
        **summary,
        "browser": index,
        "density_png": density_png,
        "latents_alive": int((dash.stats.density > 0).sum()),
        "tokens_browsed": dash.n_tokens,
    }


def miniature_section(summary: dict[str, Any], report_dir: Path) -> ReportSection:
    """The demo report's section: what ran, loss recovered, the density histogram and a link
    to the browser (relative to the report's folder)."""
    metrics = summary["eval"]
    link = Path(os.path.relpath(summary["browser"], report_dir))
    return ReportSection(
        title="Towards Monosemanticity in miniature",
        text=(
            f"A {LATENTS}-latent dictionary on the 512 ReLU neurons of the project's one-layer "
            f"Shakespeare transformer ({MODEL}, shipped in the package): loss recovered "
            f"{metrics['loss_recovered']:.3f}, L0 {metrics['l0']:.1f}, "
            f"{summary['latents_alive']} of {LATENTS} latents fire on the "
            f"{summary['tokens_browsed']:,} tokens browsed.\n\n"
            f"Open the feature browser: {link}"
        ),
        table={k: metrics[k] for k in ("fvu", "l0", "dead_fraction", "loss_recovered", "kl")},
        images=[summary["density_png"]],
        html=f"<p><a href='{html.escape(link.as_posix())}'>open the feature browser</a></p>",
    )
