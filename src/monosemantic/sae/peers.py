"""Reading the dictionaries other libraries save: EleutherAI sparsify and dictionary_learning.

Each reader maps the peer's tensors and conventions onto one of our architectures so that
``encode`` and ``decode`` give the peer's outputs (tested against the installed packages):

sparsify, a folder with ``cfg.json`` (activation, k, num_latents, transcode, skip_connection …)
and ``sae.safetensors`` (``encoder.weight [F, d]``, ``encoder.bias``, ``W_dec [F, d]``, ``b_dec``):
    a = ReLU((x − b_dec) Wᵀ + b), the top k (``topk``) or each group's max (``groupmax``),
    x̂ = f W_dec + b_dec. A transcoder (``transcode``: the hookpoint module's input → its
    output) does not subtract b_dec before encoding, as ours; a skip transcoder adds x W_skipᵀ.
    sparsify names the hookpoint only by the folder, so a transcoder's points are left unknown
    (give them to ``monosemantic eval`` with --hook and --hook-out).

dictionary_learning, a file ``ae.pt`` holding a plain state dict (read with
``torch.load(weights_only=True)`` and nothing else: no class is unpickled) and usually a
``config.json`` beside it; the class is recognised from the tensor names:
    AutoEncoder      bias, encoder.{weight,bias}, decoder.weight [d, F]    -> standard
    AutoEncoderTopK  b_dec, k, threshold, encoder.*, decoder.weight        -> topk (per-row top k,
                     its default; its optional threshold is ignored)
    BatchTopKSAE     the same names, config dict_class BatchTopKSAE        -> batchtopk (threshold)
    MatryoshkaBatchTopKSAE  W_enc, b_enc, W_dec, b_dec, k, threshold, group_sizes -> matryoshka
    JumpReluAutoEncoder     W_enc, b_enc, W_dec, b_dec, threshold [F]      -> jumprelu (it encodes
                     x without subtracting b_dec: folded into b_enc)
    GatedAutoEncoder decoder_bias, r_mag, gate_bias, mag_bias, encoder.weight, decoder.weight
                                                                           -> gated
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from monosemantic.sae.base import UNKNOWN_HOOK, SAEConfig
from monosemantic.sae.registry import config

SPARSIFY_WEIGHTS = "sae.safetensors"
DICTIONARY_LEARNING_WEIGHTS = "ae.pt"


class PeerFormatError(ValueError):
    """A peer library's files that cannot be read as one of our architectures."""


def is_sparsify(folder: Path) -> bool:
    return (folder / SPARSIFY_WEIGHTS).is_file() and (folder / "cfg.json").is_file()


def is_dictionary_learning(path: Path) -> bool:
    return (
        path.name == DICTIONARY_LEARNING_WEIGHTS or (path / DICTIONARY_LEARNING_WEIGHTS).is_file()
    )


def from_sparsify(
    raw: dict[str, Any], weights: dict[str, torch.Tensor], folder: Path
) -> tuple[SAEConfig, dict[str, torch.Tensor]]:
    """Our config and tensors (``export_state`` names) for a sparsify ``SparseCoder`` folder:
    its cfg.json (``raw``) and sae.safetensors (``weights``); a topk or groupmax SAE or
    transcoder (with its skip connection)."""
    skip = bool(raw.get("skip_connection")) or "W_skip" in weights
    transcoder = bool(raw.get("transcode")) or skip
    needed = {"encoder.weight", "encoder.bias", "W_dec", "b_dec"} | ({"W_skip"} if skip else set())
    missing = sorted(needed - set(weights))
    if missing:
        raise PeerFormatError(f"{folder / SPARSIFY_WEIGHTS} lacks {missing}")
    activation = raw.get("activation", "topk")
    if activation not in ("topk", "groupmax"):
        raise PeerFormatError(
            f"{folder}/cfg.json: activation {activation!r} is not topk or groupmax"
        )
    d_sae, d_in = weights["encoder.weight"].shape
    w_enc = weights["encoder.weight"].T
    dtype = str(w_enc.dtype).removeprefix("torch.")
    metadata = {"source": "sparsify", "sparsify_cfg": raw}
    cfg = config(
        activation,
        d_in=int(d_in),
        d_sae=int(d_sae),
        k=int(raw["k"]),
        dtype=dtype,
        metadata=metadata,
        hook_out=UNKNOWN_HOOK if transcoder else "",
        skip=skip,
    )
    names = {"W_enc": "encoder.weight", "b_enc": "encoder.bias", "W_dec": "W_dec", "b_dec": "b_dec"}
    tensors = {ours: weights[theirs] for ours, theirs in names.items()}
    tensors["W_enc"] = w_enc
    if skip:
        tensors["W_skip"] = weights["W_skip"]
    return cfg, tensors


