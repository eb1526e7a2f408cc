"""The background producer: same batches as the synchronous path, bounded, and it never outlives
its consumer."""

from __future__ import annotations

import threading
import time
import traceback

import pytest
import torch

from monosemantic.data.harvest import LiveActivations
from monosemantic.data.prefetch import prefetch
from monosemantic.sae.registry import config, create
from monosemantic.training.trainer import TrainConfig, train

HOOKS = ["model.layers.0.mlp.down_proj:input", "model.layers.0.mlp:output"]


def producers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "monosemantic-prefetch"]


def live(model, **fields) -> LiveActivations:
    tokens = torch.randint(3, 100, (24, 16), generator=torch.Generator().manual_seed(0))
    return LiveActivations(model, tokens, HOOKS, windows_per_forward=4, buffer_rows=256, **fields)


@pytest.mark.parametrize("start_step", [0, 5])
def test_prefetched_batches_equal_the_synchronous_ones(tiny_llama, start_step):
    """Over two epochs of windows, and from a resumed step. (One after the other: hooks belong
    to the model, so two streams must not run one model at once.)"""
    take = 12
    sync = live(tiny_llama).batches(32, seed=3, start_step=start_step)
    expected = [next(sync) for _ in range(take)]
    ahead = live(tiny_llama, prefetch=2, producer_threads=1).batches(
        32, seed=3, start_step=start_step
    )
    for a in expected:
        b = next(ahead)
        assert a.keys() == b.keys()
        for hook in a:
            assert torch.equal(a[hook], b[hook])
    ahead.close()
    assert not producers()


class Exploding(torch.nn.Module):
    """A model whose third forward pass fails."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.calls = 0

    def forward(self, **kwargs):
        self.calls += 1
        if self.calls == 3:
            raise RuntimeError("the subject model broke on its third batch")
        return self.model(**kwargs)


def test_an_error_in_the_forward_pass_is_raised_in_the_consumer(tiny_llama):
    model = Exploding(tiny_llama)
    source = LiveActivations(
        model, torch.randint(3, 100, (24, 16)), ["model.model.layers.0.mlp:output"],
        windows_per_forward=4, buffer_rows=64, prefetch=2,
    )  # fmt: skip
    with pytest.raises(RuntimeError, match="third batch") as raised:
        list(source.batches(16, seed=0))
    frames = "".join(traceback.format_tb(raised.value.__traceback__))
    assert "in forward" in frames  # the producer's own frames come with it
    assert not producers()


def test_the_queue_holds_at_most_depth_items():
    made = []

    def count():
        while True:
            made.append(len(made))
            yield made[-1]

    depth = 3
    items = prefetch(count, depth)
    assert next(items) == 0
    deadline = time.monotonic() + 5
    while len(made) < depth + 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)  # give an unbounded producer time to run further
    # one consumed, depth queued, one made and waiting for room
    assert len(made) == depth + 2
    items.close()
    assert not producers()


def test_training_that_fails_stops_the_producer(tiny_llama):
    """The trainer closes its source on the way out, so no thread keeps harvesting."""
    source = live(tiny_llama, prefetch=2)
    sae = create(config("topk", d_in=64, d_sae=128, k=4, hook=HOOKS[0]))
    with pytest.raises(FloatingPointError):
        train(
            [sae],
            source.batches(32, seed=0),
            TrainConfig(steps=50, batch_size=32, lr=1e30, progress=False),
        )
    assert not producers()


def test_depth_must_be_positive():
    with pytest.raises(ValueError, match="depth=0"):
        next(prefetch(lambda: iter([1]), 0))
