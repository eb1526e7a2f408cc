"""One bilinear MLP of a language model read from its weights: the interaction matrix Q(u) of an
output direction u, its eigenvectors, and each eigenvector read through the model.

For a bilinear MLP y = P((W x) ⊙ (V x)) reading x = norm(h) (h the residual stream) and an output
direction u (a token's unembedding through the final norm, an SAE latent's decoder row, any
vector), uᵀy = xᵀ Q(u) x = Σ_i λ_i (v_i · x)² exactly. An eigenvector v_i is an input pattern:
when x aligns with it (either sign), the MLP writes λ_i (v_i · x)² along u. Each top eigenvector
is read two ways:

- through the embeddings: the tokens of the text whose embedding, put through this layer's norm,
  projects most on v_i (the direct path from the token to the MLP, attention and earlier layers
  aside);
- through the activations: the held-out positions whose MLP input, less its mean over the text,
  points most along ±v_i (cosine), with their context, and v_i's mean contribution
  λ_i·E[(v_i · x)²] to uᵀy on that text (exact, uncentred). Centred, because a few residual
  dimensions are large at every position; a cosine, because a few positions (the first piece of a
  word split in pieces, in SmolLM2) have twice the usual norm and would top every list.

Works for converted Hugging Face models (``monosemantic bilinear convert``) and the zoo's bilinear
transformers alike.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from monosemantic.bilinear.tensor import layer_weights
from monosemantic.config import check
from monosemantic.data.harvest import forward_activations
from monosemantic.data.tokens import excluded_positions
from monosemantic.files import atomic_write, write_json
from monosemantic.models.bilinear_lm import as_bilinear_mlp
from monosemantic.models.layers import BilinearMLP
from monosemantic.sae.io import load_sae

NORM_NAMES = ("post_attention_layernorm", "mlp_norm")
"""The attribute holding the norm before the MLP: Hugging Face Llama-family, the zoo's blocks."""


@dataclass
class LayerReadingConfig:
    """What ``bilinear decompose MODEL --layer L`` reads. Validated at construction."""

    layer: int = 0
    """The block whose MLP is read."""
    eigenvectors: int = 10
    """Eigenvectors read per direction (largest |λ| first)."""
    default_directions: int = 5
    """Without --direction: the tokens whose direct logit the MLP moves most on the text
    (largest mean |u_tᵀy|)."""
    windows: int = 64
    """Held-out windows whose MLP inputs read the eigenvectors (special tokens left out)."""
    first_position: int = 8
    """Positions before this one are left out too: a window's first tokens sit next to its BOS
    attention sink and carry outsized activations (SmolLM2's first one has one residual
    dimension 3× its usual size) that would top every list."""
    shown: int = 8
    """Tokens and contexts shown per eigenvector end."""
    context: int = 6
    """Tokens of context shown before each top position."""

    def __post_init__(self) -> None:
        check(self.layer >= 0, "layer", self.layer, ">= 0")
        for name in ("eigenvectors", "default_directions", "windows", "shown"):
            value = getattr(self, name)
            check(isinstance(value, int) and value > 0, name, value, "a positive integer")
        check(self.context >= 0, "context", self.context, ">= 0")
        check(self.first_position >= 0, "first_position", self.first_position, ">= 0")


@dataclass
class BilinearLayer:
    """A language model's bilinear MLP and what surrounds it.

    mlp: the MLP as a ``BilinearMLP`` (d_model -> d_model; a converted Hugging Face MLP's
    weights copied into one); norm: the module whose output the
    MLP reads; hook: its input's hook point; token_inputs [vocab, d] each token's embedding put
    through that norm (float64); unembed [vocab, d] the unembedding rows times the final norm's
    weight (u_t for token t's logit)."""

    mlp: BilinearMLP
    norm: nn.Module
    hook: str
    token_inputs: torch.Tensor
    unembed: torch.Tensor


