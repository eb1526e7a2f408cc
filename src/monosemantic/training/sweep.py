"""A sweep: several SAEs trained together on the same activations, evaluated and saved.

``SweepConfig`` says which SAEs (every combination of an architecture's sweep axes and the
expansions, at every hook point of the data); ``train_sweep`` is what ``monosemantic train``
runs: open the data → train the sweep on shared steps → evaluate (reconstruction, and spliced
into the model for text) → save each SAE in the SAELens layout with its metrics.
"""

from __future__ import annotations

import itertools
import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from monosemantic.config import ConfigError, check
from monosemantic.data.harvest import LiveActivations
from monosemantic.data.sources import DataConfig, Text, open_sources, resolve
from monosemantic.data.store import WHOLE, ActivationSource
from monosemantic.evaluation.evaluate import evaluate_saes
from monosemantic.files import write_json
from monosemantic.hooks import LAYERS
from monosemantic.models.subject import load_subject
from monosemantic.sae.base import SAE, SAEConfig
from monosemantic.sae.io import save_sae
from monosemantic.sae.registry import ARCHITECTURES, architecture, architecture_fields, create
from monosemantic.training.distributed import SINGLE, World
from monosemantic.training.end_to_end import EndToEnd, WindowSteps
from monosemantic.training.objective import Objective, reconstruction
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
    skip_transcoder: bool = False
    """Transcoders (data with hook_out) get a linear skip from input to output (Paulo et al.
    2025)."""
    standardize: bool = False
    """Standardise each input vector before encoding and undo it after decoding (a multi-layer
    SAE over model.layers.*:output, Lawson et al. 2024)."""
    d_sae: list[int] = field(default_factory=list)
    """Dictionary widths in latents (e.g. 4096 on a 576-wide hook); when given, instead of
    --expansion."""

    def __post_init__(self) -> None:
        cls = architecture(self.architecture)
        check(
            len(self.expansion) > 0 and all(e > 0 for e in self.expansion),
            "expansion",
            self.expansion,
            "one or more positive integers",
        )
        check(all(d > 0 for d in self.d_sae), "d_sae", self.d_sae, "positive integers")
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

    def configs(
        self, d_in: int, hook: str, model: str, *, d_out: int = 0, hook_out: str = ""
    ) -> list[SAEConfig]:
        """One validated config per member of the sweep, for activations of width ``d_in`` (and
        for transcoders, targets of width ``d_out`` at ``hook_out``)."""
        cls = architecture(self.architecture)
        axes = {
            name: _as_list(self.settings.get(name, own.default))
            for name, own in architecture_fields(cls).items()
            if name in cls.sweep_axes
        }
        fixed = {k: v for k, v in self.settings.items() if k not in axes}
        widths = self.d_sae or [expansion * d_in for expansion in self.expansion]
        return [
            cls.config_class(
                d_in=d_in,
                d_sae=width,
                hook=hook,
                d_out=d_out,
                hook_out=hook_out,
                skip=self.skip_transcoder,
                standardize=self.standardize,
                model=model,
                **fixed,
                **dict(zip(axes, values, strict=True)),
            )
            for width, *values in itertools.product(widths, *axes.values())
        ]


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def sae_name(sae: SAE) -> str:
    """A folder name that tells sweep members apart: architecture, width and sweep axes, e.g.
    ``topk-4608-k32``, ``topk-transcoder-4608-k32``."""
    kind = ["skip-transcoder" if sae.cfg.skip else "transcoder"] if sae.cfg.transcoder else []
    parts = [sae.architecture, *kind, str(sae.d_sae)]
    parts += [f"{label}{getattr(sae.cfg, name):g}" for name, label in sae.sweep_axes.items()]
    return "-".join(parts)


def hook_label(hook: str) -> str:
    """A hook point as a folder-name prefix, e.g. ``model.layers.3.mlp:output`` →
    ``layers.3.mlp.out``."""
    path, _, side = hook.rpartition(":")
    path = path.removeprefix("model.").replace(LAYERS, "all")
    return f"{path}.{'in' if side == 'input' else 'out'}"


RUN_FILES = ("config.json", "summary.json", "train", "saes")
"""What a run folder holds; a folder with any of them holds a run."""


