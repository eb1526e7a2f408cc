"""Image data loading and the bilinear MNIST classifier of the zoo: train, save, load."""

from __future__ import annotations

import gzip
import io
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from monosemantic.config import ConfigError
from monosemantic.data.images import _ArraysOnly, load_fashion_mnist, load_mnist, read_idx
from monosemantic.hooks import capture
from monosemantic.models.zoo.mnist import (
    ClassifierConfig,
    build_classifier,
    get_classifier,
    load_classifier,
    save_classifier,
    train_classifier,
    zoo_folder,
)


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(n).to_bytes(4, "big") for n in array.shape
    )
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_read_idx_and_fashion_splits(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (10_004, 28, 28))
    test = rng.integers(0, 256, (3, 28, 28))
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", train)
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", train[:, 0, 0] % 10)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", test)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", test[:, 0, 0] % 10)
    np.testing.assert_array_equal(read_idx(tmp_path / "t10k-images-idx3-ubyte.gz"), test)
    data = load_fashion_mnist(tmp_path)
    assert data.train_x.shape == (4, 784) and data.val_x.shape == (10_000, 784)
    torch.testing.assert_close(data.val_x[0], torch.tensor(train[4].reshape(-1) / 255).float())
    assert data.test_y.tolist() == (test[:, 0, 0] % 10).tolist()
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path / "nowhere")


def test_data_pickle_refuses_code() -> None:
    payload = pickle.dumps(os.getcwd)  # any global outside numpy's array rebuilding
    with pytest.raises(pickle.UnpicklingError, match="refusing to load"):
        _ArraysOnly(io.BytesIO(payload)).load()
    arrays = pickle.dumps((np.arange(3.0), np.array([1, 2])))
    loaded = _ArraysOnly(io.BytesIO(arrays)).load()
    np.testing.assert_array_equal(loaded[0], np.arange(3.0))


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ConfigError, match="dataset='cifar' is invalid"):
        ClassifierConfig(dataset="cifar")
    with pytest.raises(ConfigError, match=r"noise=-0\.1 is invalid"):
        ClassifierConfig(noise=-0.1)
    with pytest.raises(ConfigError, match=r"unknown ClassifierConfig fields \['depth'\]"):
        ClassifierConfig.from_dict({"depth": 2})


def test_seeded_build_and_save_load_roundtrip(tmp_path: Path) -> None:
    cfg = ClassifierConfig(d_hidden=16, seed=5)
    a, b = build_classifier(cfg), build_classifier(cfg)
    torch.testing.assert_close(a.embed.weight, b.embed.weight)
    x = torch.rand(3, 784)
    save_classifier(a, tmp_path / "m", {"test_acc": 0.5})
    loaded, record = load_classifier(tmp_path / "m")
    torch.testing.assert_close(loaded(x), a(x))
    assert record["metrics"] == {"test_acc": 0.5} and record["config"]["seed"] == 5
    save_classifier(a, tmp_path / "h", dtype=torch.float16)
    half, _ = load_classifier(tmp_path / "h")
    torch.testing.assert_close(half(x), a(x), rtol=1e-2, atol=1e-3)
    with pytest.raises(FileNotFoundError, match="zoo train mnist"):
        load_classifier(tmp_path / "missing")


def test_training_smoke_on_mnist_subset(tmp_path: Path) -> None:
    data = load_mnist()
    cfg = ClassifierConfig(
        d_hidden=32, epochs=3, batch_size=200, lr=1e-2, noise=0, weight_decay=0, train_subset=2000
    )
    model, metrics = train_classifier(cfg, data, log=tmp_path / "log.jsonl", progress=False)
    assert metrics["test_acc"] > 0.75  # chance is 0.1; 0.85 when measured
    assert len((tmp_path / "log.jsonl").read_text().splitlines()) == 3
    again, _ = train_classifier(cfg, data, progress=False)  # same seed, same weights
    torch.testing.assert_close(again.head.weight, model.head.weight)
    with capture(model, "bilinear:output") as acts:
        model(data.test_x[:5])
    assert acts["bilinear:output"].shape == (5, 32)


def test_get_classifier_caches_and_checks_the_config(tmp_path: Path) -> None:
    data = load_mnist()
    cfg = ClassifierConfig(d_hidden=8, epochs=1, batch_size=500, train_subset=1000)
    first, record = get_classifier(cfg, data, root=tmp_path)
    assert (zoo_folder(cfg, tmp_path) / "model.safetensors").exists()
    assert record["metrics"]["train_acc"] > 0.1
    cached, _ = get_classifier(cfg, data, root=tmp_path)
    torch.testing.assert_close(cached.head.weight, first.head.weight)
    # same folder name, different learning rate: retrained, not the stale cached model
    other = ClassifierConfig(d_hidden=8, epochs=1, batch_size=500, train_subset=1000, lr=0.02)
    assert zoo_folder(other, tmp_path) == zoo_folder(cfg, tmp_path)
    retrained, rec = get_classifier(other, data, root=tmp_path)
    assert rec["config"]["lr"] == 0.02
    assert not torch.allclose(retrained.head.weight, first.head.weight)
