"""Data-parallel training's process group and its reductions, in one place.

``launch()`` reads torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, the
rendezvous in ``MASTER_ADDR``/``MASTER_PORT``) and joins the process group: gloo for CPU tensors,
and with CUDA ``cpu:gloo,cuda:nccl`` so each collective runs on the backend of its tensors'
device. It yields a ``World``; outside torchrun it yields ``SINGLE``, whose reductions return
their input, so the trainer calls them unconditionally. The world is passed, never global: a
sweep that puts whole SAEs on ranks hands its trainers ``SINGLE`` while the group exists.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

OPS = {"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}


@dataclass(frozen=True)
class World:
    """``size`` processes training one model's batches together; this one is ``rank``."""

    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        """Whether this process writes files (rank 0)."""
        return self.rank == 0

    @property
    def part(self) -> tuple[int, int]:
        """(index, count): which part of every global batch this process reads."""
        return self.rank, self.size

    def reduce(self, tensor: torch.Tensor, op: str = "mean") -> torch.Tensor:
        """``tensor`` reduced over every rank (``op``: mean, sum, min or max), in place; returned.
        Mean is of equal-sized parts, so it is the whole batch's mean."""
        if self.size > 1:
            dist.all_reduce(tensor, OPS["sum" if op == "mean" else op])
            if op == "mean":
                tensor.div_(self.size)
        return tensor

    def all_reduce_mean(self, tensors: Sequence[torch.Tensor]) -> None:
        """Average ``tensors`` over ranks in place, in one collective (e.g. one SAE's gradients)."""
        if self.size == 1 or not tensors:
            return
        flat = torch.cat([t.reshape(-1) for t in tensors])
        self.reduce(flat)
        for t, part in zip(tensors, flat.split([t.numel() for t in tensors]), strict=True):
            t.copy_(part.view_as(t))

    def gather_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """Every rank's ``rows [n, d]`` (equal n) stacked in rank order: the global batch."""
        if self.size == 1:
            return rows
        parts = [torch.empty_like(rows) for _ in range(self.size)]
        dist.all_gather(parts, rows.contiguous())
        return torch.cat(parts)

    def gather_objects(self, value: Any) -> list[Any]:
        """Every rank's picklable ``value``, in rank order (small values: summaries)."""
        if self.size == 1:
            return [value]
        values: list[Any] = [None] * self.size
        dist.all_gather_object(values, value)
        return values

    def barrier(self) -> None:
        """Wait until every rank is here (e.g. none writes before all have checked a folder)."""
        if self.size > 1:
            dist.barrier()


SINGLE = World()
"""One process: every reduction is the identity."""


@contextmanager
def launch() -> Iterator[World]:
    """The world torchrun started this process in (``SINGLE`` without torchrun): joins the
    process group on entry and leaves it on exit."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        yield SINGLE
        return
    if torch.cuda.is_available():  # more processes than GPUs share them in turn
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)
    try:
        yield World(dist.get_rank(), dist.get_world_size())
    finally:
        dist.destroy_process_group()
        # Free the process group now: left to the interpreter's shutdown, a gloo worker thread
        # that drops a tensor needs the GIL after finalisation began, is cancelled and aborts
        # the process ("terminate called without an active exception"; 1 run in 10 here).
        gc.collect()
