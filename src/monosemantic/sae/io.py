"""Save and load SAEs in SAELens's on-disk layout (SAELens ≥ 6); safetensors and JSON, no pickle.

    folder/cfg.json                  SAELens config (d_in, d_sae, dtype, architecture, ...) whose
                                     ``metadata`` also holds our full SAEConfig under "monosemantic"
    folder/sae_weights.safetensors   tensors under SAELens names (W_enc [d_in, d_sae], ...)
    folder/sparsity.safetensors      optional: "sparsity", log10 feature density [d_sae]

``sae_lens.SAE.load_from_disk(folder)`` loads what ``save_sae`` writes: BatchTopK as SAELens's
"jumprelu" with θ broadcast to [d_sae] (as SAELens saves it), JumpReLU's log θ as ``threshold``.
``load_sae`` restores our exact SAEConfig from the metadata, and reads folders SAELens wrote
(``sae.save_model``) for every SAELens architecture an architecture declares in its
``saelens_reads``; their ``apply_b_dec_to_input=False`` and ``rescale_acts_by_decoder_norm=True``
are folded into the weights, which leaves the SAE's function unchanged. Nothing here names an
architecture: each declares its SAELens name, fields and tensor mapping in its own file.

A transcoder is saved as SAELens's transcoder of its architecture (``transcoder``,
``skip_transcoder``, ``jumprelu_transcoder``, ``jumprelu_skip_transcoder``: sae-lens ≥ 6 loads
those), with ``d_out``, ``hook_name_out`` and ``apply_b_dec_to_input=False``; an architecture
SAELens has no transcoder for is written as ``NAME_transcoder``, which SAELens refuses by name.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from monosemantic.config import ConfigError
from monosemantic.files import atomic_write, finite
from monosemantic.sae import peers
from monosemantic.sae.base import SAE, UNKNOWN_HOOK, SAEConfig
from monosemantic.sae.registry import ARCHITECTURES, config_from_dict, create, reading_saelens

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
SPARSITY_FILE = "sparsity.safetensors"
META_KEY = "monosemantic"
"""Key in cfg.json's ``metadata`` holding our SAEConfig."""
FORMAT_VERSION = "6.0.0"
"""The SAELens format version written; SAELens treats configs without one as pre-6 and renames."""


class SAEFormatError(ValueError):
    """A folder whose files are unreadable or do not describe a loadable SAE."""


