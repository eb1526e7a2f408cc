"""A training run killed part-way and resumed, beside the same run uninterrupted."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

from monosemantic.sae.base import SAE
from monosemantic.training.trainer import TrainConfig, train


class Interrupt(Exception):
    """Stands for the process being killed."""


def interrupted_and_resumed(
    make: Callable[[], list[SAE]],
    batches: Callable[[int], Iterable],
    cfg: TrainConfig,
    out: Path,
    stop_at: int,
) -> tuple[list[SAE], list[SAE]]:
    """(uninterrupted SAEs, SAEs of a run stopped at step ``stop_at`` and resumed from its last
    checkpoint); ``make`` builds fresh SAEs, ``batches(start)`` yields the steps from ``start``."""
    full = make()
    train(full, batches, cfg, out / "full")

    def stops(start: int):
        for i, batch in enumerate(batches(start)):
            if i == stop_at:
                raise Interrupt
            yield batch

    with pytest.raises(Interrupt):
        train(make(), stops, cfg, out / "resumed")
    resumed = make()
    train(resumed, batches, cfg, out / "resumed", resume=True)
    return full, resumed
