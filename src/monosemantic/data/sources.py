"""Turn a ``--data`` argument into an activation source.

- a folder holding ``manifest.json``: an activation cache written by ``monosemantic cache``;
- a ``.npy``/``.safetensors``/``.csv``/``.parquet`` file: a matrix whose rows are activations
  (single-cell measurements, embeddings, ...), no model needed;
- anything else: text (``shakespeare``, a local text file or folder, or a Hugging Face dataset),
  tokenised into windows and run through the model at the hook point.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from monosemantic.config import check
from monosemantic.data.arrays import load_matrix
from monosemantic.data.cache import ActivationCache
from monosemantic.data.harvest import LiveActivations, harvest
from monosemantic.data.store import ActivationSource, MatrixSource
from monosemantic.data.text import load_texts
from monosemantic.data.tokens import excluded_positions, token_windows

MATRIX_SUFFIXES = (".npy", ".safetensors", ".csv", ".parquet")


@dataclass
class DataConfig:
    """Where activations come from."""

    model: str = "smollm2-135m"
    """Subject model: an alias (smollm2-135m), a local folder, a .gguf file or a hub name."""
    hook: str = "model.layers.3.mlp:output"
    """Hook point MODULE_PATH:input|output (list them with `monosemantic info MODEL`)."""
    data: str = "shakespeare"
    """Text (shakespeare, a .txt/.jsonl/.parquet file or folder, a HF dataset name), an
    activation cache folder, or a matrix file (.npy/.safetensors/.csv/.parquet) of activations."""
    dtype: str = "float32"
    """Model dtype (float32, bfloat16, float16)."""
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
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check(self.context_size > 1, "context_size", self.context_size, "an integer > 1")
        check(
            self.max_tokens >= self.context_size,
            "max_tokens",
            self.max_tokens,
            f">= context_size={self.context_size}",
        )
        check(0 < self.eval_fraction < 1, "eval_fraction", self.eval_fraction, "in (0, 1)")

    @property
    def kind(self) -> str:
        path = Path(self.data)
        if path.is_dir() and (path / "manifest.json").exists():
            return "cache"
        if path.suffix in MATRIX_SUFFIXES:
            return "matrix"
        return "text"


@dataclass
class Text:
    """A model with tokenised text, split into training and evaluation windows."""

    model: nn.Module
    tokenizer: Any
    train_tokens: torch.Tensor  # [n_train, ctx]
    eval_tokens: torch.Tensor  # [n_eval, ctx]
    train_exclude: torch.Tensor | None  # [n_train, ctx]
    eval_exclude: torch.Tensor | None  # [n_eval, ctx]


def load_text(cfg: DataConfig, model: nn.Module, tokenizer: Any) -> Text:
    """Tokenise ``cfg.data`` into windows and split off the evaluation windows (the last ones)."""
    n_windows = cfg.max_tokens // cfg.context_size
    tokens = token_windows(load_texts(cfg.data), tokenizer, cfg.context_size, max_windows=n_windows)
    n_eval = max(1, int(len(tokens) * cfg.eval_fraction))
    if len(tokens) <= n_eval:
        raise ValueError(
            f"only {len(tokens)} windows of {cfg.context_size} tokens in {cfg.data}: "
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


def open_sources(
    cfg: DataConfig, text: Text | None, *, eval_batch_size: int = 4096, eval_batches: int = 8
) -> tuple[ActivationSource, Iterable[torch.Tensor]]:
    """(training source, evaluation batches of [rows, d]) for ``cfg``.

    Text, or a cache that records its text: the held-out windows run through the model. Matrix:
    the last ``eval_fraction`` of the rows are held out. A cache without text: evaluation reads
    ``eval_batches`` batches of the cache itself (in-sample).
    """
    if cfg.kind == "cache":
        cache = ActivationCache(Path(cfg.data))
        if text is not None:
            return cache, held_out(cfg, text)
        return cache, itertools.islice(cache.batches(eval_batch_size, seed=1), eval_batches)
    if cfg.kind == "matrix":
        matrix = load_matrix(cfg.data)
        n_eval = max(1, int(len(matrix) * cfg.eval_fraction))
        return MatrixSource(matrix[:-n_eval]), matrix[-n_eval:].split(eval_batch_size)
    if text is None:
        raise ValueError("text data needs a model: call load_text first")
    live = LiveActivations(
        text.model,
        text.train_tokens,
        cfg.hook,
        exclude=text.train_exclude,
        windows_per_forward=cfg.windows_per_forward,
        buffer_rows=cfg.buffer_rows,
        truncate=cfg.truncate,
    )
    return live, held_out(cfg, text)


def held_out(cfg: DataConfig, text: Text) -> Iterator[torch.Tensor]:
    """Activation rows [rows, d] of the held-out windows."""
    return harvest(
        text.model,
        text.eval_tokens,
        cfg.hook,
        batch_size=cfg.windows_per_forward,
        exclude=text.eval_exclude,
        truncate=cfg.truncate,
    )
