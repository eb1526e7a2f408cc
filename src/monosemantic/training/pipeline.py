"""From a model and a hook point to trained, evaluated SAEs on disk: what ``monosemantic train``
runs. Harvest (or read a cache or matrix) → train a sweep of SAEs on shared batches → evaluate
(reconstruction, and spliced into the model for text) → save in the SAELens layout.
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from monosemantic.config import check
from monosemantic.data.cache import Manifest
from monosemantic.data.harvest import harvest_to_cache, hook_width
from monosemantic.data.sources import DataConfig, Text, load_text, open_sources
from monosemantic.evaluation.metrics import density_histogram, evaluate_reconstruction
from monosemantic.evaluation.spliced import spliced_metrics
from monosemantic.files import write_json
from monosemantic.models.hf import load_model
from monosemantic.sae.base import SAE, SAEConfig
from monosemantic.sae.io import load_sae, save_sae
from monosemantic.sae.registry import check_architecture, create
from monosemantic.training.trainer import TrainConfig, train

log = logging.getLogger(__name__)


@dataclass
class SweepConfig:
    """Which SAEs to train together on the same batches: every combination of the lists."""

    architecture: str = "topk"
    """standard (ReLU+L1), topk, batchtopk, jumprelu or gated."""
    expansion: list[int] = field(default_factory=lambda: [8])
    """Dictionary widths as multiples of d_in (d_sae = expansion × d_in)."""
    k: list[int] = field(default_factory=lambda: [32])
    """Active latents per input (topk, batchtopk)."""
    sparsity_coefficient: list[float] = field(default_factory=lambda: [0.0])
    """λ of the L1 (standard, gated) or L0 (jumprelu) penalty."""

    def __post_init__(self) -> None:
        check_architecture(self.architecture)
        check(all(e > 0 for e in self.expansion), "expansion", self.expansion, "positive integers")

    def configs(self, d_in: int, hook: str, model: str) -> list[SAEConfig]:
        uses_k = self.architecture in ("topk", "batchtopk")
        ks: list[int | None] = list(self.k) if uses_k else [None]
        coefficients = [0.0] if uses_k else self.sparsity_coefficient
        return [
            SAEConfig(
                architecture=self.architecture,
                d_in=d_in,
                d_sae=e * d_in,
                k=k,
                sparsity_coefficient=c,
                hook=hook,
                model=model,
            )
            for e, k, c in itertools.product(self.expansion, ks, coefficients)
        ]


def sae_name(cfg: SAEConfig) -> str:
    """A folder name that tells sweep members apart, e.g. ``topk-4608-k32``."""
    parts = [cfg.architecture, str(cfg.d_sae)]
    if cfg.k is not None:
        parts.append(f"k{cfg.k}")
    if cfg.sparsity_coefficient:
        parts.append(f"l{cfg.sparsity_coefficient:g}")
    return "-".join(parts)


def run(
    data: DataConfig,
    sweep: SweepConfig,
    training: TrainConfig,
    out: Path,
    *,
    resume: bool = False,
    text: Text | None = None,
) -> list[dict[str, Any]]:
    """Train and evaluate every SAE of the sweep; returns one summary per SAE (also in
    ``out/summary.json``). Resolved configs go to ``out/config.json``. ``text``: the loaded
    model and windows, when the caller has them already (else ``prepare(data)``)."""
    out.mkdir(parents=True, exist_ok=True)
    data = from_cache_manifest(data)
    write_json(
        out / "config.json",
        {"data": asdict(data), "sweep": asdict(sweep), "train": asdict(training)},
    )
    start = time.perf_counter()
    text = text if text is not None else prepare(data)
    timings = {"prepare_s": time.perf_counter() - start}
    source, eval_batches = open_sources(data, text, eval_batch_size=training.batch_size)
    d_in = hook_width(text.model, data.hook) if text is not None else source.d
    torch.manual_seed(training.seed)
    saes = [create(cfg) for cfg in sweep.configs(d_in, data.hook, data.model)]

    start = time.perf_counter()
    results = train(
        saes,
        lambda step: source.batches(training.batch_size, seed=training.seed, start_step=step),
        training,
        out / "train",
        resume=resume,
    )
    timings["train_s"] = time.perf_counter() - start
    timings["train_tokens_per_s"] = training.steps * training.batch_size / timings["train_s"]

    eval_rows = list(eval_batches)  # the held-out activations, shared by every SAE
    summaries = []
    for sae, result in zip(saes, results, strict=True):
        summaries.append(evaluate_and_save(sae, result, eval_rows, text, data, out))
    summary = {"timings": timings, "saes": summaries}
    write_json(out / "summary.json", summary)
    return summaries


def evaluate(
    sae: SAE,
    eval_rows: list[torch.Tensor],
    text: Text | None,
    data: DataConfig,
    folder: Path | None = None,
) -> tuple[dict[str, Any], torch.Tensor]:
    """(metrics, log10 feature density [d_sae]): reconstruction on held-out rows, plus CE, KL
    and loss recovered with the SAE spliced into the model for text data. With ``folder``, the
    density histogram is written there as PNG and JSON."""
    metrics = evaluate_reconstruction(sae, eval_rows)
    log10_density = metrics.pop("log10_density")
    metrics.pop("density", None)
    histogram = density_histogram(log10_density, None if folder is None else folder / "density.png")
    if folder is not None:
        write_json(folder / "density_histogram.json", histogram)
    if text is not None:
        n = min(len(text.eval_tokens), data.spliced_windows)
        exclude = None if text.eval_exclude is None else text.eval_exclude[:n]
        metrics.update(
            spliced_metrics(
                text.model,
                text.eval_tokens[:n],
                data.hook,
                sae,
                batch_size=data.windows_per_forward,
                exclude=exclude,
            )
        )
    return metrics, log10_density


def evaluate_and_save(
    sae: SAE,
    result: dict[str, float],
    eval_rows: list[torch.Tensor],
    text: Text | None,
    data: DataConfig,
    out: Path,
) -> dict[str, Any]:
    """Evaluate, then save the SAE (SAELens layout) with its density and an ``eval.json``."""
    name = sae_name(sae.cfg)
    folder = out / "saes" / name
    folder.mkdir(parents=True, exist_ok=True)
    metrics, log10_density = evaluate(sae, eval_rows, text, data, folder)
    save_sae(sae, folder, sparsity=log10_density)
    summary = {
        "name": name,
        "folder": str(folder),
        "config": sae.cfg.to_dict(),
        "train": result,
        "eval": metrics,
    }
    write_json(folder / "eval.json", summary)
    return summary


def from_cache_manifest(data: DataConfig) -> DataConfig:
    """For a cache written by ``monosemantic cache``, take the model, text, hook and split it was
    made from, so evaluation can run the model on the same held-out windows."""
    if data.kind != "cache":
        return data
    meta = Manifest.read(Path(data.data)).meta
    if "model" not in meta:
        return data
    keys = ("model", "hook", "max_tokens", "context_size", "eval_fraction", "include_special")
    return replace(data, **{k: meta[k] for k in keys if k in meta})


def prepare(data: DataConfig) -> Text | None:
    """Load the model and tokenise the text for text data, or for a cache that records its text
    (for held-out and spliced evaluation); None otherwise."""
    if data.kind == "text":
        text_data = data
    elif data.kind == "cache" and "text" in (meta := Manifest.read(Path(data.data)).meta):
        text_data = replace(data, data=meta["text"])
    else:
        return None
    model, tokenizer = load_model(text_data.model, dtype=text_data.dtype)
    if data.truncate:
        log.info("forward passes stop at %s: the layers after it are not run", data.hook)
    return load_text(text_data, model, tokenizer)


def evaluate_folder(folder: Path, data: DataConfig) -> dict[str, Any]:
    """Evaluate a saved SAE on ``data`` (its hook is taken from the SAE's config)."""
    sae = load_sae(folder)
    data = from_cache_manifest(data)
    if sae.cfg.hook and data.hook != sae.cfg.hook:
        data = replace(data, hook=sae.cfg.hook)
    text = prepare(data)
    source, eval_batches = open_sources(data, text)
    width = hook_width(text.model, data.hook) if text is not None else source.d
    check_width(sae, width, data.hook if text is not None else data.data)
    metrics, _ = evaluate(sae, list(eval_batches), text, data)
    return metrics


def check_width(sae: SAE, width: int, hook: str) -> None:
    if sae.d_in != width:
        raise ValueError(
            f"SAE has d_in={sae.d_in} but the activations at {hook} have width "
            f"{width}: use an SAE trained on this hook point"
        )


def cache(
    data: DataConfig,
    out: Path,
    *,
    shard_windows: int = 64,
    store_dtype: str = "float32",
    text: Text | None = None,
) -> Manifest:
    """Write the training windows' activations at ``data.hook`` to ``out``; resumable."""
    text = text if text is not None else prepare(data)
    if text is None:
        raise ValueError(
            f"cache needs text data to run the model on; {data.data!r} is a {data.kind} already"
        )
    meta = {
        "model": data.model,
        "text": data.data,
        "max_tokens": data.max_tokens,
        "eval_fraction": data.eval_fraction,
        "include_special": data.include_special,
    }
    return harvest_to_cache(
        text.model,
        text.train_tokens,
        data.hook,
        out,
        meta=meta,
        exclude=text.train_exclude,
        shard_windows=shard_windows,
        store_dtype=store_dtype,
        truncate=data.truncate,
    )