def _blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of each module with an ``mlp`` child: the residual blocks, in order."""
    named = model.named_modules()
    return [(name, m) for name, m in named if isinstance(getattr(m, "mlp", None), nn.Module)]


def _final_parts(model: Any) -> tuple[Any, Any, Any]:
    """(input embedding, output embedding, final norm) of a zoo TinyLM or a Hugging Face LM."""
    if hasattr(model, "get_output_embeddings"):
        base = getattr(model, "model", model)
        return model.get_input_embeddings(), model.get_output_embeddings(), base.norm
    return model.embed, model.unembed, model.norm


def bilinear_layer(model: nn.Module, layer: int) -> BilinearLayer:
    """Block ``layer``'s bilinear MLP of a zoo bilinear LM or a converted Hugging Face model;
    a clear error for any other MLP."""
    blocks = _blocks(model)
    if not 0 <= layer < len(blocks):
        raise ValueError(f"layer={layer} is invalid: the model has {len(blocks)} blocks")
    name, block = blocks[layer]
    mlp: Any = block.mlp
    if isinstance(mlp, BilinearMLP):
        bilinear = mlp
    elif hasattr(mlp, "act_fn"):
        bilinear = as_bilinear_mlp(mlp)
    else:
        raise ValueError(
            f"block {layer}'s MLP is a {type(mlp).__name__}, not bilinear: read a zoo bilinear "
            "LM (`zoo train lm --mlp bilinear`) or a model made bilinear by `bilinear convert`"
        )
    norm = next((getattr(block, n) for n in NORM_NAMES if hasattr(block, n)), None)
    if norm is None:
        raise ValueError(f"block {layer} has no norm before its MLP (looked for {NORM_NAMES})")
    embed, unembed, final_norm = _final_parts(model)
    with torch.no_grad():
        token_inputs = norm(embed.weight).double()
    return BilinearLayer(
        mlp=bilinear,
        norm=norm,
        hook=f"{name}.mlp:input",
        token_inputs=token_inputs,
        unembed=(unembed.weight * final_norm.weight).detach().float(),
    )


# --- the maths ----------------------------------------------------------------------------------


def interaction(mlp: BilinearMLP, u: torch.Tensor) -> torch.Tensor:
    """Q(u) = sym(Wᵀ diag(Pᵀu) V) in float64: u [d_out] -> [d_in, d_in], uᵀ MLP(x) = xᵀ Q x."""
    w, v, p = (t.double() for t in layer_weights(mlp))  # type: ignore[union-attr]
    q = w.T @ ((p.T @ u.double())[:, None] * v)
    return 0.5 * (q + q.T)


def truncation(
    values: torch.Tensor, vectors: torch.Tensor, x: torch.Tensor, readout: torch.Tensor
) -> dict[int, float]:
    """How much of the per-position readout uᵀy [rows] the top-k eigenpairs (largest |λ|
    first: values [d], vectors [d, d]) rebuild on inputs x [rows, d]: k -> 1 − FVU, for k =
    1, 10, 100 and d (1 − FVU ≈ 1 at k = d: the eigenpairs are exact)."""
    terms = values * (x @ vectors.T).pow(2)  # [rows, d]
    spread = (readout - readout.mean()).pow(2).sum()
    shares = {}
    for k in sorted({min(k, len(values)) for k in (1, 10, 100, len(values))}):
        error = (terms[:, :k].sum(-1) - readout).pow(2).sum()
        shares[k] = float(1 - error / spread)
    return shares


def eigenpairs(q: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The n eigenpairs of symmetric q [d, d] with largest |λ|: (values [n], vectors [n, d])."""
    values, vectors = torch.linalg.eigh(q)
    order = values.abs().argsort(descending=True)[:n]
    return values[order], vectors[:, order].T


# --- directions ---------------------------------------------------------------------------------


