"""A bilinear language model's MLP read in a basis of SAE features (Pearce et al. 2024, arXiv
2410.08417, section on language models).

For y = P((W x) ⊙ (V x)) and an output direction u (an encoder vector of an SAE trained on the
MLP output, or an unembedding row):

    Q  = Σ_{m,o} W[m,:] ⊗ V[m,:] P[o,m] u_o   (symmetrised),  uᵀy = xᵀ Q x
    Q' = D Q Dᵀ                                 D = W_dec of an SAE on the MLP input [f, d]

so that for an input written as x = Dᵀc + b (c the input SAE's codes, b its b_dec):

    uᵀ y = cᵀ Q' c + ℓᵀ c + κ,     ℓ = 2 D Q b,  κ = bᵀ Q b           (exact)

Q'_ij is the strength with which input features i and j together drive output feature u (the
pair contributes 2 Q'_ij c_i c_j). Q' has rank ≤ d; its nonzero eigenpairs come from the d×d
matrix G^½ Q G^½ with G = DᵀD, so the spectra of all output features are cheap. Output features
with a large sum of their top-2 |λ| are the ones worth reading.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from monosemantic.bilinear.lm_layer import bilinear_layer
from monosemantic.bilinear.tensor import Eigendecomposition, interaction_matrices, layer_weights
from monosemantic.config import check
from monosemantic.data.harvest import forward_activations
from monosemantic.data.store import MatrixSource
from monosemantic.data.tokens import excluded_positions
from monosemantic.files import atomic_write, write_json
from monosemantic.models.layers import BilinearMLP
from monosemantic.sae.base import SAE
from monosemantic.sae.io import load_sae, save_sae
from monosemantic.sae.registry import config, create
from monosemantic.training.trainer import TrainConfig, train

# --- the maths ----------------------------------------------------------------------------------


def output_interactions(mlp: BilinearMLP, u: torch.Tensor) -> torch.Tensor:
    """Q for each output direction u: [n, d_model] -> [n, d_model, d_model], symmetrised."""
    w, v, p = layer_weights(mlp)
    return interaction_matrices(w, v, p, u.to(w.dtype))


def in_feature_basis(q: torch.Tensor, decoder: torch.Tensor) -> torch.Tensor:
    """Q' = D Q Dᵀ: q [n, d, d], decoder D [f, d] (rows are feature directions) -> [n, f, f]."""
    return torch.einsum("fi,nij,gj->nfg", decoder, q, decoder)


