"""A bilinear LM's MLP read from its weights: Q(u), its eigenvectors, and their readings through
the model, against brute force on a tiny converted Llama and a tiny zoo bilinear LM."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import WORDS, make_tiny_llama

from monosemantic.bilinear.lm_layer import (
    LayerReadingConfig,
    bilinear_layer,
    eigenpairs,
    held_out_inputs,
    interaction,
    moved_tokens,
    parse_direction,
    read_layer,
    truncation,
)
from monosemantic.hooks import capture
from monosemantic.models.bilinear_lm import convert_to_bilinear


def converted_llama():
    model = make_tiny_llama()
    convert_to_bilinear(model)
    return model


def windows(n: int = 6, ctx: int = 12) -> torch.Tensor:
    return torch.randint(3, 100, (n, ctx), generator=torch.Generator().manual_seed(2))


def test_q_reads_the_mlp_exactly_and_its_eigenpairs_rebuild_it() -> None:
    layer = bilinear_layer(converted_llama().double(), 1)
    u = torch.randn(32, dtype=torch.float64)
    x = torch.randn(50, 32, dtype=torch.float64)
    q = interaction(layer.mlp, u)
    torch.testing.assert_close(((x @ q) * x).sum(-1), layer.mlp(x) @ u)
    values, vectors = eigenpairs(q, 32)
    assert torch.all(values.abs()[:-1] >= values.abs()[1:])
    torch.testing.assert_close(((x @ vectors.T) ** 2) @ values, ((x @ q) * x).sum(-1))
    readout = ((x @ q) * x).sum(-1)
    top = ((x @ vectors[:1].T) ** 2) @ values[:1]
    brute = 1 - (top - readout).pow(2).sum() / (readout - readout.mean()).pow(2).sum()
    shares = truncation(values, vectors, x, readout)
    assert shares[1] == pytest.approx(float(brute)) and shares[32] == pytest.approx(1.0)
    assert shares[1] <= shares[10] + 1e-9


def test_default_directions_are_the_tokens_the_mlp_moves_most_on_the_text(tiny_lm_folder) -> None:
    from monosemantic.models.hf import load_model

    model, tokenizer = load_model(str(tiny_lm_folder))
    convert_to_bilinear(model)
    layer = bilinear_layer(model, 0)
    ids = windows() % 20 + 3  # a text of 20 distinct tokens
    held = held_out_inputs(model, layer, ids, tokenizer, first_position=2)
    assert held.vocabulary.tolist() == ids[:, 2:].unique().tolist()
    assert len(held.x) == 6 * 10
    y = layer.mlp(held.x.float()).detach().double()
    effect = {t: float((y @ layer.unembed[t].double()).abs().mean()) for t in range(3, 23)}
    assert moved_tokens(layer, held, 3) == sorted(effect, key=effect.get, reverse=True)[:3]
    with pytest.raises(ValueError, match="no position of"):
        held_out_inputs(model, layer, ids[:, :2], tokenizer, first_position=2)


def test_the_layer_is_found_with_its_norm_hook_and_direct_token_paths() -> None:
    model = converted_llama()
    layer = bilinear_layer(model, 1)
    block = model.model.layers[1]
    assert layer.hook == "model.layers.1.mlp:input" and layer.norm is block.post_attention_layernorm
    e = model.model.embed_tokens.weight.double()
    rms = e.pow(2).mean(-1, keepdim=True).add(model.config.rms_norm_eps).sqrt()
    torch.testing.assert_close(
        layer.token_inputs, e / rms * block.post_attention_layernorm.weight.double()
    )
    expected = model.lm_head.weight * model.model.norm.weight
    torch.testing.assert_close(layer.unembed, expected.detach())


def test_what_is_not_bilinear_says_how_to_make_it() -> None:
    with pytest.raises(ValueError, match="convert it first"):
        bilinear_layer(make_tiny_llama(), 0)
    with pytest.raises(ValueError, match="layer=5 is invalid: the model has 2 blocks"):
        bilinear_layer(converted_llama(), 5)


def test_directions_from_a_token_an_sae_latent_and_files(tmp_path, tiny_lm_folder) -> None:
    from monosemantic.models.hf import load_model
    from monosemantic.sae.io import save_sae
    from monosemantic.sae.registry import config, create

    model, tokenizer = load_model(str(tiny_lm_folder))
    convert_to_bilinear(model)
    layer = bilinear_layer(model, 0)
    word = WORDS[4]
    label, u = parse_direction(f"token: {word}", layer, tokenizer)
    assert word in label
    torch.testing.assert_close(u, layer.unembed[tokenizer.convert_tokens_to_ids(word)])
    with pytest.raises(ValueError, match="is 2 tokens"):
        parse_direction(f"token:{WORDS[0]} {WORDS[1]}", layer, tokenizer)
    sae = create(config("topk", d_in=32, d_sae=16, k=2, hook="h", model="m"))
    save_sae(sae, tmp_path / "sae")
    _, u = parse_direction(f"sae:{tmp_path / 'sae'}:3", layer, tokenizer)
    torch.testing.assert_close(u, sae.W_dec[3].detach())
    with pytest.raises(ValueError, match="latent must be < d_sae"):
        parse_direction(f"sae:{tmp_path / 'sae'}:16", layer, tokenizer)
    vector = np.arange(32, dtype=np.float64)
    np.save(tmp_path / "u.npy", vector)
    np.savetxt(tmp_path / "u.txt", vector)
    for name in ("u.npy", "u.txt"):
        _, u = parse_direction(f"file:{tmp_path / name}", layer, tokenizer)
        torch.testing.assert_close(u, torch.arange(32.0))
    np.save(tmp_path / "short.npy", vector[:5])
    with pytest.raises(ValueError, match="5 numbers; this layer needs d=32"):
        parse_direction(f"file:{tmp_path / 'short.npy'}", layer, tokenizer)
    with pytest.raises(ValueError, match="start it with token:, sae: or file:"):
        parse_direction("logit:3", layer, tokenizer)


def test_eigenvectors_are_read_through_embeddings_and_activations(tmp_path, tiny_lm_folder) -> None:
    """Every reported projection equals the brute-force one: token inputs through the norm (over
    the text's tokens), and the MLP input captured at the reported window position (ranked
    by the cosine after centring)."""
    from monosemantic.models.hf import load_model

    model, tokenizer = load_model(str(tiny_lm_folder))
    convert_to_bilinear(model)
    ids = windows()
    ids[:, 0] = 1  # BOS, left out of the reading
    cfg = LayerReadingConfig(layer=1, eigenvectors=3, shown=4, context=3, first_position=1)
    result = read_layer(model, tokenizer, ids, tmp_path, cfg, [f"token: {WORDS[7]}"])
    assert (tmp_path / "spectrum.png").stat().st_size > 0
    assert json.loads((tmp_path / "layer_reading.json").read_text()) == result
    reading = result["directions"][0]
    assert reading["exactness"] < 1e-10 and result["positions"] == 6 * 11
    explained = reading["explained_by_top"]
    assert list(explained) == ["1", "10", "32"] and explained["32"] == pytest.approx(1.0)
    layer = bilinear_layer(model, 1)
    _, u = parse_direction(f"token: {WORDS[7]}", layer, tokenizer)
    values, vectors = eigenpairs(interaction(layer.mlp, u), 3)
    with capture(model, [layer.hook]) as acts:
        model(ids)
    x = acts[layer.hook].double()  # [n, ctx, d]
    text_tokens = ids[:, 1:].unique()
    for value, vector, vec in zip(values, vectors, reading["eigenvectors"], strict=True):
        assert vec["eigenvalue"] == pytest.approx(float(value))
        by_token = {int(t): float(layer.token_inputs[t] @ vector) for t in text_tokens}
        ranked = sorted(by_token, key=by_token.get)
        assert [t["id"] for t in vec["embedding_positive"]] == ranked[::-1][:4]
        assert [t["token"] for t in vec["embedding_negative"]] == [
            tokenizer.decode([t]) for t in ranked[:4]
        ]
        rows = x[:, 1:].reshape(-1, 32)
        projections = rows @ vector
        cosine = (rows - rows.mean(0)) @ vector / (rows - rows.mean(0)).norm(dim=-1)
        assert [c["cosine"] for c in vec["contexts_negative"]] == pytest.approx(
            (-(-cosine).topk(4).values).tolist()
        )
        assert vec["mean_contribution"] == pytest.approx(float(value * projections.pow(2).mean()))
        assert vec["mean_projection"] == pytest.approx(float(projections.mean()))
        top = vec["contexts_positive"][0]
        w, pos = divmod(int(cosine.argmax()), 11)
        assert top["projection"] == pytest.approx(float(projections[cosine.argmax()]))
        assert top["token"] == tokenizer.decode([ids[w, pos + 1]])
        assert top["context"] == tokenizer.decode(ids[w, max(0, pos + 1 - 3) : pos + 1].tolist())
        assert top["next"] == tokenizer.decode(ids[w, pos + 2 : pos + 3].tolist())


def test_the_shipped_zoo_bilinear_lm_is_read_the_same_way(tmp_path) -> None:
    from monosemantic.models.hf import load_model

    model, tokenizer = load_model("zoo:shakespeare-bilinear-l1-d128-h512-s1500-seed0")
    cfg = LayerReadingConfig(layer=0, eigenvectors=2, default_directions=2, first_position=1)
    result = read_layer(model.double(), tokenizer, windows(4, 8) + 20, tmp_path, cfg)
    assert result["hook"] == "blocks.0.mlp:input" and len(result["directions"]) == 2
    assert all(r["exactness"] < 1e-10 for r in result["directions"])


def test_decompose_with_a_layer_reads_a_converted_model(
    tmp_path, tiny_lm_folder, tiny_text, capsys
) -> None:
    from monosemantic.cli import main

    folder = tmp_path / "converted"
    assert main(["bilinear", "convert", str(tiny_lm_folder), "--out", str(folder),
                 "--data", str(tiny_text), "--context-size", "16"]) == 0  # fmt: skip
    out = tmp_path / "reading"
    args = ["bilinear", "decompose", str(folder), "--layer", "1", "--data", str(tiny_text),
            "--windows", "4", "--out", str(out)]  # fmt: skip
    assert main([*args, "--direction", f"token: {WORDS[3]}", "--eigenvectors", "2"]) == 0
    reading = json.loads((out / "layer_reading.json").read_text())
    assert reading["directions"][0]["direction"] == f"token {' ' + WORDS[3]!r}"
    assert len(reading["directions"][0]["eigenvectors"]) == 2
    assert "exactness" in capsys.readouterr().out
    for extra in (["--k-max", "5"], ["--data-dir", str(tmp_path)]):
        assert main([*args, *extra]) == 2
        assert "do not apply with --layer" in capsys.readouterr().err
    assert main(["bilinear", "decompose", str(tiny_lm_folder), "--layer", "0", "--data",
                 str(tiny_text), "--out", str(out)]) == 2  # fmt: skip
    assert "convert it first" in capsys.readouterr().err


def test_lm_features_reads_a_converted_model_in_sae_bases(
    tmp_path, tiny_lm_folder, tiny_text
) -> None:
    """The SAE-basis reading of the zoo LM, on a Hugging Face model made bilinear: exact."""
    from monosemantic.cli import main

    folder = tmp_path / "converted"
    assert main(["bilinear", "convert", str(tiny_lm_folder), "--out", str(folder),
                 "--data", str(tiny_text), "--context-size", "16"]) == 0  # fmt: skip
    out = tmp_path / "features"
    assert main(["bilinear", "lm-features", str(folder), "--data", str(tiny_text), "--layer", "1",
                 "--d-sae", "48", "--k", "4", "--sae-steps", "30", "--sae-batch-size", "64",
                 "--harvest-windows", "20", "--top-outputs", "3", "--top-pairs", "2",
                 "--out", str(out)]) == 0  # fmt: skip
    result = json.loads((out / "features.json").read_text())
    assert result["hooks"] == ["model.layers.1.mlp:input", "model.layers.1.mlp:output"]
    assert result["exactness"] < 1e-4 and len(result["top_outputs"]) == 3
