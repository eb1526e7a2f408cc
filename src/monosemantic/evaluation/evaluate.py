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
from monosemantic.sae.base import SAE, UNKNOWN_HOOK
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
    its hook (a transcoder's of its target), plus CE, KL and loss recovered with it spliced into
    the model for text data (a transcoder's output in place of its target's). With
    ``folders`` (one per SAE), each density histogram is written there as PNG and JSON."""
    results = []
    for i, sae in enumerate(saes):
        rows = rows_at(eval_steps, sae.cfg.hook)
        if sae.cfg.transcoder:
            targets = rows_at(eval_steps, sae.cfg.hook_out)
            metrics = evaluate_reconstruction(sae, list(zip(rows, targets, strict=True)))
        else:
            metrics = evaluate_reconstruction(sae, rows)
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
            [((sae.cfg.hook, sae.cfg.target_hook), sae) for sae in saes],
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
    cfg = sae.cfg
    if cfg.hook:
        hook_out = [cfg.hook_out] if cfg.transcoder and cfg.hook_out != UNKNOWN_HOOK else []
        data = replace(data, hook=[cfg.hook], hook_out=hook_out or data.hook_out)
    if cfg.transcoder and not data.hook_out:
        raise ValueError(
            f"{folder} holds a transcoder whose files do not say which point it reconstructs: "
            "give it with --hook-out (and its input with --hook)"
        )
    if cfg.model and not model_given:
        data = replace(data, model=cfg.model)
    resolved = resolve(data)
    text = load_subject(resolved)
    sources = open_sources(resolved, text)
    reads, target = resolved.pairs[0]
    sae.cfg = replace(cfg, hook=reads, hook_out=target)  # the points this evaluation reads
    for side, where, width in (("d_in", reads, sae.d_in), ("d_out", target or reads, sae.d_out)):
        if sources.widths[where] != width:
            raise ValueError(
                f"SAE has {side}={width} but the activations at {where or data.data} have width "
                f"{sources.widths[where]}: use an SAE trained on this hook point"
            )
    ((metrics, _),) = evaluate_saes([sae], list(sources.eval_steps), text, resolved.cfg)
    return metrics
