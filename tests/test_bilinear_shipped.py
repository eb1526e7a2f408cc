"""The shipped MNIST classifier: loads, matches its recorded accuracy, truncates, reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from monosemantic.bilinear.report import mnist_report_sections
from monosemantic.data.images import load_mnist
from monosemantic.models.zoo.mnist import SHIPPED, ClassifierConfig, accuracy, load_classifier


@pytest.mark.slow
def test_shipped_classifier_and_report_sections(tmp_path: Path) -> None:
    model, record = load_classifier(SHIPPED / ClassifierConfig().name)  # float16 on disk
    data = load_mnist()
    with torch.no_grad():
        full = accuracy(model, data.test_x, data.test_y)
    assert full >= 0.975  # the acceptance bar; float32 training recorded 0.98
    assert full == pytest.approx(record["metrics"]["test_acc"], abs=2e-3)

    sections = mnist_report_sections(tmp_path)  # the default classifier, decomposed
    assert [s.title for s in sections] == [
        "Bilinear MNIST: eigenvectors from weights",
        "Bilinear MNIST: truncation",
    ]
    assert sections[0].images == [tmp_path / "eigenvectors.png"]
    assert all(p.exists() for s in sections for p in s.images)
    res = json.loads((tmp_path / "decomposition.json").read_text())
    assert "adversarial" not in res  # the report skips the slow part
    assert res["test_accuracy"] == pytest.approx(full, abs=2e-3)
    truncated = res["truncation"]["test_accuracy"]
    assert truncated[20] >= full - 0.01  # 20 eigenvectors per class: within 1 point
    assert truncated[1] < full - 0.3  # one is far from enough
    table = sections[1].table
    assert isinstance(table, list) and table[-1]["test accuracy"] == res["test_accuracy"]
