"""Dictionaries saved by sparsify and dictionary_learning, trained briefly by those packages
themselves, load here with the peer's encode and decode."""

from __future__ import annotations

import argparse
import json
import sys
import types
from pathlib import Path

import pytest
import torch

from monosemantic.sae.io import load_sae
from monosemantic.sae.peers import PeerFormatError

D, F, K, N = 16, 64, 4, 256


def data(seed: int = 0) -> torch.Tensor:
    return torch.randn(N, D, generator=torch.Generator().manual_seed(seed)) * 2 + 0.5


@pytest.fixture(scope="module")
def dictionary_learning():
    # its package imports nnsight for the activation buffer only, which these tests do not use
    sys.modules.setdefault("nnsight", types.SimpleNamespace(LanguageModel=object))
    return pytest.importorskip("dictionary_learning.trainers")


def dl_trainers(dl):
    """Every dictionary class dictionary_learning trains, with a short trainer for it."""
    from dictionary_learning.trainers.matryoshka_batch_top_k import MatryoshkaBatchTopKTrainer

    fast = {"warmup_steps": 2}
    threshold = {"threshold_start_step": 5}
    return {
        "AutoEncoder": (dl.StandardTrainer, {**fast, "sparsity_warmup_steps": 2}, "standard"),
        "AutoEncoderTopK": (dl.TopKTrainer, {**fast, "k": K, **threshold}, "topk"),
        "BatchTopKSAE": (dl.BatchTopKTrainer, {**fast, "k": K, **threshold}, "batchtopk"),
        "JumpReluAutoEncoder": (
            dl.JumpReluTrainer,
            {**fast, "sparsity_warmup_steps": 2, "bandwidth": 0.05},
            "jumprelu",
        ),
        "GatedAutoEncoder": (dl.GatedSAETrainer, {**fast, "sparsity_warmup_steps": 2}, "gated"),
        "PAnneal (AutoEncoder)": (
            dl.PAnnealTrainer,
            {**fast, "sparsity_warmup_steps": 2, "anneal_start": 10, "p_end": 0.2},
            "standard",
        ),
        "MatryoshkaBatchTopKSAE": (
            MatryoshkaBatchTopKTrainer,
            {**fast, "k": K, "group_fractions": [0.25, 0.25, 0.5], **threshold},
            "matryoshka",
        ),
    }


CLASSES = [
    "AutoEncoder",
    "AutoEncoderTopK",
    "BatchTopKSAE",
    "JumpReluAutoEncoder",
    "GatedAutoEncoder",
    "PAnneal (AutoEncoder)",
    "MatryoshkaBatchTopKSAE",
]


@pytest.mark.parametrize("name", CLASSES)
def test_dictionary_learning_dictionaries_encode_equally(tmp_path: Path, dictionary_learning, name):
    trainer_class, options, ours_name = dl_trainers(dictionary_learning)[name]
    torch.manual_seed(0)
    trainer = trainer_class(
        steps=40,
        activation_dim=D,
        dict_size=F,
        layer=0,
        lm_name="m",
        seed=0,
        device="cpu",
        **options,
    )
    for step in range(40):
        trainer.update(step, data(step))
    ae = trainer.ae.eval()
    torch.save(ae.state_dict(), tmp_path / "ae.pt")
    (tmp_path / "config.json").write_text(json.dumps({"trainer": trainer.config}))
    ours = load_sae(tmp_path)
    assert ours.architecture == ours_name
    assert ours.cfg.metadata["source"] == "dictionary_learning"
    x = data(seed=99)
    with torch.no_grad():
        f = ae.encode(x)
        torch.testing.assert_close(ours.encode(x), f, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ours.decode(f), ae.decode(f), atol=1e-5, rtol=1e-5)
    assert (f != 0).any() and (f == 0).any(), "the inputs must exercise sparsity"
    assert load_sae(tmp_path / "ae.pt").architecture == ours_name, "the file itself loads too"


def test_dictionary_learning_without_a_threshold_is_refused(tmp_path, dictionary_learning):
    trainer = dictionary_learning.BatchTopKTrainer(
        steps=10,
        activation_dim=D,
        dict_size=F,
        k=K,
        layer=0,
        lm_name="m",
        seed=0,
        device="cpu",
        warmup_steps=2,
    )
    torch.save(trainer.ae.state_dict(), tmp_path / "ae.pt")
    (tmp_path / "config.json").write_text(json.dumps({"trainer": trainer.config}))
    with pytest.raises(PeerFormatError, match="threshold was never estimated"):
        load_sae(tmp_path)