def check_run_folder(out: Path, settings: dict[str, Any], *, resume: bool, overwrite: bool) -> None:
    """Refuse to mix runs: see ``train_sweep``. ``settings`` are the resolved configs as
    config.json records them."""
    if resume and overwrite:
        raise ConfigError("give --resume or --overwrite, not both")
    held = [name for name in RUN_FILES if (out / name).exists()]
    if resume:
        if not (out / "config.json").exists():
            raise FileNotFoundError(
                f"{out} holds no run to resume (no config.json); run without --resume to start"
            )
        saved = json.loads((out / "config.json").read_text())
        current = json.loads(json.dumps(settings, default=str))
        defaults = json.loads(json.dumps(SETTING_DEFAULTS, default=str))

        def then(part: str, key: str) -> Any:
            # a setting added since the run was made: it ran with the setting's default
            return saved.get(part, {}).get(key, defaults.get(part, {}).get(key))

        differ = [
            f"{part}.{key}: {then(part, key)!r} then, {value!r} now"
            for part, fields in current.items()
            for key, value in fields.items()
            if then(part, key) != value and key not in RESUMABLE_CHANGES
        ]
        if differ:
            raise ConfigError(
                f"--resume: {out} holds a run with other settings ({'; '.join(differ)}); "
                "resume with the same settings, or start a new run in another --out"
            )
    elif held and not overwrite:
        raise ConfigError(
            f"{out} already holds a run ({', '.join(held)}): give another --out, --resume to "
            "continue it, or --overwrite to replace it once the new run is complete"
        )


RESUMABLE_CHANGES = ("progress", "log_every", "prefetch")
"""Settings a resumed run may change: they do not affect the result."""

SETTING_DEFAULTS = {
    "data": asdict(DataConfig()),
    "sweep": asdict(SweepConfig()),
    "train": asdict(TrainConfig()),
    "launch": {"world_size": 1},
}
"""What a run folder's config.json parts held by default: a run written before a setting
existed resumes as if it had recorded that setting's default."""