def affine_terms(
    q: torch.Tensor, decoder: torch.Tensor, b_dec: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(ℓ [n, f], κ [n]) with uᵀy = cᵀQ'c + ℓᵀc + κ for x = Dᵀc + b_dec; q: [n, d, d]."""
    qb = q @ b_dec  # [n, d]
    return 2 * qb @ decoder.T, qb @ b_dec


def _gram_roots(decoder: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(G^½, G^-½) of G = DᵀD [d, d] in float64; an error when D [f, d] does not span R^d."""
    evals, evecs = torch.linalg.eigh(decoder.T.double() @ decoder.double())
    if float(evals.min()) <= 1e-10 * float(evals.max()):
        raise ValueError(
            "the input SAE's decoder directions do not span the MLP input space (DᵀD is "
            "singular); use an SAE with at least d_model independent decoder rows"
        )
    return evecs @ torch.diag(evals.sqrt()) @ evecs.T, evecs @ torch.diag(evals.rsqrt()) @ evecs.T


def feature_eigenvalues(q: torch.Tensor, decoder: torch.Tensor) -> torch.Tensor:
    """The d possibly-nonzero eigenvalues of each Q' = D Q Dᵀ: q [n, d, d] -> [n, d], largest
    first, from the d×d matrices G^½ Q G^½ (memory n·d², not n·f²)."""
    root, _ = _gram_roots(decoder)
    return torch.linalg.eigvalsh(root @ q.double() @ root).flip(-1).float()


def feature_spectrum(q: torch.Tensor, decoder: torch.Tensor) -> Eigendecomposition:
    """Nonzero eigenpairs of Q' = D Q Dᵀ without forming it: q [n, d, d], D [f, d] with f ≥ d.

    With G = DᵀD = S², S Q S w = λ w gives Q' (D S⁻¹ w) = λ D S⁻¹ w and ‖D S⁻¹ w‖ = 1; the
    other f − d eigenvalues are 0. Returns values [n, d] (largest first), vectors [n, d, f].
    """
    root, inv_root = _gram_roots(decoder)
    values, w = torch.linalg.eigh(root @ q.double() @ root)  # ascending; columns eigenvectors
    vectors = torch.einsum("fi,ij,njr->nrf", decoder.double(), inv_root, w)
    return Eigendecomposition(values.flip(-1).float(), vectors.flip(1).float())


def top2_strength(values: torch.Tensor) -> torch.Tensor:
    """Sum of the two largest |λ| per row: values [n, r] -> [n]."""
    return values.abs().topk(min(2, values.shape[-1]), dim=-1).values.sum(-1)


def top_pairs(
    q_prime: torch.Tensor, k: int, alive: torch.Tensor | None = None
) -> list[tuple[int, int, float]]:
    """The k entries (i ≤ j) of symmetric q_prime [f, f] with the largest |Q'_ij|.

    ``alive`` [f] bool restricts both features to those that ever fire. Returns (i, j, Q'_ij).
    """
    f = q_prime.shape[-1]
    upper = torch.ones(f, f, dtype=torch.bool).triu()
    if alive is not None:
        upper &= alive[:, None] & alive[None, :]
    scores = q_prime.abs().masked_fill(~upper, -1.0).flatten()
    best = scores.topk(min(k, int(upper.sum()))).indices
    return [(int(i) // f, int(i) % f, float(q_prime.flatten()[i])) for i in best]


# --- harvesting and SAEs ------------------------------------------------------------------------


@dataclass
class FeatureConfig:
    """How ``bilinear lm-features`` trains its SAEs and what it reports. Validated at
    construction."""

    layer: int = 0
    """The block whose bilinear MLP is read."""
    d_sae: int = 1024
    """Width of both SAEs (input and output of the MLP)."""
    k: int = 16
    """Active latents per token of the TopK SAEs."""
    sae_steps: int = 2000
    sae_batch_size: int = 1024
    harvest_windows: int = 2000
    """Training windows whose MLP activations train the SAEs (BOS positions left out)."""
    top_outputs: int = 20
    """Output features reported (by the top-2 |λ| sum)."""
    top_pairs: int = 10
    """Strongest input-feature pairs reported per output feature."""
    max_density: float = 0.2
    """Input features firing on more tokens than this are left out of the pairs: a near-constant
    feature times feature j acts as a linear term in j, and would top every list."""
    outputs: str = "sae"
    """Output directions u: ``sae`` (encoder vectors of an SAE on the MLP output) or ``tokens``
    (unembedding rows through the final norm: the MLP's direct effect on each logit)."""
    seed: int = 0

    def __post_init__(self) -> None:
        check(self.outputs in ("sae", "tokens"), "outputs", self.outputs, "sae or tokens")
        for name in ("d_sae", "k", "sae_steps", "sae_batch_size", "harvest_windows"):
            value = getattr(self, name)
            check(isinstance(value, int) and value > 0, name, value, "a positive integer")
        check(self.k <= self.d_sae, "k", self.k, f"<= d_sae={self.d_sae}")
        check(self.layer >= 0, "layer", self.layer, ">= 0")
        check(self.top_outputs > 0, "top_outputs", self.top_outputs, "> 0")
        check(self.top_pairs > 0, "top_pairs", self.top_pairs, "> 0")
        check(0 < self.max_density <= 1, "max_density", self.max_density, "in (0, 1]")


def harvest_mlp(
    model: nn.Module,
    tokens: torch.Tensor,
    hooks: tuple[str, str],
    exclude: torch.Tensor,
    batch_size: int = 32,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Activations at the MLP's (input, output) ``hooks`` [rows, d] and token ids [rows] at
    non-excluded positions. tokens, exclude: [n, ctx] (exclude True where a position is left
    out)."""
    xs, ys = [], []
    for start in range(0, len(tokens), batch_size):
        acts = forward_activations(model, tokens[start : start + batch_size], list(hooks))
        keep = ~exclude[start : start + batch_size]
        xs.append(acts[hooks[0]][keep].float())
        ys.append(acts[hooks[1]][keep].float())
    return torch.cat(xs), torch.cat(ys), tokens[~exclude]


def train_topk(acts: torch.Tensor, cfg: FeatureConfig, hook: str, model_name: str) -> SAE:
    """A TopK SAE trained with the project's trainer on rows acts: [rows, d]."""
    sae_cfg = config(
        "topk", d_in=acts.shape[1], d_sae=cfg.d_sae, k=cfg.k, hook=hook, model=model_name
    )
    torch.manual_seed(cfg.seed)
    sae = create(sae_cfg)
    source = MatrixSource(acts)
    train_cfg = TrainConfig(
        steps=cfg.sae_steps,
        batch_size=cfg.sae_batch_size,
        seed=cfg.seed,
        lr_warmup_steps=min(100, cfg.sae_steps // 10),
        dead_after_tokens=50 * cfg.sae_batch_size,
        progress=False,
    )
    train(
        [sae],
        lambda step: source.batches(cfg.sae_batch_size, seed=cfg.seed, start_step=step),
        train_cfg,
    )
    return sae


@torch.no_grad()
def top_tokens(
    sae: SAE, acts: torch.Tensor, token_ids: torch.Tensor, tokenizer: Any, n: int = 5
) -> tuple[list[str], torch.Tensor]:
    """Per latent, the distinct current tokens of its ``n``·4 strongest rows (at most n shown),
    and its firing frequency [d_sae]. acts: [rows, d]; token_ids: [rows]."""
    best_vals = torch.full((sae.d_sae, 4 * n), -1.0)
    best_rows = torch.zeros(sae.d_sae, 4 * n, dtype=torch.long)
    fires = torch.zeros(sae.d_sae)
    chunk = 8192
    for start in range(0, len(acts), chunk):
        codes = sae.encode(acts[start : start + chunk])  # [rows, f]
        fires += (codes > 0).float().sum(0)
        vals = torch.cat([best_vals, codes.T], dim=1)
        rows = torch.cat(
            [best_rows, torch.arange(start, start + len(codes)).expand(sae.d_sae, -1)], dim=1
        )
        best_vals, idx = vals.topk(4 * n, dim=1)
        best_rows = rows.gather(1, idx)
    labels = []
    for latent in range(sae.d_sae):
        rows = best_rows[latent][best_vals[latent] > 0]
        words = dict.fromkeys(tokenizer.decode([int(token_ids[r])]) for r in rows)
        labels.append(" | ".join(repr(w)[1:-1] for w in list(words)[:n]))
    return labels, fires / len(acts)


# --- the whole reading --------------------------------------------------------------------------


def analyse(
    mlp: BilinearMLP,
    decoder: torch.Tensor,
    u: torch.Tensor,
    cfg: FeatureConfig,
    pair_features: torch.Tensor,
    alive_out: torch.Tensor,
    chunk: int = 256,
) -> tuple[list[dict[str, Any]], torch.Tensor]:
    """Rank the alive output directions u [n_out, d] by their top-2 |λ| and list each one's
    strongest input pairs among ``pair_features`` [f_in] bool (decoder: the input SAE's
    W_dec [f_in, d]). Returns the rows and every direction's eigenvalues [n_out, d].

    Q is built ``chunk`` directions at a time, so memory stays at chunk·d² whatever n_out.
    """
    values = torch.cat(
        [
            feature_eigenvalues(output_interactions(mlp, u[i : i + chunk]), decoder)
            for i in range(0, len(u), chunk)
        ]
    )
    strength = top2_strength(values).masked_fill(~alive_out, -1.0)
    chosen = strength.topk(min(cfg.top_outputs, int(alive_out.sum()))).indices
    rows = []
    for o in chosen.tolist():
        q_prime = in_feature_basis(output_interactions(mlp, u[o : o + 1]), decoder)[0]
        order = values[o].abs().argsort(descending=True)[:4]
        rows.append(
            {
                "feature": o,
                "top2": float(strength[o]),
                "eigenvalues": [float(values[o, i]) for i in order],
                "pairs": [
                    {"i": i, "j": j, "q": qij}
                    for i, j, qij in top_pairs(q_prime, cfg.top_pairs, pair_features)
                ],
            }
        )
    return rows, values


def run_lm_features(
    model: nn.Module,
    tokenizer: Any,
    train_windows: torch.Tensor,
    val_windows: torch.Tensor,
    out: Path,
    cfg: FeatureConfig,
    *,
    name: str,
    sae_in: Path | None = None,
    sae_out: Path | None = None,
) -> dict[str, Any]:
    """Train (or load) SAEs on the input of a bilinear LM's MLP (and on its output, with
    ``cfg.outputs == "sae"``) from ``train_windows`` [n, ctx], read the MLP in their basis on
    ``val_windows``, and write ``features.json`` and ``spectrum.png`` into ``out``. ``model``: a
    zoo bilinear LM or a converted Hugging Face model (``bilinear_layer``); ``name`` its name."""
    start = time.perf_counter()
    layer = bilinear_layer(model, cfg.layer)
    mlp = layer.mlp
    hooks = (layer.hook, layer.hook.replace(":input", ":output"))

    def rows(windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return harvest_mlp(model, windows, hooks, excluded_positions(windows, tokenizer))

    gen = torch.Generator().manual_seed(cfg.seed)
    pick = torch.randperm(len(train_windows), generator=gen)[: cfg.harvest_windows]
    x_train, y_train, _ = rows(train_windows[pick])

    def sae_for(given: Path | None, acts: torch.Tensor, hook: str, folder: str) -> SAE:
        if given:
            return load_sae(given).eval()
        sae = train_topk(acts, cfg, hook, name)
        save_sae(sae, out / folder)
        return sae.eval()

    encoder_in = sae_for(sae_in, x_train, hooks[0], "sae_in")
    x_val, y_val, ids_val = rows(val_windows)
    labels_in, freq_in = top_tokens(encoder_in, x_val, ids_val, tokenizer)
    stats: dict[str, Any] = {"sae_in": {"fvu_val": fvu(encoder_in, x_val)}}
    if cfg.outputs == "sae":
        encoder_out = sae_for(sae_out, y_train, hooks[1], "sae_out")
        u = encoder_out.W_enc.detach().T  # pre-activation = uᵀy − uᵀb_dec + b_enc
        labels_out, freq_out = top_tokens(encoder_out, y_val, ids_val, tokenizer)
        stats["sae_out"] = {"fvu_val": fvu(encoder_out, y_val)}
    else:
        u = layer.unembed
        labels_out = [str(tokenizer.decode([t])) for t in range(len(u))]
        freq_out = torch.bincount(ids_val, minlength=len(u)).float() / len(ids_val)
    for name, freq in (("sae_in", freq_in), ("sae_out", freq_out)):
        if name in stats:
            stats[name]["alive_fraction"] = float((freq > 0).float().mean())
    sparse_in = (freq_in > 0) & (freq_in <= cfg.max_density)
    decoder = encoder_in.W_dec.detach()
    top, values = analyse(mlp, decoder, u, cfg, sparse_in, freq_out > 0)
    for row in top:
        row["tokens"] = labels_out[row["feature"]]
        for pair in row["pairs"]:
            for end in ("i", "j"):
                pair[f"tokens_{end}"] = labels_in[pair[end]]
                pair[f"density_{end}"] = float(freq_in[pair[end]])
    result = {
        "model": name,
        "hooks": list(hooks),
        "config": asdict(cfg),
        "saes": stats,
        "dense_inputs": [
            {"feature": i, "density": float(freq_in[i]), "tokens": labels_in[i]}
            for i in (freq_in > cfg.max_density).nonzero().flatten().tolist()
        ],
        "exactness": exactness(mlp, encoder_in, u[:64], x_val[:512]),
        "top_outputs": top,
        "seconds": time.perf_counter() - start,
    }
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "features.json", result)
    plot_spectra(values, freq_out > 0, top, out / "spectrum.png")
    return result


@torch.no_grad()
def fvu(sae: SAE, acts: torch.Tensor) -> float:
    """Fraction of variance unexplained of rows acts: [rows, d]."""
    err = (sae(acts) - acts).pow(2).sum()
    return float(err / (acts - acts.mean(0)).pow(2).sum())


@torch.no_grad()
def exactness(mlp: BilinearMLP, sae_in: SAE, u: torch.Tensor, x: torch.Tensor) -> float:
    """Max relative error of uᵀ MLP(x̂) against cᵀQ'c + ℓᵀc + κ (x̂ = the input SAE's
    reconstruction of x [rows, d], c its codes; u [n, d]): a float32 round-off check of the
    decomposition on real activations."""
    c = sae_in.encode(x)
    decoder = sae_in.W_dec.detach()
    q = output_interactions(mlp, u)
    linear, const = affine_terms(q, decoder, sae_in.b_dec.detach())
    q_prime = in_feature_basis(q, decoder)
    predicted = torch.einsum("bf,nfg,bg->bn", c, q_prime, c) + c @ linear.T + const
    actual = mlp(sae_in.decode(c)) @ u.T
    return float((predicted - actual).abs().max() / actual.abs().max())


def plot_spectra(
    values: torch.Tensor, alive_out: torch.Tensor, top: list[dict[str, Any]], path: Path
) -> None:
    """Left: top-2 |λ| of every alive output feature, sorted. Right: the eigenvalues of Q' of the
    strongest few. values: [f_out, d]; alive_out: [f_out] bool."""
    from matplotlib.figure import Figure  # no pyplot: no global figure state, no GUI backend

    strength = top2_strength(values)[alive_out].sort(descending=True).values
    fig = Figure(figsize=(9, 3.2), layout="tight")
    left, right = fig.subplots(1, 2)
    left.plot(strength.numpy())
    left.set(xlabel="output feature (sorted)", ylabel="sum of top-2 |λ|", yscale="log")
    for row in top[:4]:
        right.plot(values[row["feature"]].numpy(), ".", ms=3, label=f"feature {row['feature']}")
    right.set(xlabel="eigenvalue index", ylabel="λ of Q'")
    right.legend(fontsize=7)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=90))
