"""Turn a ``--data`` argument into an activation source.

- a folder holding ``manifest.json``: an activation cache written by ``monosemantic cache``;
- a ``.npy``/``.safetensors``/``.csv``/``.parquet`` file: a matrix whose rows are activations
  (single-cell measurements, embeddings, ...), no model needed;
- anything else: text (``shakespeare``, a local text file or folder, or a Hugging Face dataset),
  tokenised into windows and run through the model at one or more hook points in one pass.

``resolve`` looks at the data once (a cache's manifest is read once per run) and the rest works
from what it found.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from monosemantic.config import check
from monosemantic.data.arrays import SUPPORTED, load_matrix
from monosemantic.data.cache import MANIFEST, ActivationCache, Manifest, sha256_file
from monosemantic.data.harvest import LiveActivations, harvest, harvest_to_cache, hook_widths
from monosemantic.data.store import ActivationSource, MatrixSource, Step
from monosemantic.data.text import load_texts
from monosemantic.data.tokens import excluded_positions, token_windows
from monosemantic.hooks import HookPoint, expand_layers, is_layer_pattern

Kind = Literal["text", "cache", "matrix"]
MATRIX_KEY = ""
"""The hook name of a matrix's rows: no model, no hook point."""


@dataclass
class DataConfig:
    """Where activations come from."""

    model: str = "smollm2-135m"
    """Subject model: an alias (smollm2-135m), a local folder, a .gguf file or a hub name."""
    hook: list[str] = field(default_factory=lambda: ["model.layers.3.mlp:output"])
    """Hook point(s) MODULE_PATH:input|output, read in one model pass (list them with
    `monosemantic info MODEL`)."""
    hook_out: list[str] = field(default_factory=list)
    """Train transcoders: one target per --hook, which the SAEs reading that hook reconstruct
    instead of their input (e.g. --hook model.layers.3.mlp:input --hook-out
    model.layers.3.mlp:output; "" keeps that hook's SAEs autoencoders); empty: autoencoders."""
    data: str = "shakespeare"
    """Text (shakespeare, a .txt/.jsonl/.parquet file or folder, a HF dataset name), an
    activation cache folder, or a matrix file (.npy/.safetensors/.csv/.parquet) of activations."""
    dtype: str = "float32"
    """Model dtype (float32, bfloat16, float16)."""
    harvest_autocast: str | None = None
    """bfloat16 (CPU or GPU) or float16 (GPU): the model's forward passes that harvest
    activations run under torch.autocast in this dtype, its weights staying in --dtype."""
    drop_non_finite: bool = False
    """Leave out matrix rows holding NaN or Inf (counted in a warning) instead of refusing them."""
    allow_pickled_weights: bool = False
    """Load a model folder whose weights are pickled (pytorch_model.bin), with torch's
    weights_only=True; off: only safetensors or GGUF weights load."""
    context_size: int = 128
    """Tokens per window."""
    max_tokens: int = 250_000
    """Tokens of text to use (training and evaluation together)."""
    eval_fraction: float = 0.05
    """Fraction of windows held out for evaluation."""
    spliced_windows: int = 32
    """Held-out windows run with the SAE spliced in (CE loss, KL, loss recovered)."""
    include_special: bool = False
    """Train on BOS/EOS/pad positions too (excluded by default: their activations are outliers)."""
    truncate: bool = True
    """Stop each forward pass at the hook point instead of running the whole model."""
    windows_per_forward: int = 8
    """Token windows per forward pass of the model."""
    buffer_rows: int = 65536
    """Rows in the shuffle buffer that mixes activations of many contexts."""
    prefetch: int = 0
    """Training batches a background thread harvests ahead of the trainer, so the model's
    forward pass can overlap the SAE step (same batches, same order); 0: the two in turn, the
    default (on a 2-core CPU the thread gained nothing or halved throughput: benchmarks.md)."""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.hook, str):
            self.hook = [self.hook]
        if isinstance(self.hook_out, str):
            self.hook_out = [self.hook_out]
        check(len(self.hook) > 0, "hook", self.hook, "at least one hook point")
        check(
            len(self.hook_out) in (0, len(self.hook)),
            "hook_out",
            self.hook_out,
            f"one target per --hook ({len(self.hook)}), or none for autoencoders",
        )
        targets = self.hook_out or [""] * len(self.hook)
        pairs = dict.fromkeys(
            (str(HookPoint.parse(h)), str(HookPoint.parse(t)) if t else "")
            for h, t in zip(self.hook, targets, strict=True)
        )
        for reads, target in pairs:
            check(reads != target, "hook_out", target, "a point other than the --hook it maps from")
        self.hook = [reads for reads, _ in pairs]
        self.hook_out = [target for _, target in pairs] if self.hook_out else []
        check(self.context_size > 1, "context_size", self.context_size, "an integer > 1")
        check(
            self.max_tokens >= self.context_size,
            "max_tokens",
            self.max_tokens,
            f">= context_size={self.context_size}",
        )
        check(0 < self.eval_fraction < 1, "eval_fraction", self.eval_fraction, "in (0, 1)")
        check(
            self.harvest_autocast in (None, "bfloat16", "float16"),
            "harvest_autocast",
            self.harvest_autocast,
            "bfloat16, float16 or None (no autocast)",
        )
        check(self.prefetch >= 0, "prefetch", self.prefetch, "an integer >= 0 (0: no prefetch)")

    @property
    def points(self) -> list[str]:
        """Every hook point one model pass reads: the inputs, then the transcoders' targets."""
        return list(dict.fromkeys(self.hook + [target for target in self.hook_out if target]))

    @property
    def pairs(self) -> list[tuple[str, str]]:
        """(hook an SAE reads, the point it reconstructs or "" for itself), one per --hook."""
        return list(zip(self.hook, self.hook_out or [""] * len(self.hook), strict=True))


