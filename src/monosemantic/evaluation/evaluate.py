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
from monosemantic.data.store import rows_at as step_rows
from monosemantic.evaluation.metrics import density_histogram, evaluate_reconstruction
from monosemantic.evaluation.multi_layer import layer_activity, plot_layer_activity
from monosemantic.evaluation.spliced import Where, spliced_metrics_many
from monosemantic.files import write_json
from monosemantic.hooks import is_layer_pattern
from monosemantic.models.subject import load_subject
from monosemantic.sae.base import SAE, UNKNOWN_HOOK
from monosemantic.sae.io import load_sae


def rows_at(steps: Iterable[Step], hook: str) -> list[torch.Tensor]:
    """The rows [n, d] a hook point contributes to each held-out step (a plain tensor is every
    hook's), checked finite: NaN metrics would say nothing."""
    rows = [step_rows(step, hook) for step in steps]
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
    the model for text data (a transcoder's output in place of its target's). A multi-layer SAE
    (hook ``model.layers.*:output``) is also measured at each layer (``metrics["layers"]``, spliced
    at one layer at a time; the overall kl and loss_recovered are their means) and for the
    spread of its latents over layers (``multi_layer.py``). With ``folders`` (one per SAE), each
    density histogram (and a multi-layer SAE's layer figure) is written there."""
    results = []
    splices: list[tuple[int, Where]] = []
    for i, sae in enumerate(saes):
        cfg = sae.cfg
        rows = rows_at(eval_steps, cfg.hook)
        if cfg.transcoder:
            targets = rows_at(eval_steps, cfg.hook_out)
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
        if is_layer_pattern(cfg.hook):
            metrics.update(_per_layer(sae, eval_steps, folder))
            splices += [(i, point) for point in metrics["layers"]]
        else:
            splices.append((i, (cfg.hook, cfg.target_hook)))
        results.append((metrics, log10_density))
    if text is not None:
        n = min(len(text.eval_tokens), data.spliced_windows)
        spliced = spliced_metrics_many(
            text.model,
            text.eval_tokens[:n],
            [(where, saes[i]) for i, where in splices],
            batch_size=data.windows_per_forward,
            exclude=None if text.eval_exclude is None else text.eval_exclude[:n],
        )
        for (i, where), extra in zip(splices, spliced, strict=True):
            metrics = results[i][0]
            if isinstance(where, str):  # one layer of a multi-layer SAE
                metrics["layers"][where].update(extra)
            else:
                metrics.update(extra)
        for metrics, _ in results:
            if "layers" in metrics:
                layers = metrics["layers"].values()
                for name in ("kl", "loss_recovered", "ce_clean"):
                    metrics[name] = sum(layer[name] for layer in layers) / len(layers)
    return results


def _per_layer(sae: SAE, steps: list[Step], folder: Path | None) -> dict[str, Any]:
    """A multi-layer SAE's reconstruction at each layer and the spread of its latents."""
    pattern = sae.cfg.hook
    activity = layer_activity(sae, steps, pattern)
    layers = {}
    for point in activity["layers"]:
        measured = evaluate_reconstruction(sae, rows_at(steps, point))
        layers[point] = {k: v for k, v in measured.items() if isinstance(v, (int, float))}
    if folder is not None:
        plot_layer_activity(activity["mass"], folder / "layers.png", title=pattern)
    return {
        "layers": layers,
        "multi_layer_latents": activity["multi_layer_latents"],
        "per_token_multi_layer": activity["per_token_multi_layer"],
    }


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
