"""Evaluate SAEs on held-out activations: reconstruction for all, and for text the model's loss
with each SAE spliced in (the clean and zero-ablated passes shared by the whole sweep)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from monosemantic.data.sources import DataConfig, Text, open_sources, resolve
from monosemantic.data.store import Step, check_finite
from monosemantic.evaluation.metrics import density_histogram, evaluate_reconstruction
from monosemantic.evaluation.spliced import spliced_metrics_many
from monosemantic.files import write_json
from monosemantic.models.subject import load_subject
from monosemantic.sae.base import SAE
from monosemantic.sae.io import load_sae


def rows_at(steps: Iterable[Step], hook: str) -> list[torch.Tensor]:
    """The rows [n, d] a hook point contributes to each held-out step (a plain tensor is every
    hook's), checked finite: NaN metrics would say nothing."""
    rows = [step[hook] if isinstance(step, dict) else step for step in steps]
    for i, batch in enumerate(rows):
        check_finite(batch, step=i, hook=hook or "(input rows)", where="held-out batch")
    return rows


def evaluate_saes(
    saes: list[SAE],
    eval_steps: list[Step],
    text: Text | None,
    data: DataConfig,
    folders: list[Path] | None = None,
) -> list[tuple[dict[str, Any], torch.Tensor]]:
    """Per SAE (metrics, log10 feature density [d_sae]): reconstruction on the held-out rows of
    its hook, plus CE, KL and loss recovered with it spliced into the model for text data. With
    ``folders`` (one per SAE), each density histogram is written there as PNG and JSON."""
    results = []
    for i, sae in enumerate(saes):
        metrics = evaluate_reconstruction(sae, rows_at(eval_steps, sae.cfg.hook))
        log10_density = metrics.pop("log10_density")
        metrics.pop("density", None)
        folder = None if folders is None else folders[i]
        histogram = density_histogram(
            log10_density, None if folder is None else folder / "density.png"
        )
        if folder is not None:
            write_json(folder / "density_histogram.json", histogram)
        results.append((metrics, log10_density))
    if text is not None:
        n = min(len(text.eval_tokens), data.spliced_windows)
        spliced = spliced_metrics_many(
            text.model,
            text.eval_tokens[:n],
            [(sae.cfg.hook, sae) for sae in saes],
            batch_size=data.windows_per_forward,
            exclude=None if text.eval_exclude is None else text.eval_exclude[:n],
        )
        for (metrics, _), extra in zip(results, spliced, strict=True):
            metrics.update(extra)
    return results


def evaluate_folder(folder: Path, data: DataConfig, *, model_given: bool = False) -> dict[str, Any]:
    """Evaluate a saved SAE on ``data``, at the hook point recorded in its config (``data.hook``
    when it records none), on the model it records unless ``model_given`` (``data.model``)."""
    sae = load_sae(folder)
    if sae.cfg.hook:
        data = replace(data, hook=[sae.cfg.hook])
    if sae.cfg.model and not model_given:
        data = replace(data, model=sae.cfg.model)
    resolved = resolve(data)
    text = load_subject(resolved)
    sources = open_sources(resolved, text)
    ((where, width),) = sources.widths.items()
    if sae.d_in != width:
        raise ValueError(
            f"SAE has d_in={sae.d_in} but the activations at {where or data.data} have width "
            f"{width}: use an SAE trained on this hook point"
        )
    ((metrics, _),) = evaluate_saes([sae], list(sources.eval_steps), text, resolved.cfg)
    return metrics
