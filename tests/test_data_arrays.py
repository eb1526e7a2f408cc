"""load_matrix: every format round-trips a known matrix; every bad input is a clear error."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import save_file

from monosemantic.data.arrays import load_matrix


@pytest.fixture
def matrix():
    return np.random.default_rng(0).normal(size=(7, 3))


def assert_same(loaded, reference):
    assert loaded.dtype == torch.float32
    assert torch.equal(loaded, torch.from_numpy(np.asarray(reference, dtype=np.float32)))


def test_npy(tmp_path, matrix):
    np.save(tmp_path / "m.npy", matrix)
    assert_same(load_matrix(tmp_path / "m.npy"), matrix)
    np.save(tmp_path / "ints.npy", np.arange(6).reshape(2, 3))
    assert_same(load_matrix(str(tmp_path / "ints.npy")), np.arange(6).reshape(2, 3))


def test_safetensors_single_and_keyed(tmp_path, matrix):
    t = torch.from_numpy(matrix)
    save_file({"x": t}, tmp_path / "one.safetensors")
    assert_same(load_matrix(tmp_path / "one.safetensors"), matrix)
    save_file({"b": t[:2].contiguous(), "a": t.to(torch.bfloat16)}, tmp_path / "two.safetensors")
    assert_same(load_matrix(tmp_path / "two.safetensors", key="b"), matrix[:2])
    assert_same(load_matrix(tmp_path / "two.safetensors", key="a"), t.to(torch.bfloat16).float())
    with pytest.raises(ValueError, match=r"holds 2 tensors \['a', 'b'\]; pick one with key="):
        load_matrix(tmp_path / "two.safetensors")
    with pytest.raises(ValueError, match=r"no tensor 'c'; its tensors: \['a', 'b'\]"):
        load_matrix(tmp_path / "two.safetensors", key="c")


def test_csv_with_and_without_header(tmp_path, matrix):
    np.savetxt(tmp_path / "plain.csv", matrix, delimiter=",")
    assert_same(
        load_matrix(tmp_path / "plain.csv"), np.loadtxt(tmp_path / "plain.csv", delimiter=",")
    )
    np.savetxt(tmp_path / "head.csv", matrix, delimiter=",", header="g1,g2,g3", comments="")
    assert load_matrix(tmp_path / "head.csv").shape == (7, 3)
    assert torch.equal(load_matrix(tmp_path / "head.csv"), load_matrix(tmp_path / "plain.csv"))
    (tmp_path / "col.csv").write_text("v\n1\n2\n")
    assert_same(load_matrix(tmp_path / "col.csv"), [[1.0], [2.0]])


def test_parquet_numeric_columns(tmp_path, matrix):
    table = pa.table({"cell": [f"c{i}" for i in range(7)], "g1": matrix[:, 0], "g2": matrix[:, 1]})
    pq.write_table(table, tmp_path / "m.parquet")
    with pytest.warns(UserWarning, match=r"skipping non-numeric columns \['cell'\]"):
        loaded = load_matrix(tmp_path / "m.parquet")
    assert_same(loaded, matrix[:, :2])
    pq.write_table(pa.table({"name": ["a", "b"]}), tmp_path / "text.parquet")
    with pytest.raises(ValueError, match=r"non-numeric data.*no numeric columns"):
        load_matrix(tmp_path / "text.parquet")


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no matrix file .*absent.npy"):
        load_matrix(tmp_path / "absent.npy")
    (tmp_path / "m.txt").write_text("1 2\n")
    with pytest.raises(ValueError, match=r"unsupported .* '\.txt'.*\.npy, \.safetensors, \.csv"):
        load_matrix(tmp_path / "m.txt")
    np.save(tmp_path / "vec.npy", np.ones(5))
    with pytest.raises(ValueError, match=r"shape \(5,\); expected a 2-D matrix"):
        load_matrix(tmp_path / "vec.npy")
    np.save(tmp_path / "cube.npy", np.ones((2, 2, 2)))
    with pytest.raises(ValueError, match=r"shape \(2, 2, 2\); expected a 2-D matrix"):
        load_matrix(tmp_path / "cube.npy")
    np.save(tmp_path / "obj.npy", np.array([["a", None]], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="non-numeric data"):
        load_matrix(tmp_path / "obj.npy")
    np.save(tmp_path / "str.npy", np.array([["a", "b"]]))
    with pytest.raises(ValueError, match=r"non-numeric data.*dtype <U1"):
        load_matrix(tmp_path / "str.npy")
    (tmp_path / "bad.csv").write_text("x,y\n1,2\n3,oops\n")
    with pytest.raises(ValueError, match=r"bad.csv holds non-numeric data"):
        load_matrix(tmp_path / "bad.csv")
