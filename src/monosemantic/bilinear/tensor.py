"""The third-order tensor of a bilinear layer, its interaction matrices and their eigenvectors.

For y = P ((W x) ⊙ (V x)) (Pearce et al. 2024, arXiv 2410.08417):

    B_{a,i,j} = Σ_h P_{a,h} W_{h,i} V_{h,j},   y_a = xᵀ B_a x.

Only the symmetric part of each B_a matters, since xᵀ A x = 0 for antisymmetric A; so B is
symmetrised, B ← ½(B + Bᵀ). For an output direction u (a class logit, an unembedding row, an SAE
encoder vector), Q(u) = Σ_a u_a B_a = Wᵀ diag(Pᵀu) V (symmetrised) and

    uᵀ y = xᵀ Q x = Σ_i λ_i (v_i · x)²,    (λ_i, v_i) = eigh(Q).

With a folded bias, x is the augmented input [x, 1]. When x = W_e p is an embedding of raw input
p, the eigenvectors fold into input space: v_pix = W_eᵀ v, and uᵀ y = Σ_i λ_i (v_pix,i · p)².
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from monosemantic.models.layers import GLU, GatedMLP


def symmetrise(b: torch.Tensor) -> torch.Tensor:
    """[..., i, i] -> ½(B + Bᵀ) over the last two axes."""
    return 0.5 * (b + b.transpose(-1, -2))


def layer_weights(layer: GLU | GatedMLP) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(W [h, i], V [h, i], P [a, h] or None) of a bilinear layer or MLP, detached.

    i includes the folded bias column when the layer has one.
    """
    glu = layer.glu if isinstance(layer, GatedMLP) else layer
    if glu.gate_name != "none":
        raise ValueError(
            f"a GLU with gate {glu.gate_name!r} is not bilinear, so it has no exact tensor; "
            "decompose a Bilinear or BilinearMLP (gate='none')"
        )
    p = layer.P.detach() if isinstance(layer, GatedMLP) else None
    return glu.W.detach(), glu.V.detach(), p


def _check_shapes(w: torch.Tensor, v: torch.Tensor, p: torch.Tensor | None) -> None:
    if w.ndim != 2 or w.shape != v.shape:
        raise ValueError(
            f"W and V must both be [hidden, d_in]; got {tuple(w.shape)} and {tuple(v.shape)}"
        )
    if p is not None and (p.ndim != 2 or p.shape[1] != w.shape[0]):
        raise ValueError(f"P must be [d_out, hidden={w.shape[0]}] to match W; got {tuple(p.shape)}")


def bilinear_tensor(
    w: torch.Tensor, v: torch.Tensor, p: torch.Tensor | None = None
) -> torch.Tensor:
    """Symmetrised B: [a, i, j] = Σ_h P_{a,h} W_{h,i} V_{h,j}; without P, a = h (one per unit).

    w, v: [h, i]; p: [a, h]. Memory a·i², so prefer ``interaction_matrices`` for a few directions.
    """
    _check_shapes(w, v, p)
    if p is None:
        return symmetrise(torch.einsum("hi,hj->hij", w, v))
    return symmetrise(torch.einsum("ah,hi,hj->aij", p, w, v))


def interaction_matrices(
    w: torch.Tensor, v: torch.Tensor, p: torch.Tensor | None, u: torch.Tensor
) -> torch.Tensor:
    """Q(u) for each row of u: [n, a] -> [n, i, i], symmetrised, without building B.

    Q = Wᵀ diag(Pᵀ u) V, i.e. Σ_a u_a B_a. Without P, u weights the hidden units directly.
    """
    _check_shapes(w, v, p)
    a = w.shape[0] if p is None else p.shape[0]
    if u.ndim != 2 or u.shape[1] != a:
        raise ValueError(f"output directions u must be [n, {a}]; got {tuple(u.shape)}")
    mix = u @ p if p is not None else u  # [n, h]
    return symmetrise(torch.einsum("nh,hi,hj->nij", mix, w, v))


def contract(b: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Q(u) = Σ_a u_a B_a from a built tensor: b [a, i, i], u [n, a] -> [n, i, i]."""
    return torch.einsum("na,aij->nij", u, b)


@dataclass
class Eigendecomposition:
    """Eigenpairs of n interaction matrices, sorted by eigenvalue, largest first.

    values: [n, r]; vectors: [n, r, d] (row i is v_i). ``output(x)`` = Σ_i λ_i (v_i · x)².
    """

    values: torch.Tensor
    vectors: torch.Tensor

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """x: [batch, d] -> v_i · x: [batch, n, r]."""
        if x.shape[-1] != self.vectors.shape[-1]:
            raise ValueError(
                f"inputs have d={x.shape[-1]} but the eigenvectors live in "
                f"d={self.vectors.shape[-1]}; fold them through the embedding or pass embeddings"
            )
        return torch.einsum("bd,nrd->bnr", x.to(self.vectors.dtype), self.vectors)

    def output(self, x: torch.Tensor) -> torch.Tensor:
        """x: [batch, d] -> Σ_i λ_i (v_i · x)²: [batch, n]."""
        return (self.project(x).square() * self.values).sum(-1)

    def top(self, k: int) -> Eigendecomposition:
        """Keep the k eigenpairs of largest |λ| per output (the truncation of the paper)."""
        if not 0 <= k <= self.values.shape[1]:
            raise ValueError(f"k={k} must be in 0..{self.values.shape[1]} (the rank)")
        order = self.values.abs().argsort(dim=1, descending=True)[:, :k]
        return Eigendecomposition(
            self.values.gather(1, order),
            self.vectors.gather(1, order[..., None].expand(-1, -1, self.vectors.shape[-1])),
        )

    def fold(self, embed: torch.Tensor) -> Eigendecomposition:
        """Move eigenvectors into input space: embed [d, d_pix] -> vectors [n, r, d_pix].

        With embeddings x = embed @ p, v_pix = embedᵀ v, so Σ λ (v_pix · p)² equals the output
        on raw inputs p. The folded vectors are no longer orthonormal.
        """
        if embed.shape[0] != self.vectors.shape[-1]:
            raise ValueError(
                f"embedding must be [d={self.vectors.shape[-1]}, d_input]; got {tuple(embed.shape)}"
            )
        return Eigendecomposition(self.values, self.vectors @ embed.to(self.vectors.dtype))


def eigendecompose(q: torch.Tensor) -> Eigendecomposition:
    """Batched eigh of symmetric q: [n, d, d] (or [d, d]) -> eigenpairs, largest λ first."""
    if q.ndim == 2:
        q = q[None]
    values, vectors = torch.linalg.eigh(q)  # ascending; columns are eigenvectors
    return Eigendecomposition(values.flip(-1), vectors.flip(-1).transpose(-1, -2).contiguous())


def decompose(
    layer: GLU | GatedMLP, u: torch.Tensor, head: torch.Tensor | None = None
) -> Eigendecomposition:
    """Eigendecomposition of Q(u) for each output direction u: [n, a] of a bilinear layer.

    ``head`` [a, d_out] is an extra linear map after the layer (e.g. a classifier head); it is
    folded into P, so u is then a direction in the head's output space (u = I for class logits).
    """
    w, v, p = layer_weights(layer)
    if head is not None:
        head = head.detach()
        p = head if p is None else head @ p
    return eigendecompose(interaction_matrices(w, v, p, u.to(w.dtype)))