def save_sae(sae: SAE, folder: str | Path, *, sparsity: torch.Tensor | None = None) -> Path:
    """Write ``sae`` to ``folder`` (created if needed); returns the folder.

    ``sparsity``: log10 feature density [d_sae], as SAELens stores it; without it a stale
    sparsity file is removed. Each file is written to a temporary name and renamed, cfg.json last.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {name: t.detach().cpu().contiguous() for name, t in sae.export_state().items()}
    atomic_write(folder / WEIGHTS_FILE, lambda path: save_file(state, path))
    if sparsity is not None:
        if tuple(sparsity.shape) != (sae.d_sae,):
            raise ValueError(
                f"sparsity must be log10 feature densities of shape ({sae.d_sae},), "
                f"got {tuple(sparsity.shape)}"
            )
        density = {"sparsity": sparsity.detach().float().cpu().contiguous()}
        atomic_write(folder / SPARSITY_FILE, lambda path: save_file(density, path))
    else:
        (folder / SPARSITY_FILE).unlink(missing_ok=True)
    try:
        text = json.dumps(finite(saelens_config(sae)), indent=2, allow_nan=False)
    except TypeError as err:
        raise TypeError(f"SAE config metadata must hold JSON values only: {err}") from None
    atomic_write(folder / CFG_FILE, lambda path: path.write_text(text))
    return folder


def load_sae(folder: str | Path) -> SAE:
    """Load an SAE written by ``save_sae`` or by SAELens's ``save_model``, or one that sparsify or
    dictionary_learning saved (``peers.py``): on CPU, in the file's dtype, in eval mode (BatchTopK
    then uses its threshold; call ``.train()`` to train it further)."""
    folder = Path(folder)
    if peers.is_dictionary_learning(folder):
        source = peers.dictionary_learning_file(folder)
        cfg, weights = peers.from_dictionary_learning(source)
    elif not folder.is_dir():
        raise FileNotFoundError(
            f"no SAE folder {folder}: expected a directory holding {CFG_FILE} and {WEIGHTS_FILE} "
            f"(SAELens layout), {peers.SPARSIFY_WEIGHTS} (sparsify) or "
            f"{peers.DICTIONARY_LEARNING_WEIGHTS} (dictionary_learning)"
        )
    elif not (folder / WEIGHTS_FILE).exists() and peers.is_sparsify(folder):
        source = folder / peers.SPARSIFY_WEIGHTS
        raw = _read_json(folder / CFG_FILE)
        cfg, weights = peers.from_sparsify(raw, _read_safetensors(source), folder)
    else:
        source = folder / WEIGHTS_FILE
        cfg, weights = _from_our_layout(folder)
    sae = create(cfg)
    _check_weights(sae, weights, source)
    sae.import_state({name: t.contiguous() for name, t in weights.items()})
    return sae.eval()


def _from_our_layout(folder: Path) -> tuple[SAEConfig, dict[str, torch.Tensor]]:
    """Config and tensors of a folder in SAELens's layout, written here or by SAELens."""
    raw = _read_json(folder / CFG_FILE)
    weights = _read_safetensors(folder / WEIGHTS_FILE)
    ours = (raw.get("metadata") or {}).get(META_KEY)
    if ours is not None:
        try:
            cfg = config_from_dict(ours)
        except (ConfigError, TypeError) as err:
            raise SAEFormatError(
                f"{folder / CFG_FILE}: its metadata.{META_KEY} is not a valid SAE config: {err}"
            ) from None
        if (raw.get("d_in"), raw.get("d_sae")) != (cfg.d_in, cfg.d_sae):
            raise SAEFormatError(
                f"{folder / CFG_FILE}: d_in={raw.get('d_in')}, d_sae={raw.get('d_sae')} disagree "
                f"with its metadata's d_in={cfg.d_in}, d_sae={cfg.d_sae}"
            )
        return cfg, weights
    return _from_saelens(raw, weights, folder)


def load_sparsity(folder: str | Path) -> torch.Tensor | None:
    """log10 feature density [d_sae] from ``folder``, or None when the folder has none."""
    path = Path(folder) / SPARSITY_FILE
    if not path.exists():
        return None
    tensors = _read_safetensors(path)
    if "sparsity" not in tensors:
        raise SAEFormatError(f"{path} has no 'sparsity' tensor (found {sorted(tensors)})")
    return tensors["sparsity"]


def saelens_config(sae: SAE) -> dict[str, Any]:
    """cfg.json's content: SAELens's fields plus our SAEConfig in ``metadata``."""
    cfg = sae.cfg
    architecture = sae.saelens_architecture or cfg.architecture
    out: dict[str, Any] = {
        "architecture": transcoder_name(architecture, cfg.skip) if cfg.transcoder else architecture,
        "d_in": cfg.d_in,
        "d_sae": cfg.d_sae,
        "dtype": cfg.dtype,
        "device": "cpu",
        "apply_b_dec_to_input": not cfg.transcoder,
        "normalize_activations": "layer_norm" if cfg.standardize else "none",
        "reshape_activations": "none",
    }
    transcoding = {"d_out": cfg.d_out, "hook_name_out": cfg.hook_out} if cfg.transcoder else {}
    out.update(transcoding)
    out.update(type(sae).saelens_fields(cfg))
    out["metadata"] = {
        **cfg.metadata,
        "sae_lens_version": FORMAT_VERSION,
        "model_name": cfg.model or None,
        "hook_name": cfg.hook or None,
        **({"hook_name_out": cfg.hook_out} if cfg.transcoder else {}),
        META_KEY: cfg.to_dict(),
    }
    return out


SAELENS_TRANSCODERS = {"standard": "transcoder", "jumprelu": "jumprelu_transcoder"}
"""SAELens's transcoder of each SAE architecture it has one for."""


def transcoder_name(architecture: str, skip: bool) -> str:
    """The cfg.json architecture of a transcoder whose SAE form SAELens calls ``architecture``."""
    name = SAELENS_TRANSCODERS.get(architecture, f"{architecture}_transcoder")
    return name.replace("transcoder", "skip_transcoder") if skip else name


