"""``monosemantic zoo train mnist`` then ``bilinear decompose`` on a tiny MNIST classifier."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from monosemantic.cli import main


def test_train_then_decompose(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "model"
    train = ["zoo", "train", "mnist", "--out", str(model), "--d-hidden", "12", "--epochs", "2"]
    fast = ["--train-subset", "2000", "--batch-size", "128", "--lr", "0.01", "--noise", "0"]
    assert main([*train, *fast, "--threads", "1"]) == 0
    record = json.loads((model / "config.json").read_text())
    assert record["config"]["d_hidden"] == 12 and record["metrics"]["test_acc"] > 0.5
    assert len((model / "metrics.jsonl").read_text().splitlines()) == 2

    out = tmp_path / "dec"
    flags = [
        "--k-max",
        "12",
        "--sweep",
        "0.1",
        "0.3",
        "--sweep-images",
        "300",
        "--top",
        "2",
        "--masks-per-class",
        "1",
    ]
    assert main(["bilinear", "decompose", str(model), "--out", str(out), *flags]) == 0
    assert "plots and decomposition.json in" in capsys.readouterr().out
    for name in ("eigenvectors", "spectra", "truncation", "adversarial", "sweep"):
        assert (out / f"{name}.png").stat().st_size > 1000
    res = json.loads((out / "decomposition.json").read_text())
    # keeping all 12 eigenvectors per class is the model itself
    assert res["truncation"]["test_accuracy"][12] == pytest.approx(res["test_accuracy"])
    assert res["test_accuracy"] == pytest.approx(record["metrics"]["test_acc"], abs=1e-6)
    assert len(res["eigenvalues"]) == 10 and len(res["eigenvalues"][0]) == 12
    assert [r["strength"] for r in res["adversarial_sweep"]] == [0.1, 0.3]
    assert json.loads((out / "config.json").read_text())["k_max"] == 12


def test_bad_option_is_rejected_with_the_field_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["bilinear", "decompose", "mnist", "--out", str(tmp_path), "--masks-per-class", "11"]
    assert main(argv) == 2
    assert "masks_per_class=11 is invalid" in capsys.readouterr().err