@dataclass(frozen=True)
class ResolvedData:
    """What ``DataConfig.data`` turned out to be, found by one look at it."""

    cfg: DataConfig
    """The config, with a cache's model, hook and text split taken from its manifest."""
    kind: Kind
    manifest: Manifest | None = None
    """A cache's manifest, read once."""

    def identity(self) -> dict[str, str]:
        """What the data are beyond their settings, for a run folder's record: a matrix file's
        sha256, a cache's digest of its shard checksums; text is named by its settings."""
        if self.kind == "matrix":
            return {"sha256": sha256_file(Path(self.cfg.data).expanduser())}
        if self.manifest is not None:
            shards = "".join(shard.sha256 for shard in self.manifest.shards)
            return {"shards_sha256": hashlib.sha256(shards.encode()).hexdigest()}
        return {}

    @property
    def text(self) -> str | None:
        """The text the model runs on for held-out evaluation: the text itself, or the text a
        cache was made from; None for a matrix or a cache that does not record its text."""
        if self.kind == "text":
            return self.cfg.data
        if self.manifest is not None:
            return self.manifest.meta.get("text")
        return None

    @property
    def hooks(self) -> list[str]:
        """The keys of the activations a step holds (``MATRIX_KEY`` for a matrix)."""
        return [MATRIX_KEY] if self.kind == "matrix" else self.cfg.points

    @property
    def pairs(self) -> list[tuple[str, str]]:
        """(key an SAE reads, key it reconstructs or "" for the same), one per SAE input."""
        return [(MATRIX_KEY, "")] if self.kind == "matrix" else self.cfg.pairs


CACHE_FIELDS = ("model", "max_tokens", "context_size", "eval_fraction", "include_special")
"""DataConfig fields a cache records, so evaluation can rerun the model on the same split."""


def resolve(cfg: DataConfig) -> ResolvedData:
    """Find out what ``cfg.data`` is; a cache's manifest is read here, once."""
    path = Path(cfg.data)
    if path.is_dir() and (path / MANIFEST).exists():
        manifest = Manifest.read(path)
        meta = manifest.meta
        taken = {name: meta[name] for name in CACHE_FIELDS if name in meta}
        if "hook" in meta:
            taken["hook"] = [meta["hook"]]
        return ResolvedData(replace(cfg, **taken), "cache", manifest)
    if path.suffix in SUPPORTED:
        return ResolvedData(cfg, "matrix")
    return ResolvedData(cfg, "text")


def cache_meta(cfg: DataConfig) -> dict[str, Any]:
    """What a cache's manifest records about the text it was made from (``resolve`` reads it)."""
    return {"text": cfg.data, **{name: getattr(cfg, name) for name in CACHE_FIELDS}}


@dataclass
class Text:
    """A model with tokenised text, split into training and evaluation windows."""

    model: nn.Module
    tokenizer: Any
    train_tokens: torch.Tensor  # [n_train, ctx]
    eval_tokens: torch.Tensor  # [n_eval, ctx]
    train_exclude: torch.Tensor | None  # [n_train, ctx]
    eval_exclude: torch.Tensor | None  # [n_eval, ctx]


def load_text(cfg: DataConfig, model: nn.Module, tokenizer: Any, text: str | None = None) -> Text:
    """Tokenise ``text`` (default ``cfg.data``) into windows and split off the evaluation windows
    (the last ones)."""
    source = cfg.data if text is None else text
    n_windows = cfg.max_tokens // cfg.context_size
    tokens = token_windows(load_texts(source), tokenizer, cfg.context_size, max_windows=n_windows)
    n_eval = max(1, int(len(tokens) * cfg.eval_fraction))
    if len(tokens) <= n_eval:
        raise ValueError(
            f"only {len(tokens)} windows of {cfg.context_size} tokens in {source}: "
            "give more text or a smaller context_size"
        )
    exclude = None if cfg.include_special else excluded_positions(tokens, tokenizer)
    split = len(tokens) - n_eval
    return Text(
        model,
        tokenizer,
        tokens[:split],
        tokens[split:],
        None if exclude is None else exclude[:split],
        None if exclude is None else exclude[split:],
    )


