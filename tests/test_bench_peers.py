"""The parts of benchmarks/bench_peers.py that are ours (no peer package needed): the synthetic
activations, the bounds, monosemantic's case and the table."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_peers

TINY = ["--d-in", "16", "--d-sae", "64", "--k", "4", "--batch-size", "128", "--atoms", "96"]
TINY += ["--warmup", "1", "--steps", "2", "--repeats", "2", "--pool", "2", "--eval-rows", "256"]


pytestmark = pytest.mark.usefixtures("one_thread")


def test_rows_are_k_sparse_over_the_dictionary_and_reproducible() -> None:
    dictionary = bench_peers.random_dictionary(96, 16, seed=0)
    torch.testing.assert_close(dictionary.norm(dim=1), torch.ones(96))
    indices, magnitudes = bench_peers.sparse_code(500, 96, 4, torch.Generator().manual_seed(3))
    assert all(len(set(row)) == 4 for row in indices.tolist()), "k distinct atoms per row"
    assert indices.min() >= 0 and indices.max() < 96
    assert ((magnitudes >= 0.5) & (magnitudes < 1.5)).all()
    x = bench_peers.synthetic_rows(dictionary, 500, 4, seed=3)
    code = torch.zeros(500, 96).scatter(1, indices, magnitudes)
    torch.testing.assert_close(x, code @ dictionary)
    assert torch.equal(x, bench_peers.synthetic_rows(dictionary, 500, 4, seed=3))
    assert not torch.equal(x, bench_peers.synthetic_rows(dictionary, 500, 4, seed=4))


def test_bounds_are_the_rate_over_the_flop_per_token() -> None:
    d, f = 576, 4608
    assert bench_peers.bounds(12 * d * f * 1000.0, d, f) == {"dense": 1000.0, "sparse": 6000.0}
    assert bench_peers.matmul_rate(64, 16, 32, torch.float32, repeats=2) > 0


def test_the_monosemantic_case_trains_and_reports() -> None:
    args = bench_peers.parse_args(TINY)
    result = bench_peers.run_case(args, "monosemantic", "topk", "float32")
    assert result["steps_trained"] == 1 + 2 * 2 and len(result["step_seconds"]) == 2
    assert result["tokens_per_s"] > 0 and result["l0"] == pytest.approx(4)
    assert 0 < result["fvu"] < 2
    assert result["peak_rss_mb"] >= result["rss_before_training_mb"] > 0


def test_the_table_marks_missing_and_failed_cases() -> None:
    args = vars(bench_peers.parse_args([*TINY, "--architectures", "topk", "p_anneal"]))
    args["dtypes"] = ["float32"]
    ok = {"tokens_per_s": 12345.6, "fvu": 0.5, "l0": 32.0, "peak_rss_mb": 700.2}
    results = {
        f"{lib}:{arch}:float32": ok if bench_peers.has(lib, arch) else {"missing": True}
        for lib in bench_peers.LIBRARIES
        for arch in ("topk", "p_anneal")
    }
    results["dictionary_learning:topk:float32"] = {"error": "ImportError: no module"}
    machine = {
        "versions": {"monosemantic": "0.1.0"},
        "matmul_flops": {"float32": 3e11},
        "bounds_tokens_per_s": {"float32": bench_peers.bounds(3e11, 16, 64)},
    }
    text = bench_peers.table({"args": args, "machine": machine, "results": results})
    ours = "12,346 (0.50, 32; 700 MB)"
    assert f"| topk float32 | {ours} | {ours} | error: ImportError" in text
    assert (
        "| p_anneal float32 | 12,346 (0.50, 32; 700 MB) | – | 12,346 (0.50, 32; 700 MB) |" in text
    )
    assert "saelens (not installed)" in text


@pytest.mark.parametrize(
    ("fast", "dtypes"), [(True, ["float32", "bfloat16"]), (False, ["float32"])]
)
def test_bf16_runs_by_default_only_where_the_cpu_has_fast_bf16_matmuls(
    monkeypatch, fast: bool, dtypes: list[str]
) -> None:
    monkeypatch.setattr(bench_peers, "fast_bf16", lambda: fast)
    assert bench_peers.parse_args(TINY).dtypes == dtypes
    asked = bench_peers.parse_args([*TINY, "--dtypes", "float32", "bfloat16"])
    assert asked.dtypes == ["float32", "bfloat16"]  # asked for, it runs on any CPU
