"""The zoo's Shakespeare transformers: tokenizer, architecture, hook points, save/load, training."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch

from monosemantic.config import ConfigError
from monosemantic.hooks import capture
from monosemantic.models.zoo.tokenizer import load_tokenizer, save_tokenizer, train_tokenizer
from monosemantic.models.zoo.transformer import (
    LMConfig,
    build_lm,
    evaluate_lm,
    load_lm,
    mlp_weight_count,
    save_lm,
    shakespeare_corpus,
    train_lm,
)

WORDS = "the king queen is and of to my lord love death night day sword crown thou thee".split()


def tiny_texts(n_docs: int = 4, words: int = 400) -> list[str]:
    rng = random.Random(0)
    return [" ".join(rng.choice(WORDS) for _ in range(words)) + "." for _ in range(n_docs)]


def tiny(**overrides) -> LMConfig:
    base = dict(
        d_model=16, n_heads=2, context_size=16, vocab_size=300, steps=60, batch_size=8,
        warmup_steps=5, lr=1e-2, val_documents=1,
    )  # fmt: skip
    return LMConfig(**{**base, **overrides})


def test_tokenizer_round_trips_and_is_deterministic(tmp_path):
    texts = tiny_texts()
    tok = train_tokenizer(texts, vocab_size=300)
    again = train_tokenizer(texts, vocab_size=300)
    assert tok.get_vocab() == again.get_vocab()
    assert (tok.bos_token_id, tok.eos_token_id) == (0, 1)
    for s in ["the king is dead", "  Ham. To be, or — not? é ü\n\tx", texts[0][:200]]:
        ids = tok(s, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == s
    merged = tok("the king", add_special_tokens=False)["input_ids"]
    assert len(merged) < len("the king")  # BPE merged frequent words
    save_tokenizer(tok, tmp_path)
    loaded = load_tokenizer(tmp_path)
    assert loaded("thou thee")["input_ids"] == tok("thou thee")["input_ids"]
    assert loaded.bos_token_id == 0
    with pytest.raises(FileNotFoundError, match="zoo train lm"):
        load_tokenizer(tmp_path / "missing")


def test_default_widths_hold_mlp_weights_equal():
    counts = {m: mlp_weight_count(build_lm(LMConfig(mlp=m))) for m in ("relu", "gelu", "bilinear")}
    d = 128
    assert counts["bilinear"] == 3 * d * 4 * d == counts["gelu"]  # h_gelu = 1.5 · h_bilinear
    assert counts["relu"] == 2 * d * 512


@pytest.mark.parametrize("mlp", ["relu", "gelu", "bilinear"])
def test_causal_and_hook_points(mlp):
    model = build_lm(tiny(mlp=mlp, n_layers=2)).eval()
    ids = torch.randint(2, 300, (2, 12))
    changed = ids.clone()
    changed[:, 7] = (ids[:, 7] + 1) % 300
    with torch.no_grad():
        a, b = model(input_ids=ids), model(changed)
    assert a.shape == (2, 12, 300)
    assert torch.equal(a[:, :7], b[:, :7])  # earlier positions cannot see token 7
    assert not torch.allclose(a[:, 7], b[:, 7])
    points = ["blocks.0.mlp:input", "blocks.0.mlp:output", "blocks.0:output", "blocks.1:output"]
    with torch.no_grad(), capture(model, points) as acts:
        model(input_ids=ids)
    block = model.blocks[0]
    # The MLP reads the normalised residual and the block adds its output to the residual.
    resid_mid = acts["blocks.0:output"] - acts["blocks.0.mlp:output"]
    torch.testing.assert_close(acts["blocks.0.mlp:input"], block.mlp_norm(resid_mid))
    torch.testing.assert_close(acts["blocks.0.mlp:output"], block.mlp(acts["blocks.0.mlp:input"]))


def test_save_load_exact_and_errors(tmp_path):
    cfg = tiny(mlp="bilinear")
    model = build_lm(cfg)
    tok = train_tokenizer(tiny_texts(), vocab_size=300)
    save_lm(model, tok, tmp_path, {"val_loss": 1.0})
    loaded, record = load_lm(tmp_path)
    ids = torch.randint(0, 300, (3, 16))
    with torch.no_grad():
        assert torch.equal(model.eval()(ids), loaded(ids))
    assert record["config"]["mlp"] == "bilinear" and record["metrics"]["val_loss"] == 1.0
    with pytest.raises(FileNotFoundError, match="zoo train lm"):
        load_lm(tmp_path / "nothing")
    with pytest.raises(ValueError, match="ctx <= 16"):
        loaded(torch.zeros(1, 17, dtype=torch.long))


def test_config_errors_and_schedule():
    with pytest.raises(ConfigError, match="mlp='tanh'"):
        LMConfig(mlp="tanh")
    with pytest.raises(ConfigError, match=r"n_heads=3 .*divisor of d_model=128"):
        LMConfig(n_heads=3)
    cfg = LMConfig(lr=1.0, steps=110, warmup_steps=10)
    assert cfg.lr_at(0) == pytest.approx(0.1) and cfg.lr_at(9) == pytest.approx(1.0)
    assert cfg.lr_at(10) == pytest.approx(1.0) and cfg.lr_at(110) == pytest.approx(0.1)
    assert cfg.lr_at(60) == pytest.approx(0.55)  # halfway down the cosine


def test_training_lowers_loss_and_is_seeded():
    cfg = tiny(mlp="bilinear", bf16=False, steps=30)
    corpus = shakespeare_corpus(cfg, texts=tiny_texts())
    assert corpus.train.shape[1] == 16 and len(corpus.val) > 0
    start = evaluate_lm(build_lm(cfg), corpus.val)
    assert start == pytest.approx(math.log(300), rel=0.05)  # near-uniform at initialisation
    _, metrics = train_lm(cfg, corpus, progress=False)
    assert metrics["val_loss"] < start - 1.0
    short = tiny(mlp="bilinear", bf16=False, steps=6, warmup_steps=2)
    a, _ = train_lm(short, corpus, progress=False)
    b, _ = train_lm(short, corpus, progress=False)
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(p, q), name


def test_cli_maps_options_onto_the_config():
    from monosemantic.cli import build_parser
    from monosemantic.config import from_arguments

    parser = build_parser()
    args = parser.parse_args(
        ["zoo", "train", "lm", "--mlp", "gelu", "--n-layers", "2", "--no-bf16"]
    )
    cfg = from_arguments(LMConfig, args)
    assert (cfg.mlp, cfg.n_layers, cfg.bf16, cfg.hidden) == ("gelu", 2, False, 6 * 128)
    args = parser.parse_args(
        ["bilinear", "lm-features", "some/model", "--out", "x", "--d-sae", "64"]
    )
    assert args.d_sae == 64 and args.model == "some/model"
    with pytest.raises(SystemExit):
        parser.parse_args(["zoo", "train", "lm", "--mlp"])


def test_get_lm_trains_once_then_loads(tmp_path):
    from monosemantic.models.zoo.transformer import get_lm, zoo_folder

    cfg = tiny(steps=3, warmup_steps=1, bf16=False)
    calls = []

    def corpus_fn(c: LMConfig):
        calls.append(c)
        return shakespeare_corpus(c, texts=tiny_texts())

    model, tok, record = get_lm(cfg, root=tmp_path, corpus_fn=corpus_fn)
    again, _, _ = get_lm(cfg, root=tmp_path, corpus_fn=corpus_fn)
    assert len(calls) == 1 and zoo_folder(cfg, tmp_path).name == cfg.name
    assert record["metrics"]["val_loss"] > 0 and tok.bos_token_id == 0
    ids = torch.randint(0, 300, (1, 8))
    with torch.no_grad():
        assert torch.equal(model(ids), again(ids))


SHIPPED_LMS = [
    "shakespeare-relu-l1-d128-h512-s1500-seed0",
    "shakespeare-bilinear-l1-d128-h512-s1500-seed0",
]


@pytest.mark.parametrize("name", SHIPPED_LMS)
def test_the_shipped_lm_loads_by_zoo_name_and_matches_its_record(tmp_path, monkeypatch, name):
    """``zoo:NAME`` finds the float16 weights inside the package when the user's zoo (here an
    empty folder) lacks them; its held-out loss is the one recorded in float32 training."""
    from monosemantic.models.hf import load_model
    from monosemantic.models.zoo import SHIPPED
    from monosemantic.models.zoo.transformer import find_lm

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert find_lm(name) == SHIPPED / name
    record = json.loads((SHIPPED / name / "config.json").read_text())
    assert record["dtype"] == "torch.float16" and record["config"]["mlp"] in name
    model, tokenizer = load_model(f"zoo:{name}")
    assert next(model.parameters()).dtype == torch.float32
    cfg = LMConfig.from_dict(record["config"])
    corpus = shakespeare_corpus(cfg, tokenizer=tokenizer)
    val_loss = evaluate_lm(model, corpus.val)
    assert val_loss == pytest.approx(record["metrics"]["val_loss"], abs=2e-3)
    with pytest.raises(FileNotFoundError, match=f"shipped: .*'{name}'"):
        find_lm("shakespeare-relu-l9-nothing")