@dataclass
class Sources:
    """What a run reads: the training stream, the held-out steps and each hook's width."""

    train: ActivationSource | LiveActivations
    eval_steps: Iterable[Step]
    widths: dict[str, int]
    """Width d of the activations at each hook point (``MATRIX_KEY`` for a matrix)."""


def open_sources(
    data: ResolvedData,
    text: Text | None,
    *,
    eval_batch_size: int = 4096,
    eval_batches: int = 8,
) -> Sources:
    """The training source, evaluation steps and widths for ``data``.

    Text, or a cache that records its text: the held-out windows run through the model. Matrix:
    the last ``eval_fraction`` of the rows are held out. A cache without text: evaluation reads
    ``eval_batches`` batches of the cache itself (in-sample).
    """
    cfg = data.cfg
    if cfg.hook_out and data.kind != "text":
        raise ValueError(
            f"transcoders (--hook-out) read two hook points of one model pass; {cfg.data} is "
            f"a {data.kind} of one: train them from text (e.g. --data shakespeare)"
        )
    if data.kind == "cache":
        cache = ActivationCache(Path(cfg.data), manifest=data.manifest)
        widths = dict.fromkeys(data.hooks, cache.d)
        if text is not None:
            return Sources(cache, held_out(cfg, text), widths)
        in_sample = itertools.islice(cache.batches(eval_batch_size, seed=1), eval_batches)
        return Sources(cache, in_sample, widths)
    if data.kind == "matrix":
        matrix = load_matrix(cfg.data, drop_non_finite=cfg.drop_non_finite)
        n_eval = max(1, int(len(matrix) * cfg.eval_fraction))
        if n_eval >= len(matrix):
            raise ValueError(
                f"{cfg.data} has {len(matrix)} rows: too few to hold out {n_eval} for evaluation "
                f"(--eval-fraction {cfg.eval_fraction}) and train on the rest; give more rows"
            )
        held = matrix[-n_eval:].split(eval_batch_size)
        return Sources(MatrixSource(matrix[:-n_eval]), held, {MATRIX_KEY: matrix.shape[1]})
    if text is None:
        raise ValueError("text data needs a model: load one with models.subject.load_subject")
    points = concrete_points(cfg, text.model)
    live = LiveActivations(
        text.model,
        text.train_tokens,
        points,
        exclude=text.train_exclude,
        windows_per_forward=cfg.windows_per_forward,
        buffer_rows=cfg.buffer_rows,
        truncate=cfg.truncate,
        autocast=cfg.harvest_autocast,
        prefetch=cfg.prefetch,
    )
    widths = hook_widths(text.model, points)
    for pattern in filter(is_layer_pattern, cfg.points):  # a multi-layer SAE reads them all
        widths[pattern] = widths[expand_layers(text.model, pattern)[0]]
    return Sources(live, held_out(cfg, text), widths)


def concrete_points(cfg: DataConfig, model: nn.Module) -> list[str]:
    """``cfg.points`` with each layer pattern (``model.layers.*:output``) replaced by every
    layer's point, in layer order."""
    expanded = (expand_layers(model, p) if is_layer_pattern(p) else [p] for p in cfg.points)
    return list(dict.fromkeys(point for points in expanded for point in points))


def held_out(cfg: DataConfig, text: Text) -> Iterator[dict[str, torch.Tensor]]:
    """Activation rows ``{hook: [rows, d]}`` of the held-out windows (every layer of a layer
    pattern)."""
    return harvest(
        text.model,
        text.eval_tokens,
        concrete_points(cfg, text.model),
        batch_size=cfg.windows_per_forward,
        exclude=text.eval_exclude,
        truncate=cfg.truncate,
        autocast=cfg.harvest_autocast,
    )


def cache_activations(
    cfg: DataConfig,
    text: Text,
    out: Path,
    *,
    shard_windows: int = 64,
    store_dtype: str = "float32",
) -> Manifest:
    """Write the training windows' activations at the (one) hook point to ``out``; resumable."""
    if len(cfg.points) != 1:
        raise ValueError(
            f"a cache holds one hook point; got {len(cfg.hook)} ({', '.join(cfg.hook)}): "
            "write one cache per hook point"
        )
    return harvest_to_cache(
        text.model,
        text.train_tokens,
        cfg.hook[0],
        out,
        meta=cache_meta(cfg),
        exclude=text.train_exclude,
        shard_windows=shard_windows,
        store_dtype=store_dtype,
        truncate=cfg.truncate,
        autocast=cfg.harvest_autocast,
    )