def _from_saelens(
    raw: dict[str, Any], weights: dict[str, torch.Tensor], folder: Path
) -> tuple[SAEConfig, dict[str, torch.Tensor]]:
    """Our config and weights (under ``export_state`` names) for a folder SAELens wrote."""
    where = folder / CFG_FILE
    name = raw.get("architecture")
    cls = reading_saelens(str(name))
    if cls is None:
        readable = sorted(n for c in ARCHITECTURES.values() for n in c.saelens_reads)
        raise SAEFormatError(
            f"{where}: architecture {name!r} cannot be loaded; "
            f"supported SAELens architectures: {', '.join(readable)}"
        )
    missing = [field for field in ("d_in", "d_sae") if field not in raw]
    if missing:
        raise SAEFormatError(f"{where} lacks {missing}; is it an SAELens ≥ 6 config?")
    supported = {
        "normalize_activations": ("none", None, "layer_norm"),
        "reshape_activations": ("none", None),
    }
    for option, values in supported.items():
        if raw.get(option, "none") not in values:
            raise SAEFormatError(
                f"{where}: {option}={raw[option]!r} is not supported; fold it into the weights "
                "with SAELens first (e.g. fold_activation_norm_scaling_factor) and save again"
            )
    weights = cls.weights_from_saelens(dict(weights))
    if raw.get("rescale_acts_by_decoder_norm"):
        _fold_decoder_norms(weights)
    metadata = dict(raw.get("metadata") or {})
    transcoding: dict[str, Any] = {}
    if str(name).endswith("transcoder"):  # it reads x itself and decodes to d_out
        transcoding = {
            "d_out": int(raw.get("d_out") or raw["d_in"]),
            "hook_out": raw.get("hook_name_out") or metadata.get("hook_name_out") or UNKNOWN_HOOK,
            "skip": "skip" in str(name),
        }
    elif not raw.get("apply_b_dec_to_input", True):
        weights = cls.shift_encoder_bias(weights, weights["b_dec"] @ weights["W_enc"])
    try:
        cfg = cls.config_class(
            d_in=int(raw["d_in"]),
            d_sae=int(raw["d_sae"]),
            dtype=str(raw.get("dtype", "float32")).removeprefix("torch."),
            hook=metadata.get("hook_name") or raw.get("hook_name") or "",
            model=metadata.get("model_name") or raw.get("model_name") or "",
            metadata=metadata,
            standardize=raw.get("normalize_activations") == "layer_norm",
            **transcoding,
            **cls.config_from_saelens(raw),
        )
    except (ConfigError, ValueError) as err:
        raise SAEFormatError(f"{where}: {err}") from None
    return cfg, weights


def _fold_decoder_norms(weights: dict[str, torch.Tensor]) -> None:
    """SAELens's rescale_acts_by_decoder_norm scores pre·‖W_dec,i‖ and decodes f/‖W_dec,i‖ ·
    W_dec,i; scaling encoder columns and b_enc by the norms and dividing decoder rows by them is
    the same function with plain pre and decode."""
    norms = weights["W_dec"].norm(dim=1)
    weights["W_dec"] = weights["W_dec"] / norms[:, None]
    weights["W_enc"] = weights["W_enc"] * norms
    if "b_enc" in weights:
        weights["b_enc"] = weights["b_enc"] * norms


def _check_weights(sae: SAE, weights: dict[str, torch.Tensor], source: Path) -> None:
    expected = {name: tuple(t.shape) for name, t in sae.export_state().items()}
    problems = [f"missing {name}" for name in expected if name not in weights]
    problems += [f"unexpected {name}" for name in weights if name not in expected]
    problems += [
        f"{name} has shape {tuple(t.shape)}, expected {expected[name]}"
        for name, t in weights.items()
        if name in expected and tuple(t.shape) != expected[name]
    ]
    if problems:
        cfg = sae.cfg
        raise SAEFormatError(
            f"{source} does not match its config (architecture={cfg.architecture}, "
            f"d_in={cfg.d_in}, d_sae={cfg.d_sae}): {'; '.join(problems)}"
        )


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; an SAE folder needs {CFG_FILE}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SAEFormatError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise SAEFormatError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing")
    try:
        return load_file(path)
    except SafetensorError as err:
        raise SAEFormatError(f"{path} is not a readable safetensors file: {err}") from None
