"""A sweep: several SAEs trained together on the same activations, evaluated and saved.

``SweepConfig`` says which SAEs (every combination of an architecture's sweep axes and the
expansions, at every hook point of the data); ``train_sweep`` is what ``monosemantic train``
runs: open the data → train the sweep on shared steps → evaluate (reconstruction, and spliced
into the model for text) → save each SAE in the SAELens layout with its metrics.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from monosemantic.config import ConfigError, check
from monosemantic.data.sources import DataConfig, Text, open_sources, resolve
from monosemantic.evaluation.evaluate import evaluate_saes
from monosemantic.files import write_json
from monosemantic.models.subject import load_subject
from monosemantic.sae.base import SAE, SAEConfig
from monosemantic.sae.io import save_sae
from monosemantic.sae.registry import ARCHITECTURES, architecture, architecture_fields, create
from monosemantic.training.trainer import TrainConfig, train


@dataclass
class SweepConfig:
    """Which SAEs to train together on the same batches: every combination of the expansions
    and the architecture's sweep axes."""

    architecture: str = "topk"
    """A registered SAE architecture (`monosemantic train --help` lists them)."""
    expansion: list[int] = field(default_factory=lambda: [8])
    """Dictionary widths as multiples of d_in (d_sae = expansion × d_in)."""
    settings: dict[str, Any] = field(default_factory=dict)
    """The architecture's own config fields; on a sweep axis a list of values is swept."""

    def __post_init__(self) -> None:
        cls = architecture(self.architecture)
        check(
            len(self.expansion) > 0 and all(e > 0 for e in self.expansion),
            "expansion",
            self.expansion,
            "one or more positive integers",
        )
        own = architecture_fields(cls)
        for name in self.settings:
            if name not in own:
                users = sorted(
                    a for a, c in ARCHITECTURES.items() if name in architecture_fields(c)
                )
                used_by = f"it belongs to {', '.join(users)}" if users else "no architecture has it"
                raise ConfigError(
                    f"{name} does not apply to architecture {self.architecture} ({used_by}); "
                    f"{self.architecture}'s own fields: {', '.join(own) or 'none'}"
                )

    def configs(self, d_in: int, hook: str, model: str) -> list[SAEConfig]:
        """One validated config per member of the sweep, for activations of width ``d_in``."""
        cls = architecture(self.architecture)
        axes = {
            name: _as_list(self.settings.get(name, own.default))
            for name, own in architecture_fields(cls).items()
            if name in cls.sweep_axes
        }
        fixed = {k: v for k, v in self.settings.items() if k not in axes}
        return [
            cls.config_class(
                d_in=d_in,
                d_sae=expansion * d_in,
                hook=hook,
                model=model,
                **fixed,
                **dict(zip(axes, values, strict=True)),
            )
            for expansion, *values in itertools.product(self.expansion, *axes.values())
        ]


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def sae_name(sae: SAE) -> str:
    """A folder name that tells sweep members apart: architecture, width and sweep axes, e.g.
    ``topk-4608-k32``."""
    parts = [sae.architecture, str(sae.d_sae)]
    parts += [f"{label}{getattr(sae.cfg, name):g}" for name, label in sae.sweep_axes.items()]
    return "-".join(parts)


def hook_label(hook: str) -> str:
    """A hook point as a folder-name prefix, e.g. ``model.layers.3.mlp:output`` →
    ``layers.3.mlp.out``."""
    path, _, side = hook.rpartition(":")
    return f"{path.removeprefix('model.')}.{'in' if side == 'input' else 'out'}"


def train_sweep(
    data: DataConfig,
    sweep: SweepConfig,
    training: TrainConfig,
    out: Path,
    *,
    resume: bool = False,
    text: Text | None = None,
) -> list[dict[str, Any]]:
    """Train and evaluate every SAE of the sweep at every hook point of ``data`` in one run;
    returns one summary per SAE (also in ``out/summary.json``). Resolved configs go to
    ``out/config.json``, each SAE to ``out/saes/NAME``. ``text``: the loaded model and windows,
    when the caller has them already."""
    resolved = resolve(data)
    out.mkdir(parents=True, exist_ok=True)
    write_json(
        out / "config.json",
        {"data": asdict(resolved.cfg), "sweep": asdict(sweep), "train": asdict(training)},
    )
    start = time.perf_counter()
    text = text if text is not None else load_subject(resolved)
    timings = {"prepare_s": time.perf_counter() - start}
    sources = open_sources(resolved, text, eval_batch_size=training.batch_size)
    model = "" if resolved.kind == "matrix" else resolved.cfg.model
    torch.manual_seed(training.seed)
    saes = [
        create(cfg)
        for hook, width in sources.widths.items()
        for cfg in sweep.configs(width, hook, model)
    ]

    start = time.perf_counter()
    results = train(
        saes,
        lambda step: sources.train.batches(
            training.batch_size, seed=training.seed, start_step=step
        ),
        training,
        out / "train",
        resume=resume,
    )
    timings["train_s"] = time.perf_counter() - start
    timings["train_tokens_per_s"] = training.steps * training.batch_size / timings["train_s"]

    names = [
        f"{hook_label(sae.cfg.hook)}-{sae_name(sae)}" if len(sources.widths) > 1 else sae_name(sae)
        for sae in saes
    ]
    folders = [out / "saes" / name for name in names]
    evaluations = evaluate_saes(saes, list(sources.eval_steps), text, resolved.cfg, folders)
    summaries = []
    for sae, name, folder, result, (metrics, log10_density) in zip(
        saes, names, folders, results, evaluations, strict=True
    ):
        save_sae(sae, folder, sparsity=log10_density)
        summary = {
            "name": name,
            "folder": str(folder),
            "config": sae.cfg.to_dict(),
            "train": result,
            "eval": metrics,
        }
        write_json(folder / "eval.json", summary)
        summaries.append(summary)
    write_json(out / "summary.json", {"timings": timings, "saes": summaries})
    return summaries
