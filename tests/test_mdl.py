"""``monosemantic mdl`` over a trained sweep: the candidates, the tolerance and the choice."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from monosemantic.cli import main
from monosemantic.evaluation.selection import read_candidates, select


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A TopK sweep (k 1, 3, 6 at two widths) on sparse combinations of 24 atoms in 12-d."""
    root = tmp_path_factory.mktemp("mdl")
    g = torch.Generator().manual_seed(0)
    atoms = torch.nn.functional.normalize(torch.randn(24, 12, generator=g), dim=1)
    codes = torch.rand(6000, 24, generator=g) * (torch.rand(6000, 24, generator=g) < 0.1)
    np.save(root / "rows.npy", (codes @ atoms).numpy())
    args = ["train", "--data", str(root / "rows.npy"), "--k", "1", "3", "6", "--expansion", "2"]
    fast = ["4", "--steps", "150", "--batch-size", "128", "--lr", "3e-3", "--no-progress"]
    assert main([*args, *fast, "--out", str(root / "run")]) == 0
    return root / "run"


def test_the_choice_is_the_shortest_description_within_tolerance(sweep, capsys):
    candidates = read_candidates([sweep])
    assert len(candidates) == 6
    fvus = sorted(c.metrics["fvu"] for c in candidates)
    tolerance = fvus[3]  # four candidates within
    best = select(candidates, tolerance)
    within = [c for c in candidates if c.metrics["fvu"] <= tolerance]
    assert [c.within for c in candidates] == [c in within for c in candidates]
    assert best is min(within, key=lambda c: c.metrics["description_length"])
    assert main(["mdl", str(sweep), "--tolerance", str(tolerance)]) == 0
    out = capsys.readouterr().out
    assert f"MDL-optimal: {best.name}" in out
    marked = [line.split()[:2] for line in out.splitlines() if "topk-" in line]
    assert sorted(name for mark, name in marked if mark in "+*") == sorted(c.name for c in within)
    assert [name for mark, name in marked if mark == "*"] == [best.name]
    # SAE folders work as well as run folders; nothing within tolerance is a clear failure
    folders = [c.folder for c in candidates]
    assert main(["mdl", *folders, "--tolerance", str(fvus[0] / 2)]) == 1
    assert "no SAE has FVU <=" in capsys.readouterr().out


def test_every_sae_records_its_description_length(sweep):
    for record in json.loads((sweep / "summary.json").read_text())["saes"]:
        metrics = record["eval"]
        bound = metrics["l0"] * (8 + np.log2(record["config"]["d_sae"]))
        assert metrics["description_length_bound"] == pytest.approx(bound)
        assert metrics["description_length"] > 0


def test_a_folder_without_evaluation_is_refused(tmp_path, capsys):
    assert main(["mdl", str(tmp_path), "--tolerance", "0.5"]) == 2
    assert "neither summary.json" in capsys.readouterr().err


def test_the_mnist_study_picks_per_width_and_overall(tmp_path, capsys):
    out = tmp_path / "study"
    args = ["--widths", "16", "64", "--k", "2", "8", "--steps", "30", "--tolerance", "0.95"]
    assert main(["mdl-mnist", *args, "--batch-size", "256", "--out", str(out)]) == 0
    result = json.loads((out / "mdl.json").read_text())
    assert len(result["sae"]) == 4
    for chosen in result["chosen"]:
        fits = [r for r in result["sae"] if r["width"] == chosen["width"] and r["fvu"] <= 0.95]
        assert chosen["description_length"] == min(r["description_length"] for r in fits)
    best = min(result["chosen"], key=lambda c: c["description_length"])
    assert result["optimum_width"] == best["width"]
    assert (out / "dl_vs_width.png").stat().st_size > 1000
    assert (out / "decoders.png").stat().st_size > 1000
    assert f"MDL-optimal width {best['width']}" in capsys.readouterr().out
