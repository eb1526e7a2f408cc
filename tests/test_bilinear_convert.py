"""SwiGLU → bilinear conversion of a Llama-family model, against the definition and transformers."""

from __future__ import annotations

import pytest
import torch
from conftest import make_tiny_llama
from tiny_lm import sharp_lm

from monosemantic.bilinear.tensor import bilinear_tensor, layer_weights
from monosemantic.hooks import capture
from monosemantic.models.bilinear_lm import (
    as_bilinear_mlp,
    convert_to_bilinear,
    converted_layers,
    gated_mlps,
    save_converted,
)


def ids(n: int = 3, ctx: int = 10) -> torch.Tensor:
    return torch.randint(3, 100, (n, ctx), generator=torch.Generator().manual_seed(0))


def test_a_converted_mlp_is_exactly_gate_times_up_then_down() -> None:
    model = make_tiny_llama()
    convert_to_bilinear(model)
    mlp = gated_mlps(model)[1]
    x = torch.randn(5, 32)
    expected = mlp.down_proj(mlp.gate_proj(x) * mlp.up_proj(x))
    assert torch.equal(mlp(x), expected)
    assert model.config.hidden_act == "linear" and converted_layers(model) == [0, 1]


def test_the_converted_model_is_the_hand_built_bilinear_one() -> None:
    """Every MLP swapped for a BilinearMLP built from its weights gives the same logits."""
    model = make_tiny_llama()
    convert_to_bilinear(model)
    with torch.no_grad():
        converted = model(ids()).logits
        for layer in model.model.layers:
            layer.mlp = as_bilinear_mlp(layer.mlp)
        hand_built = model(ids()).logits
    torch.testing.assert_close(converted, hand_built, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(converted, make_tiny_llama()(ids()).logits.detach(), atol=1e-3)


def test_the_tensor_of_a_converted_layer_reproduces_it_on_real_activations() -> None:
    """y_a = xᵀ B_a x in float64 on the inputs the layer reads in a forward pass."""
    model = make_tiny_llama()
    convert_to_bilinear(model, [1])
    with capture(model, ["model.layers.1.mlp:input", "model.layers.1.mlp:output"]) as acts:
        model(ids())
    x = acts["model.layers.1.mlp:input"].reshape(-1, 32).double()
    y = acts["model.layers.1.mlp:output"].reshape(-1, 32).double()
    w, v, p = (t.double() for t in layer_weights(as_bilinear_mlp(gated_mlps(model)[1])))
    predicted = torch.einsum("aij,ni,nj->na", bilinear_tensor(w, v, p), x, x)
    error = ((predicted - y).abs().max() / y.abs().max()).item()
    assert error < 1e-4, error


def test_a_saved_conversion_loads_with_plain_transformers(tmp_path, tiny_lm_folder) -> None:
    """Fully converted: transformers alone gives the same logits. Partly converted: the layers
    file restores the conversion through load_model (transformers alone brings the SiLU back)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from monosemantic.models.hf import load_model

    tokenizer = AutoTokenizer.from_pretrained(tiny_lm_folder)
    for layers, name in ((None, "all"), ([0], "first")):
        model = AutoModelForCausalLM.from_pretrained(tiny_lm_folder).eval()
        convert_to_bilinear(model, layers)
        folder = save_converted(model, tokenizer, tmp_path / name)
        with torch.no_grad():
            expected = model(ids()).logits
            plain = AutoModelForCausalLM.from_pretrained(folder).eval()(ids()).logits
            ours, _ = load_model(str(folder))
            mine = ours(ids()).logits
        torch.testing.assert_close(mine, expected)
        if layers is None:
            torch.testing.assert_close(plain, expected)
            assert not (folder / "bilinear_layers.json").exists()
            # transformers' own "linear" activation counts as converted: readable from weights
            plain_model = AutoModelForCausalLM.from_pretrained(folder)
            assert converted_layers(plain_model) == [0, 1]
            as_bilinear_mlp(gated_mlps(plain_model)[0])
        else:
            assert not torch.allclose(plain, expected, atol=1e-4)
            assert converted_layers(ours) == [0]


def test_what_cannot_be_converted_says_why() -> None:
    with pytest.raises(ValueError, match=r"layers \[5\] do not exist: the model has 2 MLPs"):
        convert_to_bilinear(make_tiny_llama(), [5])
    with pytest.raises(ValueError, match="has no gated MLP"):
        convert_to_bilinear(sharp_lm())
    with pytest.raises(ValueError, match="not the identity: it is not bilinear"):
        as_bilinear_mlp(gated_mlps(make_tiny_llama())[0])


def test_the_convert_command_saves_and_scores(tmp_path, tiny_lm_folder, tiny_text, capsys) -> None:
    """CE of both models and their KL on held-out windows, equal to compare_models run here."""
    import json

    from monosemantic.cli import main
    from monosemantic.data.sources import DataConfig, load_text
    from monosemantic.evaluation.spliced import compare_models
    from monosemantic.models.hf import load_model

    data = ["--data", str(tiny_text), "--context-size", "16", "--max-tokens", "4096",
            "--spliced-windows", "4"]  # fmt: skip
    out = tmp_path / "converted"
    assert main(["bilinear", "convert", str(tiny_lm_folder), "--out", str(out), *data]) == 0
    record = json.loads((out / "conversion.json").read_text())
    assert record["layers"] == [0, 1] and record["recovery"] == "none"
    original, tokenizer = load_model(str(tiny_lm_folder))
    converted, _ = load_model(str(out))
    cfg = DataConfig(data=str(tiny_text), context_size=16, max_tokens=4096)
    text = load_text(cfg, original, tokenizer)
    scores = compare_models(
        original, converted, text.eval_tokens[:4], exclude=text.eval_exclude[:4]
    )
    assert scores == pytest.approx({k: record[k] for k in scores}, rel=1e-5)
    assert record["kl"] > 0 and record["ce_candidate"] != record["ce_reference"]
    fitted = tmp_path / "fitted"
    assert main(["bilinear", "convert", str(tiny_lm_folder), "--out", str(fitted),
                 "--local-fit", "--fit-steps", "100", "--fit-lr", "3e-3", *data]) == 0  # fmt: skip
    after = json.loads((fitted / "conversion.json").read_text())
    assert after["recovery"] == "local" and after["kl"] < record["kl"]
    assert main(["bilinear", "convert", str(tiny_lm_folder), "--out", str(fitted),
                 "--finetune-steps", "3", *data]) == 0  # fmt: skip
    assert json.loads((fitted / "conversion.json").read_text())["recovery"] == "global"
    assert main(["bilinear", "convert", str(tiny_lm_folder), "--out", str(out), "--layers", "7",
                 *data]) == 2  # fmt: skip
    assert "do not exist" in capsys.readouterr().err


def test_local_recovery_brings_the_converted_model_back_towards_the_original() -> None:
    """Fitting each bilinear MLP to the original's outputs on its own inputs lowers the KL to the
    original; against an original that is itself bilinear the least-squares start is exact."""
    import copy

    from monosemantic.evaluation.spliced import compare_models
    from monosemantic.models.bilinear_lm import fit_locally

    original = make_tiny_llama()
    with torch.no_grad():  # sharper predictions, so the KL is well above noise
        original.lm_head.weight.mul_(20)
    converted = copy.deepcopy(original)
    convert_to_bilinear(converted)
    windows = torch.randint(3, 100, (64, 12), generator=torch.Generator().manual_seed(1))
    before = compare_models(original, converted, windows)["kl"]
    fvus = fit_locally(original, converted, windows, steps=300, lr=3e-3)
    after = compare_models(original, converted, windows)["kl"]
    assert after < 0.5 * before, (before, after)
    assert max(fvus) < 0.2 and not any(p.requires_grad for p in converted.parameters())
    copied = copy.deepcopy(converted)  # an original that is bilinear: the solve alone is exact
    assert fit_locally(converted, copied, windows, steps=0) == []
    assert compare_models(converted, copied, windows)["kl"] < 1e-8


def test_global_recovery_lowers_the_kl_it_is_trained_on() -> None:
    """Fine-tuning only the converted MLPs on KL to the original: held-out KL falls; nothing
    but MLP weights moves."""
    import copy

    from monosemantic.evaluation.spliced import compare_models
    from monosemantic.models.bilinear_lm import fit_globally

    original = make_tiny_llama()
    with torch.no_grad():
        original.lm_head.weight.mul_(20)
    converted = copy.deepcopy(original)
    convert_to_bilinear(converted)
    windows = torch.randint(3, 100, (64, 12), generator=torch.Generator().manual_seed(1))
    held_out = torch.randint(3, 100, (16, 12), generator=torch.Generator().manual_seed(2))
    before = compare_models(original, converted, held_out)["kl"]
    frozen = {n: p.clone() for n, p in converted.named_parameters() if ".mlp." not in n}
    kls = fit_globally(original, converted, windows, steps=150, lr=3e-3)
    after = compare_models(original, converted, held_out)["kl"]
    assert after < 0.5 * before and kls[-1] < kls[0], (before, after)
    assert all(torch.equal(p, frozen[n]) for n, p in converted.named_parameters() if n in frozen)


def test_the_solved_down_projection_is_the_least_squares_optimum() -> None:
    """After solve_down_projections, the local loss's gradient in P is ~0 and the fit beats the
    converted P (the original's down projection)."""
    import copy

    from monosemantic.models.bilinear_lm import solve_down_projections

    original = make_tiny_llama()
    converted = copy.deepcopy(original)
    convert_to_bilinear(converted, [1])
    windows = torch.randint(3, 100, (32, 12), generator=torch.Generator().manual_seed(1))
    with capture(original, ["model.layers.1.mlp:input", "model.layers.1.mlp:output"]) as acts:
        original(windows)
    x, y = acts["model.layers.1.mlp:input"].detach(), acts["model.layers.1.mlp:output"].detach()
    mlp = gated_mlps(converted)[1]
    before = (mlp(x) - y).pow(2).sum().item()
    solve_down_projections(original, converted, windows, ridge=0.0)
    down = mlp.down_proj.weight.detach().double().requires_grad_(True)
    h = (mlp.gate_proj(x) * mlp.up_proj(x)).detach().double()
    loss = (h @ down.T - y.double()).pow(2).sum()
    loss.backward()
    assert loss.item() < before
    assert down.grad.abs().max().item() < 1e-6 * h.abs().max().item() ** 2 * len(h)
