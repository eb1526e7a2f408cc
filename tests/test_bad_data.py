"""Non-finite and degenerate data are refused up front, naming the source and the rows; no
JSON file holds NaN; eval runs on the model the SAE records (issue 13, defects 3 and 4)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from monosemantic.cli import main
from monosemantic.data.arrays import load_matrix
from monosemantic.data.sources import DataConfig
from monosemantic.data.store import NonFiniteActivationError
from monosemantic.evaluation import evaluate
from monosemantic.files import write_json
from monosemantic.sae.io import save_sae
from monosemantic.sae.registry import config, create


def test_a_matrix_with_non_finite_rows_is_refused_naming_them(tmp_path: Path) -> None:
    rows = np.random.default_rng(0).normal(size=(100, 4)).astype(np.float32)
    rows[3, 1], rows[50, 0] = np.nan, np.inf
    np.save(tmp_path / "x.npy", rows)
    with pytest.raises(ValueError, match=r"x\.npy: 2 of 100 rows hold NaN or Inf \(rows 3, 50\)"):
        load_matrix(tmp_path / "x.npy")


def test_train_on_a_matrix_with_nan_exits_with_one_line(tmp_path: Path, capsys) -> None:
    rows = np.ones((200, 4), dtype=np.float32)
    rows[190] = np.nan  # in the held-out rows
    np.save(tmp_path / "x.npy", rows)
    code = main(["train", "--data", str(tmp_path / "x.npy"), "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and "rows 190" in err and "--dtype" not in err
    assert not (tmp_path / "r").exists(), "nothing written"


def test_a_one_row_matrix_is_refused_clearly(tmp_path: Path, capsys) -> None:
    np.save(tmp_path / "x.npy", np.ones((1, 4), dtype=np.float32))
    assert main(["train", "--data", str(tmp_path / "x.npy"), "--out", str(tmp_path / "r")]) == 2
    assert "has 1 rows: too few to hold out 1 for evaluation" in capsys.readouterr().err


def test_held_out_activations_with_nan_stop_evaluation() -> None:
    sae = create(config("topk", d_in=4, d_sae=8, k=2))
    held = [torch.ones(6, 4), torch.ones(6, 4)]
    held[1][2, 0] = float("nan")
    with pytest.raises(NonFiniteActivationError, match=r"held-out batch 1, hook .*rows 2 of"):
        evaluate.evaluate_saes([sae], held, None, DataConfig(data="x.npy"))


def test_json_files_never_hold_nan(tmp_path: Path) -> None:
    write_json(tmp_path / "m.json", {"fvu": float("nan"), "xs": [1.0, float("inf")], "k": 3})
    text = (tmp_path / "m.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"fvu": None, "xs": [1.0, None], "k": 3}


def test_eval_uses_the_model_the_sae_records(tmp_path: Path, monkeypatch) -> None:
    save_sae(
        create(config("topk", d_in=4, d_sae=8, k=2, model="my-model", hook="h:output")), tmp_path
    )
    seen = []

    def stop(data):
        seen.append((data.model, data.hook))
        raise RuntimeError("resolved")

    monkeypatch.setattr(evaluate, "resolve", stop)
    for given in (False, True):
        with pytest.raises(RuntimeError, match="resolved"):
            evaluate.evaluate_folder(tmp_path, DataConfig(model="other"), model_given=given)
    assert seen == [("my-model", ["h:output"]), ("other", ["h:output"])]


def test_drop_non_finite_leaves_the_rows_out_and_counts_them(tmp_path: Path) -> None:
    rows = np.arange(40, dtype=np.float32).reshape(10, 4)
    rows[[2, 7], 0] = np.nan
    np.save(tmp_path / "x.npy", rows)
    with pytest.warns(UserWarning, match=r"x\.npy: dropped 2 of 10 rows holding NaN or Inf"):
        kept = load_matrix(tmp_path / "x.npy", drop_non_finite=True)
    assert torch.equal(kept, torch.from_numpy(np.delete(rows, [2, 7], axis=0)))
    with pytest.warns(UserWarning, match="dropped 2 of 10 rows"):  # the command says so too
        code = main(["train", "--data", str(tmp_path / "x.npy"), "--drop-non-finite",
                     "--steps", "2", "--batch-size", "4", "--expansion", "2", "--k", "2",
                     "--no-progress", "--eval-fraction", "0.25",
                     "--out", str(tmp_path / "r")])  # fmt: skip
    assert code == 0