def test_a_pickled_ae_pt_is_refused(tmp_path):
    torch.save({"settings": argparse.Namespace(k=4)}, tmp_path / "ae.pt")  # needs unpickling
    with pytest.raises(PeerFormatError, match="weights_only=True"):
        load_sae(tmp_path / "ae.pt")


@pytest.fixture(scope="module")
def sparsify():
    return pytest.importorskip("sparsify")


@pytest.mark.parametrize(
    ("activation", "transcode", "skip"),
    [
        ("topk", False, False),
        ("groupmax", False, False),
        ("topk", True, False),
        ("topk", True, True),
    ],
)
def test_sparsify_coders_encode_equally(tmp_path: Path, sparsify, activation, transcode, skip):
    torch.manual_seed(0)
    cfg = sparsify.SparseCoderConfig(
        activation=activation, num_latents=F, k=K, transcode=transcode, skip_connection=skip
    )
    coder = sparsify.SparseCoder(D, cfg)
    if transcode:
        with torch.no_grad():
            coder.W_dec.normal_()
            coder.b_dec.normal_()
            if skip:
                coder.W_skip.normal_()
    opt = torch.optim.Adam(coder.parameters(), lr=1e-2)
    for step in range(30):  # trained briefly through the package's own forward and loss
        x = data(step)
        out = coder(x, y=x.flip(-1) * 0.5 if transcode else None)
        opt.zero_grad()
        out.fvu.backward()
        opt.step()
    coder.save_to_disk(tmp_path)
    ours = load_sae(tmp_path)
    assert ours.architecture == activation
    assert (ours.cfg.transcoder, ours.cfg.skip) == (transcode, skip)
    x = data(seed=99)
    with torch.no_grad():
        top_acts, top_indices, _ = coder.encode(x)
        dense = torch.zeros(N, F).scatter(1, top_indices, top_acts)
        torch.testing.assert_close(ours.encode(x), dense, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ours(x), coder(x).sae_out, atol=1e-5, rtol=1e-5)


def test_info_reads_a_peer_dictionary(tmp_path: Path, sparsify, capsys) -> None:
    from monosemantic.cli import main

    sparsify.SparseCoder(D, sparsify.SparseCoderConfig(num_latents=F, k=K)).save_to_disk(tmp_path)
    assert main(["info", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert '"architecture": "topk"' in out and f"W_dec        ({F}, {D}) float32" in out


def test_eval_takes_the_hook_of_a_peer_dictionary_from_the_command_line(tmp_path, sparsify):
    from monosemantic.cli import build_parser

    sparsify.SparseCoder(D, sparsify.SparseCoderConfig(num_latents=F, k=K)).save_to_disk(tmp_path)
    args = build_parser().parse_args(["eval", str(tmp_path), "--hook", "model.layers.2.mlp:output"])
    assert args.hook == ["model.layers.2.mlp:output"]
    assert load_sae(tmp_path).cfg.hook == "", "sparsify records its hookpoint only as a folder name"


def test_eval_a_sparsify_skip_transcoder_at_the_points_given(
    tmp_path, sparsify, tiny_lm_folder, tiny_text, capsys
):
    """sparsify names the hookpoint only by folder: --hook and --hook-out say where it reads
    and what it replaces; without --hook-out the transcoder is refused, saying so."""
    from cli_args import text_args

    from monosemantic.cli import main

    torch.manual_seed(0)
    cfg = sparsify.SparseCoderConfig(num_latents=64, k=K, transcode=True, skip_connection=True)
    sparsify.SparseCoder(32, cfg).save_to_disk(tmp_path / "tc")  # the tiny Llama's width
    args = text_args(tiny_lm_folder, tiny_text)
    args[args.index("--hook") + 1] = "model.layers.0.mlp:input"
    assert main(["eval", str(tmp_path / "tc"), *args]) == 2
    assert "give it with --hook-out" in capsys.readouterr().err
    args += ["--hook-out", "model.layers.0.mlp:output"]
    assert main(["eval", str(tmp_path / "tc"), *args]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["fvu"] > 0 and "loss_recovered" in metrics
