"""Harvest activations from a model at hook points, one batch of token windows at a time.

With ``truncate=True`` (the default) each forward pass stops as soon as every hook point has
fired (``hooks.run_until``), so the layers after the deepest hook are never run.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from monosemantic.data.cache import Manifest, write_cache
from monosemantic.data.prefetch import prefetch
from monosemantic.data.store import WHOLE, Part, ShuffleBuffer, part_rows, rows_at
from monosemantic.hooks import HookPoint, capture, expand_layers, is_layer_pattern, run_until
from monosemantic.runtime import device_of, dtype_named, mixed_precision


def forward_activations(
    model: nn.Module,
    tokens: torch.Tensor,
    hooks: list[str],
    *,
    truncate: bool = True,
    autocast: str | None = None,
) -> dict[str, torch.Tensor]:
    """Activations at ``hooks`` for tokens [batch, ctx] -> {hook: [batch, ctx, d]}, detached;
    with ``autocast`` (bfloat16, float16) the forward runs under torch.autocast in that dtype."""
    tokens = tokens.to(device_of(model))
    with torch.no_grad(), mixed_precision(tokens.device.type, autocast):
        if truncate:
            acts = run_until(model, hooks, input_ids=tokens)
        else:
            with capture(model, hooks) as acts:
                model(input_ids=tokens)
    return {str(HookPoint.parse(h)): acts[str(HookPoint.parse(h))].detach() for h in hooks}


def hook_widths(model: nn.Module, hooks: Sequence[str]) -> dict[str, int]:
    """The size d of the last axis of the activation at each hook (one tiny forward pass)."""
    probe = torch.zeros(1, 2, dtype=torch.long)
    acts = forward_activations(model, probe, list(hooks))
    return {hook: int(rows.shape[-1]) for hook, rows in acts.items()}


def harvest(
    model: nn.Module,
    tokens: torch.Tensor,
    hooks: Sequence[str],
    *,
    batch_size: int = 8,
    exclude: torch.Tensor | None = None,
    truncate: bool = True,
    autocast: str | None = None,
) -> Iterator[dict[str, torch.Tensor]]:
    """Yield float32 activation rows ``{hook: [rows, d_hook]}``, ``batch_size`` windows per
    forward pass; row i of every hook comes from the same token position.

    tokens: [n, ctx]; exclude: [n, ctx] bool, True where a position's activation is dropped
    (BOS and other special tokens by default, since their activations are outliers); autocast
    as in ``forward_activations``.
    """
    for start in range(0, len(tokens), batch_size):
        window = tokens[start : start + batch_size]
        acts = forward_activations(model, window, list(hooks), truncate=truncate, autocast=autocast)
        keep = None if exclude is None else ~exclude[start : start + batch_size]
        yield {
            hook: rows.float().cpu().reshape(-1, rows.shape[-1])
            if keep is None
            else rows.float().cpu()[keep]
            for hook, rows in acts.items()
        }


@dataclass
class LiveActivations:
    """An activation source that runs the model while training: windows in a seeded order per
    epoch, rows mixed across many windows by a shuffle buffer of ``buffer_rows`` rows. Each batch
    is ``{hook: [batch, d_hook]}`` from one model pass, the rows of all hooks aligned.

    ``batches(..., start_step=s)`` replays the stream and skips s batches, so a resumed run sees
    exactly the batches the original would have (at the cost of re-harvesting them).

    ``prefetch`` > 0 runs the model (and the shuffle buffer) in a background thread up to that
    many batches ahead of the trainer, with ``producer_threads`` torch threads (None: torch's
    default); the batches are the same, in the same order. Nothing else may run the model while
    a prefetched stream is open (hooks belong to the model, not to a thread): the trainer closes
    it when training ends.

    ``part=(i, n)``: this process harvests every n-th window of the order, from the i-th, into a
    buffer of its own and yields ``batch_size / n`` rows a step; n processes run the model once
    per window between them, so their batches together are a batch of the same windows' rows,
    not the rows one process would draw (which would need each process to run every window).
    """

    model: nn.Module
    tokens: torch.Tensor  # [n, ctx]
    hooks: list[str]
    exclude: torch.Tensor | None = None  # [n, ctx]
    windows_per_forward: int = 8
    buffer_rows: int = 65536
    truncate: bool = True
    autocast: str | None = None
    prefetch: int = 0
    producer_threads: int | None = None

    def _rows(self, seed: int, part: Part) -> Iterator[dict[str, torch.Tensor]]:
        index, count = part
        epoch = 0
        while True:
            order = torch.randperm(
                len(self.tokens), generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch)
            )[index::count]
            exclude = self.exclude[order] if self.exclude is not None else None
            yield from harvest(
                self.model,
                self.tokens[order],
                self.hooks,
                batch_size=self.windows_per_forward,
                exclude=exclude,
                truncate=self.truncate,
                autocast=self.autocast,
            )
            epoch += 1

    def batches(
        self, batch_size: int, *, seed: int, start_step: int = 0, part: Part = WHOLE
    ) -> Iterator[dict[str, torch.Tensor]]:
        """Batches ``{hook: [batch_size / n, d_hook]}``, see ``store.ActivationSource``."""
        if not self.prefetch:
            return self._batches(batch_size, seed, start_step, part)
        return prefetch(
            lambda: self._batches(batch_size, seed, start_step, part),
            self.prefetch,
            threads=self.producer_threads,
        )

    def _batches(
        self, batch_size: int, seed: int, start_step: int, part: Part
    ) -> Iterator[dict[str, torch.Tensor]]:
        rows = part_rows(batch_size, part)
        widths: list[int] = []

        def side_by_side() -> Iterator[torch.Tensor]:
            """Every hook's rows in one [rows, Σ d] tensor, so one buffer shuffles them alike."""
            for acts in self._rows(seed, part):
                widths[:] = [hook_rows.shape[1] for hook_rows in acts.values()]
                yield torch.cat(list(acts.values()), dim=1)

        buffer = ShuffleBuffer(
            side_by_side(), capacity=self.buffer_rows, batch_size=rows.stop - rows.start, seed=seed
        )
        stream = iter(buffer)
        for _ in range(start_step):
            next(stream)
        for batch in stream:
            yield dict(zip(self.hooks, batch.split(widths, dim=1), strict=True))