def parse_direction(spec: str, layer: BilinearLayer, tokenizer: Any) -> tuple[str, torch.Tensor]:
    """(label, u [d_model]) of a direction spec: ``token:TEXT`` (one token's unembedding through
    the final norm), ``sae:FOLDER:LATENT`` (an SAE latent's decoder row) or ``file:PATH`` (a .npy
    or whitespace-separated .txt vector)."""
    kind, _, rest = spec.partition(":")
    d = layer.unembed.shape[1]
    if kind == "token":
        ids = tokenizer.encode(rest, add_special_tokens=False)
        if len(ids) != 1:
            pieces = [tokenizer.decode([i]) for i in ids]
            raise ValueError(
                f"direction {spec!r}: {rest!r} is {len(ids)} tokens {pieces}, not one; give a "
                "single token (mind the leading space, e.g. 'token: the')"
            )
        return f"token {rest!r}", layer.unembed[ids[0]]
    if kind == "sae":
        folder, _, index = rest.rpartition(":")
        if not folder or not index.isdigit():
            raise ValueError(f"direction {spec!r}: write sae:FOLDER:LATENT, e.g. sae:runs/sae:12")
        sae = load_sae(Path(folder))
        latent = int(index)
        if sae.d_in != d or latent >= sae.d_sae:
            raise ValueError(
                f"direction {spec!r}: the SAE has d_in={sae.d_in}, d_sae={sae.d_sae}; this layer "
                f"writes d_model={d} and the latent must be < d_sae"
            )
        return f"SAE latent {latent}", sae.W_dec[latent].detach().float()
    if kind == "file":
        path = Path(rest)
        if not path.is_file():
            raise ValueError(f"direction {spec!r}: no file {path}")
        array = np.load(path, allow_pickle=False) if path.suffix == ".npy" else np.loadtxt(path)
        u = torch.as_tensor(np.asarray(array, dtype=np.float64)).flatten()
        if u.numel() != d:
            raise ValueError(f"direction {spec!r}: {u.numel()} numbers; this layer needs d={d}")
        return f"file {path.name}", u.float()
    raise ValueError(
        f"direction {spec!r}: start it with token:, sae: or file: (e.g. 'token: the', "
        "sae:FOLDER:LATENT, file:u.npy)"
    )


# --- reading through the model ------------------------------------------------------------------


@dataclass
class HeldOut:
    """The layer's MLP inputs on held-out text: x [rows, d] (float64) at the kept positions
    (window, position) [rows, 2] of windows [n, ctx]; vocabulary: the token ids of the text."""

    x: torch.Tensor
    where: torch.Tensor
    windows: torch.Tensor
    vocabulary: torch.Tensor

    @cached_property
    def centred_norms(self) -> torch.Tensor:
        """‖x − mean(x)‖ per row [rows], computed once for every eigenvector read."""
        return (self.x - self.x.mean(0)).norm(dim=-1).clamp_min(1e-12)


def held_out_inputs(
    model: nn.Module,
    layer: BilinearLayer,
    windows: torch.Tensor,
    tokenizer: Any,
    first_position: int = 0,
) -> HeldOut:
    """Harvest the MLP input of ``layer`` on ``windows`` [n, ctx], special tokens and the
    positions before ``first_position`` left out."""
    keep = ~excluded_positions(windows, tokenizer)
    keep[:, :first_position] = False
    if not keep.any():
        raise ValueError(
            f"no position of {tuple(windows.shape)} windows is left to read (special tokens and "
            f"positions < {first_position} are left out); give more text or longer windows"
        )
    xs = []
    for start in range(0, len(windows), 8):
        acts = forward_activations(model, windows[start : start + 8], [layer.hook])[layer.hook]
        xs.append(acts[keep[start : start + 8].to(acts.device)].double().cpu())
    return HeldOut(torch.cat(xs), keep.nonzero(), windows, windows[keep].unique())


def moved_tokens(layer: BilinearLayer, held: HeldOut, n: int) -> list[int]:
    """The n tokens of the text whose direct logit the MLP moves most: largest mean |u_tᵀy| over
    the held-out positions (y = MLP(x))."""
    with torch.no_grad():
        y = copy.deepcopy(layer.mlp).double()(held.x)  # [rows, d]
    u = layer.unembed[held.vocabulary].double()
    effect = torch.cat([(chunk @ y.T).abs().mean(-1) for chunk in u.split(1024)])
    return held.vocabulary[effect.topk(min(n, len(effect))).indices].tolist()


def _token(tokenizer: Any, ids: list[int]) -> str:
    return str(tokenizer.decode(ids))


