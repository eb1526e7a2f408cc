"""Multi-layer SAEs (Lawson et al. 2024): one SAE over the residual stream of every layer, its
inputs standardised per token; the layer pattern, the stacking of rows, the spread of latents
over layers against brute force, and training and evaluation from the command line."""

from __future__ import annotations

import json

import pytest
import torch
from cli_args import FAST, text_args

from monosemantic.cli import main
from monosemantic.data.store import rows_at
from monosemantic.evaluation.multi_layer import layer_activity
from monosemantic.hooks import HookPointError, expand_layers, layer_points
from monosemantic.sae.base import standardized
from monosemantic.sae.io import load_sae
from monosemantic.sae.registry import config, create

PATTERN = "model.layers.*:output"


def test_standardisation_round_trips() -> None:
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(10, 7, generator=g) * torch.rand(10, 1, generator=g) * 5 + 3.0).double()
    z, mean, std = standardized(x)
    torch.testing.assert_close(z.mean(-1), torch.zeros(10, dtype=torch.float64), atol=1e-9, rtol=0)
    torch.testing.assert_close(z.std(-1, keepdim=True), std / (std + 1e-5))
    torch.testing.assert_close(z * (std + 1e-5) + mean, x)


def test_layer_points_keep_layer_order_and_only_the_pattern() -> None:
    points = ["model.layers.10:output", "model.layers.2:output", "model.layers.2.mlp:output"]
    assert layer_points(PATTERN, points) == ["model.layers.2:output", "model.layers.10:output"]
    step = {p: torch.full((3, 2), float(i)) for i, p in enumerate(points)}
    stacked = rows_at(step, PATTERN)
    assert stacked.shape == (6, 2) and stacked[:3].eq(1).all() and stacked[3:].eq(0).all()
    with pytest.raises(KeyError):
        rows_at(step, "model.blocks.*:output")


def test_expand_layers_names_every_layer(tiny_llama) -> None:
    assert expand_layers(tiny_llama, PATTERN) == ["model.layers.0:output", "model.layers.1:output"]
    with pytest.raises(HookPointError, match=r"'\*' stands for a layer index"):
        expand_layers(tiny_llama, "model.blocks.*:output")


def test_layer_activity_matches_brute_force() -> None:
    torch.manual_seed(0)
    sae = create(config("topk", d_in=6, d_sae=10, k=2, hook=PATTERN, standardize=True)).eval()
    layers = [f"model.layers.{i}:output" for i in range(3)]
    steps = [{p: torch.randn(5, 6) for p in layers} for _ in range(2)]
    result = layer_activity(sae, steps, PATTERN)
    with torch.no_grad():
        codes = [torch.stack([sae.encode(s[p]) for p in layers]) for s in steps]  # [L, n, F]
    mass = sum(c.sum(1).T.double() for c in codes)
    torch.testing.assert_close(result["mass"], mass)
    fired = [i for i in range(10) if mass[i].sum() > 0]
    spread = [i for i in fired if (mass[i] > 0).sum() > 1]
    assert result["multi_layer_latents"] == pytest.approx(len(spread) / len(fired))
    fractions = []
    for c in codes:
        for t in range(c.shape[1]):
            on = [(c[:, t, i] > 0).sum().item() for i in range(10)]
            fractions.append(sum(n > 1 for n in on) / max(1, sum(n > 0 for n in on)))
    assert result["per_token_multi_layer"] == pytest.approx(sum(fractions) / len(fractions))


def test_multi_layer_sae_trains_and_is_judged_at_every_layer(tiny_lm_folder, tiny_text, tmp_path):
    out = tmp_path / "run"
    args = text_args(tiny_lm_folder, tiny_text)
    args[args.index("--hook") + 1] = PATTERN
    args = ["train", *args, *FAST, "--standardize", "--out", str(out)]
    assert main(args) == 0
    (summary,) = json.loads((out / "summary.json").read_text())["saes"]
    metrics = summary["eval"]
    assert list(metrics["layers"]) == ["model.layers.0:output", "model.layers.1:output"]
    for layer in metrics["layers"].values():
        assert 0 <= layer["fvu"] < 1.5 and layer["l0"] == pytest.approx(4, abs=1e-9)
        assert {"loss_recovered", "kl", "ce_sae"} <= set(layer)
    mean_kl = sum(layer["kl"] for layer in metrics["layers"].values()) / 2
    assert metrics["kl"] == pytest.approx(mean_kl)
    assert 0 <= metrics["multi_layer_latents"] <= 1 and 0 <= metrics["per_token_multi_layer"] <= 1
    folder = out / "saes" / summary["name"]
    assert (folder / "layers.png").stat().st_size > 1000
    sae = load_sae(folder)
    assert sae.cfg.hook == PATTERN and sae.cfg.standardize


def test_a_cache_holds_every_layer_of_one_pass(tiny_lm_folder, tiny_text, tmp_path):
    """`cache --hook model.layers.*:output` stores each layer's rows of every window (one model
    pass per shard), and a multi-layer SAE trains from it and is judged per layer on the text
    the cache records."""
    from monosemantic.data.cache import ActivationCache

    args = text_args(tiny_lm_folder, tiny_text)
    args[args.index("--hook") + 1] = PATTERN
    single = text_args(tiny_lm_folder, tiny_text)
    assert main(["cache", *args, "--out", str(tmp_path / "all")]) == 0
    assert main(["cache", *single, "--out", str(tmp_path / "one")]) == 0
    every, one = ActivationCache(tmp_path / "all"), ActivationCache(tmp_path / "one")
    assert len(every) == 2 * len(one), "two layers' rows of the same positions"
    out = tmp_path / "run"
    assert (
        main(["train", "--data", str(tmp_path / "all"), *FAST, "--standardize", "--out", str(out)])
        == 0
    )
    (summary,) = json.loads((out / "summary.json").read_text())["saes"]
    assert list(summary["eval"]["layers"]) == ["model.layers.0:output", "model.layers.1:output"]
    assert load_sae(summary["folder"]).cfg.hook == PATTERN
