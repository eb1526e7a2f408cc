"""Run an iterator ahead in a background thread, so producing the next items (a model's forward
pass) overlaps consuming the current one (an SAE's training step).

Torch releases the GIL inside its ops, so a thread is enough for the two to run at once. Items
come out in the order the iterator yields them; at most ``depth`` finished items wait in the
queue, so memory stays bounded however slow the consumer is.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

import torch

T = TypeVar("T")
_POLL_S = 0.1
"""How often a producer blocked on a full queue checks whether the consumer has gone."""


class _End:
    """Put on the queue after the last item, or with the producer's exception."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


def prefetch(
    make: Callable[[], Iterator[T]], depth: int, *, threads: int | None = None
) -> Iterator[T]:
    """The items of ``make()``, produced in a background thread up to ``depth`` ahead.

    ``threads``: torch's intra-op threads in the producer (torch keeps the count per thread, so
    the consumer's own is untouched); None keeps torch's default. An exception in the producer is
    raised here, in the consumer, with the producer's traceback. Closing this generator (or an
    exception in the consumer, once the generator is closed) stops the producer and waits for it
    (at most the item it is making).
    """
    if depth < 1:
        raise ValueError(f"depth={depth} is invalid: expected >= 1 (or do not prefetch)")
    items: queue.Queue[T | _End] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: T | _End) -> bool:
        """Wait for room in the queue; False once the consumer has gone."""
        while not stop.is_set():
            try:
                items.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        if threads is not None:
            torch.set_num_threads(threads)
        try:
            for item in make():
                if not put(item):
                    return
        except BaseException as err:  # handed to the consumer, which raises it
            put(_End(err))
            return
        put(_End())

    # daemon: a consumer that never closes this generator must not keep the interpreter alive
    producer = threading.Thread(target=produce, name="monosemantic-prefetch", daemon=True)
    producer.start()
    try:
        while True:
            item = items.get()
            if isinstance(item, _End):
                if item.error is not None:
                    raise item.error
                return
            yield item
    finally:
        stop.set()
        producer.join()
