"""The command line end to end on a tiny model and on a matrix: train, cache, eval, info."""

import json

import numpy as np
import pytest
import torch
from cli_args import FAST, eval_args, text_args

from monosemantic.cli import main
from monosemantic.sae.io import load_sae


def test_train_on_text_writes_a_saelens_folder_and_metrics(tiny_lm_folder, tiny_text, tmp_path):
    out = tmp_path / "run"
    assert main(["train", *text_args(tiny_lm_folder, tiny_text), *FAST, "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["steps"] == 30 and config["sweep"]["settings"]["k"] == [4]
    summary = json.loads((out / "summary.json").read_text())
    (sae_summary,) = summary["saes"]
    metrics = sae_summary["eval"]
    assert 0 <= metrics["fvu"] < 1
    assert metrics["l0"] == pytest.approx(4, abs=1e-9)  # TopK: exactly k per token
    assert {"ce_clean", "ce_sae", "kl", "loss_recovered"} <= set(metrics)
    folder = out / "saes" / sae_summary["name"]
    assert {"cfg.json", "sae_weights.safetensors", "sparsity.safetensors", "density.png"} <= {
        p.name for p in folder.iterdir()
    }
    sae = load_sae(folder)
    assert sae.cfg.hook == "model.layers.0.mlp:output" and sae.d_sae == 64


def test_cache_then_train_then_eval(tiny_lm_folder, tiny_text, tmp_path, capsys):
    cache = tmp_path / "cache"
    args = text_args(tiny_lm_folder, tiny_text)
    assert main(["cache", *args, "--out", str(cache), "--shard-windows", "50"]) == 0
    manifest = json.loads((cache / "manifest.json").read_text())
    assert manifest["complete"] and len(manifest["shards"]) >= 2
    assert manifest["meta"]["hook"] == "model.layers.0.mlp:output"
    assert main(["info", str(cache), "--verify"]) == 0
    assert "all shard checksums verify" in capsys.readouterr().out
    # training from the cache finds the model and held-out text in its manifest
    out = tmp_path / "run"
    assert main(["train", "--data", str(cache), *FAST, "--out", str(out)]) == 0
    (sae_summary,) = json.loads((out / "summary.json").read_text())["saes"]
    assert "loss_recovered" in sae_summary["eval"]
    capsys.readouterr()
    assert main(["eval", sae_summary["folder"], *eval_args(args)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["l0"] == pytest.approx(4)


def test_train_on_a_matrix_needs_no_model(tmp_path):
    g = torch.Generator().manual_seed(0)
    atoms = torch.nn.functional.normalize(torch.randn(24, 8, generator=g), dim=1)
    codes = torch.rand(3000, 24, generator=g) * (torch.rand(3000, 24, generator=g) < 0.1)
    path = tmp_path / "cells.npy"
    np.save(path, (codes @ atoms).numpy())
    out = tmp_path / "run"
    assert main(["train", "--data", str(path), *FAST, "--out", str(out)]) == 0
    (summary,) = json.loads((out / "summary.json").read_text())["saes"]
    assert summary["config"]["d_in"] == 8 and summary["eval"]["fvu"] < 0.5


def test_missing_data_path_is_a_clear_error(tmp_path, capsys):
    code = main(["train", "--data", str(tmp_path / "nope.npy"), *FAST, "--out", str(tmp_path)])
    assert code == 2
    assert "nope.npy" in capsys.readouterr().err


def test_unknown_hook_is_a_clear_error(tiny_lm_folder, tiny_text, tmp_path, capsys):
    args = text_args(tiny_lm_folder, tiny_text)
    args[args.index("--hook") + 1] = "model.layers.0.mpl:output"
    assert main(["train", *args, *FAST, "--out", str(tmp_path)]) == 2
    assert "nearest module names: model.layers.0.mlp" in capsys.readouterr().err


def test_sae_with_wrong_width_is_refused(tiny_lm_folder, tiny_text, tmp_path, capsys):
    from monosemantic.sae.io import save_sae
    from monosemantic.sae.registry import config, create

    save_sae(
        create(config("topk", d_in=64, d_sae=128, k=4, hook="model.layers.0.mlp:output")),
        tmp_path / "sae",
    )
    args = eval_args(text_args(tiny_lm_folder, tiny_text))
    assert main(["eval", str(tmp_path / "sae"), *args]) == 2
    err = capsys.readouterr().err
    assert "d_in=64" in err and "width 32" in err


def test_train_and_eval_a_transcoder_of_an_mlp(tiny_lm_folder, tiny_text, tmp_path, capsys):
    """--hook the MLP's input, --hook-out its output: the transcoder is judged on the output
    and spliced in place of the MLP; eval reads both points from its cfg.json."""
    args = text_args(tiny_lm_folder, tiny_text)
    args[args.index("--hook") + 1] = "model.layers.0.mlp:input"
    args += ["--hook-out", "model.layers.0.mlp:output", "--skip-transcoder"]
    out = tmp_path / "run"
    assert main(["train", *args, *FAST, "--out", str(out)]) == 0
    (summary,) = json.loads((out / "summary.json").read_text())["saes"]
    assert summary["name"] == "topk-skip-transcoder-64-k4"
    assert 0 <= summary["eval"]["fvu"] < 1 and summary["train"]["output_scale"] > 0
    sae = load_sae(summary["folder"])
    assert (sae.cfg.hook, sae.cfg.hook_out, sae.cfg.skip) == (
        "model.layers.0.mlp:input",
        "model.layers.0.mlp:output",
        True,
    )
    capsys.readouterr()
    assert main(["eval", summary["folder"], *eval_args(args[:-3])]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["fvu"] == pytest.approx(summary["eval"]["fvu"], rel=1e-4)
    assert metrics["loss_recovered"] == pytest.approx(summary["eval"]["loss_recovered"], rel=1e-4)


def test_skip_transcoder_without_hook_out_is_refused(tiny_lm_folder, tiny_text, tmp_path):
    args = [*text_args(tiny_lm_folder, tiny_text), *FAST, "--skip-transcoder"]
    assert main(["train", *args, "--out", str(tmp_path / "run")]) == 2
    assert not (tmp_path / "run").exists()


def test_train_end_to_end_from_the_command_line(tiny_lm_folder, tiny_text, tmp_path):
    """--objective e2e+ds trains through the spliced model on token windows; the logged terms
    are the KL and the downstream MSE, and the result is evaluated like any SAE."""
    fast = FAST[: FAST.index("--k")]  # a ReLU SAE has no k
    args = [*text_args(tiny_lm_folder, tiny_text), *fast, "--architecture", "standard"]
    args += ["--objective", "e2e+ds", "--downstream-hooks", "model.layers.1:output"]
    out = tmp_path / "run"
    assert main(["train", *args, "--sparsity-coefficient", "1e-3", "--out", str(out)]) == 0
    (summary,) = json.loads((out / "summary.json").read_text())["saes"]
    assert {"kl", "downstream", "l1"} <= set(summary["train"]) and "mse" not in summary["train"]
    assert summary["eval"]["kl"] >= 0 and "loss_recovered" in summary["eval"]
    cache = tmp_path / "cache"
    assert main(["cache", *text_args(tiny_lm_folder, tiny_text), "--out", str(cache)]) == 0
    refused = [
        "train",
        "--data",
        str(cache),
        *FAST,
        "--objective",
        "e2e",
        "--out",
        str(tmp_path / "x"),
    ]
    assert main(refused) == 2