def dictionary_learning_file(path: Path) -> Path:
    """The ``ae.pt`` that ``path`` names or holds."""
    return path if path.name == DICTIONARY_LEARNING_WEIGHTS else path / DICTIONARY_LEARNING_WEIGHTS


def from_dictionary_learning(file: Path) -> tuple[SAEConfig, dict[str, torch.Tensor]]:
    """Our config and tensors (``export_state`` names) for a dictionary_learning ``ae.pt``."""
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for a file it refuses or cannot read
        raise PeerFormatError(
            f"{file} is not a plain state dict that loads with weights_only=True "
            f"({type(err).__name__}); it is not unpickled any further"
        ) from None
    if not isinstance(state, dict):
        raise PeerFormatError(f"{file} holds a {type(state).__name__}, not a state dict")
    trainer = _dictionary_learning_config(file.parent)
    metadata: dict[str, Any] = {"source": "dictionary_learning", "trainer": trainer}
    keys = set(state)
    if {"decoder_bias", "r_mag", "gate_bias", "mag_bias"} <= keys:
        w_enc = state["encoder.weight"].T
        name, fields = "gated", {}
        mapped = {
            "W_enc": w_enc,
            "W_dec": state["decoder.weight"].T,
            "b_dec": state["decoder_bias"],
            "b_gate": state["gate_bias"],
            "b_mag": state["mag_bias"],
            "r_mag": state["r_mag"],
        }
    elif "group_sizes" in keys:
        widths = torch.cumsum(state["group_sizes"], 0).tolist()
        name, fields = "matryoshka", {"k": int(state["k"]), "prefix_widths": widths[:-1] or None}
        mapped = {n: state[n] for n in ("W_enc", "b_enc", "W_dec", "b_dec")}
        mapped["threshold"] = _global_threshold(state, file)
    elif "W_enc" in keys and state["threshold"].ndim == 1:
        name, fields = "jumprelu", {}
        mapped = {n: state[n] for n in ("W_enc", "W_dec", "b_dec", "threshold")}
        mapped["b_enc"] = state["b_enc"] + state["b_dec"] @ state["W_enc"]  # it reads x
    elif "k" in keys:
        batch = trainer.get("dict_class") == "BatchTopKSAE"
        name, fields = ("batchtopk" if batch else "topk"), {"k": int(state["k"])}
        mapped = {
            "W_enc": state["encoder.weight"].T,
            "b_enc": state["encoder.bias"],
            "W_dec": state["decoder.weight"].T,
            "b_dec": state["b_dec"],
        }
        if batch:
            mapped["threshold"] = _global_threshold(state, file)
    elif {"bias", "encoder.weight", "encoder.bias", "decoder.weight"} <= keys:
        name, fields = "standard", {}
        mapped = {
            "W_enc": state["encoder.weight"].T,
            "b_enc": state["encoder.bias"],
            "W_dec": state["decoder.weight"].T,
            "b_dec": state["bias"],
        }
    else:
        raise PeerFormatError(
            f"{file}: tensors {sorted(keys)} match no dictionary_learning class this package "
            "reads (AutoEncoder, AutoEncoderTopK, BatchTopKSAE, MatryoshkaBatchTopKSAE, "
            "JumpReluAutoEncoder, GatedAutoEncoder)"
        )
    d_in, d_sae = mapped["W_enc"].shape
    dtype = str(mapped["W_enc"].dtype).removeprefix("torch.")
    cfg = config(name, d_in=int(d_in), d_sae=int(d_sae), dtype=dtype, metadata=metadata, **fields)
    return cfg, mapped


def _global_threshold(state: dict[str, torch.Tensor], file: Path) -> torch.Tensor:
    """A BatchTopK-style scalar threshold as SAELens's [d_sae] layout (what import_state reads).
    Never estimated (−1) means dictionary_learning itself encodes with ReLU alone: refused."""
    theta = state["threshold"].reshape(())
    if float(theta) < 0:
        raise PeerFormatError(
            f"{file}: the inference threshold was never estimated (threshold={float(theta)}; it "
            "is set after threshold_start_step steps), so dictionary_learning would encode with "
            "ReLU alone; train it longer or load it with its own package"
        )
    width = state["W_enc"].shape[1] if "W_enc" in state else state["encoder.weight"].shape[0]
    return theta.expand(width)


def _dictionary_learning_config(folder: Path) -> dict[str, Any]:
    """The ``trainer`` settings of the config.json beside ae.pt, or {} when there is none."""
    path = folder / "config.json"
    if not path.is_file():
        return {}
    try:
        trainer = json.loads(path.read_text()).get("trainer", {})
    except (json.JSONDecodeError, AttributeError) as err:
        raise PeerFormatError(f"{path} is not dictionary_learning's config.json: {err}") from None
    return {k: v for k, v in trainer.items() if isinstance(v, (str, int, float, bool, type(None)))}