def read_eigenvector(
    value: float,
    vector: torch.Tensor,
    layer: BilinearLayer,
    held: HeldOut,
    tokenizer: Any,
    cfg: LayerReadingConfig,
) -> dict[str, Any]:
    """One eigenvector v [d] of Q(u) read through the embeddings and the held-out activations."""
    by_token = layer.token_inputs[held.vocabulary] @ vector  # [text vocabulary]
    projections = held.x @ vector  # [rows]
    contribution = value * projections.pow(2)
    centred = (projections - projections.mean()) / held.centred_norms

    def tokens(order: torch.Tensor) -> list[dict[str, Any]]:
        ids = held.vocabulary[order].tolist()
        return [{"id": t, "token": _token(tokenizer, [t]), "projection": float(by_token[i])}
                for i, t in zip(order.tolist(), ids, strict=True)]  # fmt: skip

    def contexts(order: torch.Tensor) -> list[dict[str, Any]]:
        rows = []
        for r in order.tolist():
            w, pos = held.where[r].tolist()
            before = held.windows[w, max(0, pos - cfg.context) : pos].tolist()
            rows.append({
                "context": _token(tokenizer, before),
                "token": _token(tokenizer, [int(held.windows[w, pos])]),
                "next": _token(tokenizer, held.windows[w, pos + 1 : pos + 2].tolist()),
                "projection": float(projections[r]),
                "cosine": float(centred[r]),
            })  # fmt: skip
        return rows

    top = cfg.shown
    return {
        "eigenvalue": value,
        "mean_projection": float(projections.mean()),
        "mean_contribution": float(contribution.mean()),
        "embedding_positive": tokens(by_token.topk(top).indices),
        "embedding_negative": tokens((-by_token).topk(top).indices),
        "contexts_positive": contexts(centred.topk(top).indices),
        "contexts_negative": contexts((-centred).topk(top).indices),
    }


def read_direction(
    label: str,
    u: torch.Tensor,
    layer: BilinearLayer,
    held: HeldOut,
    tokenizer: Any,
    cfg: LayerReadingConfig,
) -> dict[str, Any]:
    """Q(u)'s spectrum and its top eigenvectors read; with the exactness of xᵀQx = uᵀ MLP(x) on
    the held-out inputs (max error relative to the largest |uᵀy|, float64) and how much of uᵀy
    the top eigenvectors rebuild there (``truncation``)."""
    q = interaction(layer.mlp, u)
    values, vectors = eigenpairs(q, len(q))
    x = held.x
    with torch.no_grad():
        readout = copy.deepcopy(layer.mlp).double()(x) @ u.double()
    predicted = ((x @ q) * x).sum(-1)
    return {
        "direction": label,
        "spectrum": values.sort(descending=True).values.tolist(),
        "frobenius": float(q.norm()),
        "mean_readout": float(readout.mean()),
        "exactness": float((predicted - readout).abs().max() / readout.abs().max()),
        "explained_by_top": {str(k): v for k, v in truncation(values, vectors, x, readout).items()},
        "eigenvectors": [
            read_eigenvector(float(val), vec, layer, held, tokenizer, cfg)
            for val, vec in zip(
                values[: cfg.eigenvectors], vectors[: cfg.eigenvectors], strict=True
            )
        ],
    }


def plot_spectra(readings: list[dict[str, Any]], path: Path) -> None:
    """Each direction's eigenvalues of Q(u), largest first (symlog y)."""
    from matplotlib.figure import Figure  # no pyplot: no global figure state, no GUI backend

    fig = Figure(figsize=(6.5, 3.4), layout="tight")
    ax = fig.subplots()
    for reading in readings:
        ax.plot(reading["spectrum"], ".", ms=2.5, label=reading["direction"])
    ax.set(xlabel="eigenvalue index (largest first)", ylabel="λ of Q(u)")
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.legend(fontsize=7)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))


def read_layer(
    model: nn.Module,
    tokenizer: Any,
    windows: torch.Tensor,
    out: Path,
    cfg: LayerReadingConfig,
    specs: list[str] | None = None,
) -> dict[str, Any]:
    """Read block ``cfg.layer``'s bilinear MLP for each direction spec (``parse_direction``;
    default: the ``cfg.default_directions`` tokens it moves most) on held-out ``windows`` [n, ctx];
    writes ``layer_reading.json`` and ``spectrum.png`` into ``out``."""
    layer = bilinear_layer(model, cfg.layer)
    held = held_out_inputs(model, layer, windows[: cfg.windows], tokenizer, cfg.first_position)
    if specs:
        directions = [parse_direction(spec, layer, tokenizer) for spec in specs]
    else:
        directions = [(f"token {_token(tokenizer, [t])!r}", layer.unembed[t])
                      for t in moved_tokens(layer, held, cfg.default_directions)]  # fmt: skip
    readings = [read_direction(label, u, layer, held, tokenizer, cfg) for label, u in directions]
    result = {"layer": cfg.layer, "hook": layer.hook, "config": asdict(cfg),
              "positions": len(held.x), "directions": readings}  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "layer_reading.json", result)
    plot_spectra(readings, out / "spectrum.png")
    return result
