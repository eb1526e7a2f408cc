"""Decomposing all 10 classes of a d=512 bilinear MNIST classifier: batched vs a naive loop.

    python benchmarks/bench_bilinear_decompose.py [--model FOLDER] [--threads 1] [--repeats 5]

Batched: one einsum builds Q for every class, one batched eigh decomposes them, and the
eigenvectors are folded into pixel space (what ``classifier_eigen(...).fold`` runs). Naive: a
Python loop over classes, each Q_c = Wᵀ diag(P_c) V built as dense matrix products, its own eigh
and its own fold. Both run in the same process on the same weights (a saved classifier, or random
weights of the same shape; the cost does not depend on the values); medians of ``--repeats``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from monosemantic.bilinear.analysis import classifier_eigen
from monosemantic.models.zoo.mnist import (
    BilinearClassifier,
    ClassifierConfig,
    build_classifier,
    load_classifier,
)


def batched(model: BilinearClassifier) -> torch.Tensor:
    return classifier_eigen(model).fold(model.embed.weight.detach()).vectors


def naive(model: BilinearClassifier) -> torch.Tensor:
    w, v = model.bilinear.W.detach(), model.bilinear.V.detach()
    head, embed = model.head.weight.detach(), model.embed.weight.detach()
    out = []
    for c in range(head.shape[0]):
        q = w.T @ torch.diag(head[c]) @ v
        _, vecs = torch.linalg.eigh(0.5 * (q + q.T))
        out.append(vecs.flip(-1).T @ embed)
    return torch.stack(out)


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="", help="a saved classifier folder (default: random)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with torch.no_grad():
        model = (
            load_classifier(Path(args.model))[0]
            if args.model
            else build_classifier(ClassifierConfig())
        )
        # same eigenvectors up to sign (eigenvalues are distinct for trained or random weights)
        a, b = batched(model), naive(model)
        assert torch.allclose(a.abs(), b.abs(), atol=1e-3), "the two paths disagree"
        fast = median_seconds(lambda: batched(model), args.repeats)
        slow = median_seconds(lambda: naive(model), args.repeats)
    print(
        json.dumps(
            {
                "model": args.model or "random weights, d=512",
                "threads": torch.get_num_threads(),
                "batched_s": round(fast, 4),
                "naive_loop_s": round(slow, 4),
                "speedup": round(slow / fast, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