def harvest_to_cache(
    model: nn.Module,
    tokens: torch.Tensor,
    hook: str,
    folder: Path,
    *,
    meta: dict[str, Any],
    exclude: torch.Tensor | None = None,
    shard_windows: int = 64,
    store_dtype: str = "float32",
    truncate: bool = True,
    autocast: str | None = None,
) -> Manifest:
    """Write the activations at ``hook`` for tokens [n, ctx] to ``folder`` as shards of
    ``shard_windows`` windows each; a layer pattern (``model.layers.*:output``) stores every
    layer's rows of the windows of a shard, one model pass for all (a multi-layer SAE's inputs).
    Rerunning resumes at the first missing shard. Returns the manifest."""
    dtype = dtype_named(store_dtype)
    points = expand_layers(model, hook) if is_layer_pattern(hook) else [hook]
    shards = -(-len(tokens) // shard_windows)
    bar = tqdm(total=shards, desc=f"cache {hook}", unit="shard")

    def make_shard(index: int) -> torch.Tensor | None:
        start = index * shard_windows
        if start >= len(tokens):
            return None
        bar.n = index + 1  # resumed runs start past the shards already on disk
        bar.refresh()
        window = slice(start, start + shard_windows)
        chunks = harvest(
            model,
            tokens[window],
            points,
            exclude=None if exclude is None else exclude[window],
            truncate=truncate,
            autocast=autocast,
        )
        return torch.cat([rows_at(acts, hook) for acts in chunks]).to(dtype)

    info = {
        **meta,
        "hook": hook,
        "dtype": store_dtype,
        "shard_windows": shard_windows,
        "windows": len(tokens),
        "context_size": tokens.shape[1],
    }
    with bar:
        return write_cache(folder, make_shard, info)