def replace_folder(out: Path, new: Path) -> None:
    """Put the complete run ``new`` in place of ``out``: two renames, the old one removed last."""
    old = out.with_name(f".{out.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    out.rename(old)
    new.rename(out)
    shutil.rmtree(old)


def relocate(out: Path, staging: Path) -> list[dict[str, Any]]:
    """Point the summaries of a run built in ``staging`` and moved to ``out`` at their new
    folders (summary.json and each eval.json); returns them."""
    run = json.loads((out / "summary.json").read_text())
    for summary in run["saes"]:
        summary["folder"] = str(out / Path(summary["folder"]).relative_to(staging))
        write_json(Path(summary["folder"]) / "eval.json", summary)
    write_json(out / "summary.json", run)
    return list(run["saes"])


def train_sweep(
    data: DataConfig,
    sweep: SweepConfig,
    training: TrainConfig,
    out: Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    text: Text | None = None,
    world: World = SINGLE,
) -> list[dict[str, Any]]:
    """Train and evaluate every SAE of the sweep at every hook point of ``data`` in one run;
    returns one summary per SAE (also in ``out/summary.json``). Resolved configs go to
    ``out/config.json``, each SAE to ``out/saes/NAME``. ``text``: the loaded model and windows,
    when the caller has them already.

    A folder holding another run is refused unless ``resume`` (which checks that its
    config.json records the same settings, naming those that differ) or ``overwrite`` (the new
    run is built beside it and replaces it only once complete). Nothing is written before the
    settings have been validated.

    Under torchrun (``world``), ``training.distribute`` says how the processes share the work:
    ``data``, every SAE on each process's part of the batches, the main process evaluating and
    writing; ``saes``, SAE i on process i mod world size, each process evaluating and writing its
    own SAEs (checkpoints in ``train/rank-R``). Every process returns every summary."""
    resolved = resolve(data)
    if sweep.skip_transcoder and not resolved.cfg.hook_out:
        raise ConfigError(
            "--skip-transcoder makes transcoders: give --hook-out, the point each --hook maps to"
        )
    settings = {
        "data": asdict(resolved.cfg),
        "data_identity": resolved.identity(),
        "sweep": asdict(sweep),
        "train": asdict(training),
        "launch": {"world_size": world.size},
    }
    check_run_folder(out, settings, resume=resume, overwrite=overwrite)
    world.barrier()  # every process has looked at the folder before the main one writes to it
    if overwrite and out.exists():
        staging = out.with_name(f".{out.name}.new")
        if world.main:
            shutil.rmtree(staging, ignore_errors=True)
        world.barrier()
        try:
            summaries = train_sweep(data, sweep, training, staging, text=text, world=world)
        except BaseException:
            if world.main:
                shutil.rmtree(staging, ignore_errors=True)  # the old run stays as it was
            raise
        world.barrier()  # every process has written its SAEs to staging
        if not world.main:
            return summaries
        replace_folder(out, staging)
        return relocate(out, staging)
    start = time.perf_counter()
    text = text if text is not None else load_subject(resolved)
    timings = {"prepare_s": time.perf_counter() - start}
    sources = open_sources(resolved, text, eval_batch_size=training.batch_size)
    model = "" if resolved.kind == "matrix" else resolved.cfg.model
    torch.manual_seed(training.seed)
    widths = sources.widths
    saes = [
        create(cfg)
        for hook, target in resolved.pairs
        for cfg in sweep.configs(
            widths[hook], hook, model, d_out=widths[target] if target else 0, hook_out=target
        )
    ]
    by_sae = training.distribute == "saes" and world.size > 1
    if by_sae and len(saes) < world.size:
        raise ConfigError(
            f"--distribute saes puts whole SAEs on processes, but the sweep has {len(saes)} SAEs "
            f"for {world.size} processes: start at most {len(saes)} (torchrun --nproc_per_node), "
            "or use --distribute data"
        )
    mine = list(range(world.rank, len(saes), world.size)) if by_sae else list(range(len(saes)))
    if world.main:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "config.json", settings)

    train_source: ActivationSource | LiveActivations | WindowSteps = sources.train
    objective: Objective = reconstruction
    if training.objective != "local":
        if text is None or resolved.kind != "text":
            raise ValueError(
                f"--objective {training.objective} runs the model on token windows: give text "
                f"as --data (e.g. shakespeare), not a {resolved.kind}"
            )
        train_source = WindowSteps(
            text.model,
            text.train_tokens,
            resolved.cfg.points,
            training.downstream_hooks,
            text.train_exclude,
        )
        objective = EndToEnd(
            text.model,
            training.kl_coefficient,
            training.downstream_hooks,
            training.downstream_coefficient,
        )
    part = WHOLE if by_sae else world.part
    start = time.perf_counter()
    results = train(
        [saes[i] for i in mine],
        lambda step: train_source.batches(
            training.batch_size, seed=training.seed, start_step=step, part=part
        ),
        training,
        out / "train" / f"rank-{world.rank}" if by_sae else out / "train",
        resume=resume,
        objective=objective,
        world=SINGLE if by_sae else world,
    )
    timings["train_s"] = time.perf_counter() - start
    timings["train_tokens_per_s"] = training.steps * training.batch_size / timings["train_s"]

    names = [
        f"{hook_label(sae.cfg.hook)}-{sae_name(sae)}" if len(resolved.pairs) > 1 else sae_name(sae)
        for sae in saes
    ]
    result_of = dict(zip(mine, results, strict=True))
    # data-parallel: every process holds every SAE, the main one evaluates and writes them
    written = mine if by_sae or world.main else []
    folders = [out / "saes" / names[i] for i in written]
    ours = [saes[i] for i in written]
    evaluations = (
        evaluate_saes(ours, list(sources.eval_steps), text, resolved.cfg, folders) if ours else []
    )
    summaries = []
    for i, folder, (metrics, log10_density) in zip(written, folders, evaluations, strict=True):
        sae, name, result = saes[i], names[i], result_of[i]
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
    summaries = [s for theirs in world.gather_objects(summaries) for s in theirs]
    summaries.sort(key=lambda s: names.index(s["name"]))  # the sweep's order, from rank order
    if world.main:
        write_json(out / "summary.json", {"timings": timings, "saes": summaries})
    return summaries
