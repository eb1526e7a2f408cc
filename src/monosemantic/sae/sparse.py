"""The sparse path: a training step whose cost beyond the encoder's forward product grows with the
active (row, latent) pairs of a batch, not with batch · d_sae.

Dense, a step costs about 12 · d · d_sae FLOPs per row: the encoder's forward product, its weight
gradient, the gradient that reaches b_dec through W_enc (x − b_dec is encoded), and the decoder's
three products. Only the encoder's forward must be dense (it chooses which latents fire); every
other product reads only the n active pairs:

    values_e   = pre[r_e, j_e]                 e = 1..n, read from the dense forward product
    ∂W_enc[:, j] = Σ_{e: j_e = j} g_e · (x − b_dec)[r_e]        embedding_bag grouped by latent
    ∂b_enc[j]    = Σ_{e: j_e = j} g_e                           index_add
    ∂b_dec       = −W_enc ∂b_enc                                one [d_in, d_sae] × [d_sae] product
    x̂[r]         = Σ_{e: r_e = r} values_e · W_dec[j_e]         embedding_bag grouped by row
    ∂values_e    = ∂x̂[r_e] · W_dec[j_e]                         sampled dense-dense product
    ∂W_dec[j]    = Σ_{e: j_e = j} values_e · ∂x̂[r_e]            embedding_bag grouped by latent

(b_dec's closed form holds because every pair reads the same b_dec.) ``Active`` holds the pairs,
``Encoding`` a batch's pre-activations and how gradients flow through the pairs a step reads
(sparse, or through the dense tensor for the reference path); architectures choose the pairs
(``SAE.select``).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F

from monosemantic.sae.codes import Codes

SPARSE_DENSITY = 0.1
"""The fraction of active pairs up to which a threshold architecture (ReLU, JumpReLU, Gated)
takes the sparse path; measured in docs/benchmarks.md ("Sparse path")."""


ZERO_PAIRS_KEPT = 0.9
"""Sums over the pairs drop those of weight 0 when they are over a tenth (below, the copy would
cost more than the zeros do)."""


SAME_WIDTH_INTS = {
    torch.float16: torch.int16,
    torch.bfloat16: torch.int16,
    torch.float32: torch.int32,
    torch.float64: torch.int64,
}
"""The integers whose bit patterns ``above`` compares instead of floats."""


def above(pre: torch.Tensor, threshold: torch.Tensor, *, or_equal: bool = False) -> torch.Tensor:
    """bool [batch, d_sae]: True wherever pre [batch, d_sae] > threshold [d_sae] (or a scalar;
    ≥ with ``or_equal``), and perhaps just below it: a threshold finer than pre's dtype (float32
    against bf16 codes) is rounded down to pre's, so the test is one comparison in pre's dtype (a
    mixed-dtype one is 4× slower). A superset of the pairs, for ``select``; the values at the
    pairs apply the exact test. With no threshold below 0 (for ≥: none at or below 0, which −0
    would reach) the comparison reads the bits as integers, since non-negative floats order as
    their bit patterns and negative ones lie below every non-negative: 1.4× faster than bf16's
    float comparison, 1.6× float32's."""
    if threshold.dtype != pre.dtype:
        rounded = threshold.to(pre.dtype)
        lower = rounded.nextafter(torch.full_like(rounded, float("-inf")))
        threshold = torch.where(rounded.to(threshold.dtype) > threshold, lower, rounded)
    if bool((threshold > 0).all() if or_equal else (threshold >= 0).all()):
        ints = SAME_WIDTH_INTS[pre.dtype]
        pre, threshold = pre.view(ints), threshold.abs().view(ints)  # −0 as +0
    return pre >= threshold if or_equal else pre > threshold


def sparse_enough(mask: torch.Tensor, max_density: float) -> bool:
    """Whether at most ``max_density`` of mask's entries are True."""
    return int(mask.count_nonzero()) <= max_density * mask.numel()  # sum() of bools is 30× slower


class Active:
    """A batch's active (row, latent) pairs, row-major: row r holds pairs ``crow[r]:crow[r+1]``
    of ``latents`` [n] (crow: [batch + 1]). ``width`` is each row's count when all rows hold the
    same number (TopK), else None."""

    def __init__(
        self, crow: torch.Tensor, latents: torch.Tensor, d_sae: int, width: int | None = None
    ) -> None:
        self.crow = crow
        self.latents = latents
        self.d_sae = d_sae
        self.width = width
        self._rows: torch.Tensor | None = None
        self._by_latent: tuple[torch.Tensor, torch.Tensor] | None = None

    @classmethod
    def per_row(cls, indices: torch.Tensor, d_sae: int) -> Active:
        """Each row's m latents: indices [batch, m]."""
        batch, m = indices.shape
        crow = torch.arange(0, batch * m + 1, m, device=indices.device)
        return cls(crow, indices.reshape(-1), d_sae, width=m)

    @classmethod
    def row_major(cls, rows: torch.Tensor, latents: torch.Tensor, batch: int, d_sae: int) -> Active:
        """Pairs in row-major order (within a row, any): rows, latents [n]."""
        counts = torch.bincount(rows, minlength=batch)
        active = cls(torch.cat([counts.new_zeros(1), counts.cumsum(0)]), latents, d_sae)
        active._rows = rows
        return active

    @classmethod
    def from_mask(cls, mask: torch.Tensor) -> Active:
        """The True entries of mask [batch, d_sae]."""
        rows, latents = mask.nonzero(as_tuple=True)  # row-major already
        return cls.row_major(rows, latents, mask.shape[0], mask.shape[1])

    @classmethod
    def if_sparse(cls, mask: torch.Tensor, max_density: float) -> Active | None:
        """``from_mask`` when at most ``max_density`` of mask [batch, d_sae] is True, else None:
        above it the dense products are faster (``SPARSE_DENSITY``)."""
        return cls.from_mask(mask) if sparse_enough(mask, max_density) else None

    @property
    def batch(self) -> int:
        return self.crow.numel() - 1

    @property
    def rows(self) -> torch.Tensor:
        """[n] each pair's row."""
        if self._rows is None:
            counts = self.crow.diff()
            self._rows = torch.repeat_interleave(
                torch.arange(self.batch, device=counts.device), counts, output_size=len(self)
            )
        return self._rows

    def __len__(self) -> int:
        return self.latents.numel()

    def read(self, dense: torch.Tensor) -> torch.Tensor:
        """[n] dense [batch, d_sae] at the pairs: a row-wise gather when every row holds the same
        count, else a gather from the flat tensor (at 1.18M pairs, 4 and 2× faster than
        ``dense[rows, latents]``)."""
        if self.width is not None:
            return dense.gather(1, self.latents.view(self.batch, self.width)).view(-1)
        return dense.reshape(-1).take(self.rows * self.d_sae + self.latents)

    def by_latent(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The pairs grouped by latent: (order [n], offsets [d_sae]), pairs ``order`` with latent
        j at ``offsets[j]`` onwards (a stable sort, so rows stay increasing within a latent)."""
        if self._by_latent is None:
            order = _stable_order(self.latents)
            counts = torch.bincount(self.latents, minlength=self.d_sae)
            self._by_latent = order, counts.cumsum(0) - counts
        return self._by_latent

    def subset(self, keep: torch.Tensor) -> Active:
        """The pairs where keep [n] is True, their grouping by latent read off this one's
        instead of sorted again."""
        out = Active.row_major(self.rows[keep], self.latents[keep], self.batch, self.d_sae)
        order, _ = self.by_latent()
        position = keep.cumsum(0) - 1  # a kept pair's index among the kept
        counts = torch.bincount(out.latents, minlength=self.d_sae)
        out._by_latent = position[order[keep[order]]], counts.cumsum(0) - counts
        return out

    def without_zeros(self, weights: torch.Tensor) -> tuple[Active, torch.Tensor]:
        """(pairs, weights) without the pairs whose weight [n] is 0, which add nothing to a sum
        (a JumpReLU latent just below its threshold is read for θ's gradient only); itself when
        few are 0."""
        keep = weights != 0
        if int(keep.count_nonzero()) > ZERO_PAIRS_KEPT * len(self):
            return self, weights
        return self.subset(keep), weights[keep]

    def codes(self, values: torch.Tensor) -> Codes:
        """values [n] at the pairs -> ``Codes`` as (indices, values) [batch, m]: rows with fewer
        than m = the most any row holds are padded with value 0 at latent 0."""
        if self.width is not None:
            shape = (self.batch, self.width)
            return Codes(values.reshape(shape), self.latents.reshape(shape), self.d_sae)
        counts = self.crow.diff()
        m = int(counts.max()) if self.batch else 0
        slot = torch.arange(len(self), device=values.device) - self.crow[self.rows]
        where = (self.rows, slot)
        padded = values.new_zeros(self.batch, m).index_put(where, values)
        indices = self.latents.new_zeros(self.batch, m).index_put_(where, self.latents)
        return Codes(padded, indices, self.d_sae)


def _stable_order(keys: torch.Tensor) -> torch.Tensor:
    """[n] the permutation sorting latent indices [n] stably, as int32 (18 against int64's 31 ms
    for 6·10^5 keys) on one thread: torch's parallel radix sort takes about 1 ms for 10^5 keys
    alone, but right after a matrix product on 2 cores its threads wait on the product's
    still-spinning ones for about 0.2 s (measured: 432 ms for product + sort against 239 ms on
    one thread)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return keys.to(torch.int32).sort(stable=True).indices
    finally:
        torch.set_num_threads(threads)


def narrowest(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The tensors in the narrowest of their float dtypes. Under autocast the codes are bf16 and
    the tables float32: the sums over pairs then run in bf16 as autocast's products would, 1.5-2×
    faster than in float32 (embedding_bag accumulates in float32 and rounds its output once)."""
    dtype = min((t.dtype for t in tensors), key=lambda d: torch.finfo(d).bits)
    return tuple(t.to(dtype) for t in tensors)


def latent_sum(table: torch.Tensor, active: Active, weights: torch.Tensor) -> torch.Tensor:
    """[d_sae, d] row j = Σ over pairs (r, j) of weights_e · table[r]; table: [batch, d]."""
    order, offsets = active.by_latent()
    table, weights = narrowest(table, weights[order])
    return F.embedding_bag(
        active.rows[order], table, offsets, mode="sum", per_sample_weights=weights
    )


def row_sum(table: torch.Tensor, active: Active, weights: torch.Tensor) -> torch.Tensor:
    """[batch, d] row r = Σ over pairs (r, j) of weights_e · table[j]; table: [d_sae, d]."""
    table, weights = narrowest(table, weights)
    return F.embedding_bag(
        active.latents, table, active.crow[:-1], mode="sum", per_sample_weights=weights
    )


GATHER_CHUNK = 8192
"""Pairs per chunk where ``sampled_dot`` gathers rows (dtypes torch's sampled product lacks)."""


def sampled_dot(a: torch.Tensor, b: torch.Tensor, active: Active) -> torch.Tensor:
    """[n] pair (r, j)'s a[r] · b[j]: a [batch, d], b [d_sae, d]; the entries of a bᵀ at the
    pairs without the dense product."""
    if a.dtype in (torch.float32, torch.float64):
        with warnings.catch_warnings():  # torch calls sparse CSR support beta, once per process
            warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta")
            pattern = torch.sparse_csr_tensor(
                active.crow,
                active.latents,
                a.new_zeros(len(active)),
                (active.batch, active.d_sae),
                check_invariants=False,
            )
            return torch.sparse.sampled_addmm(pattern, a, b.T, beta=0.0).values()
    rows, latents = active.rows, active.latents
    parts = [  # chunks keep the gathered rows in cache instead of materialising [n, d]
        (a[rows[i : i + GATHER_CHUNK]] * b[latents[i : i + GATHER_CHUNK]]).sum(-1)
        for i in range(0, len(active), GATHER_CHUNK)
    ]
    return torch.cat(parts) if parts else a.new_zeros(0)


class _ReadPre(torch.autograd.Function):
    """values [n] = pre at the pairs, pre = (x − b_dec) W_enc + b_enc computed densely outside;
    the backward runs over the pairs only (module docstring)."""

    @staticmethod
    def forward(
        ctx: Any,
        pre: torch.Tensor,
        x: torch.Tensor,
        w_enc: torch.Tensor,
        b_enc: torch.Tensor | None,
        b_dec: torch.Tensor | None,
        active: Active,
    ) -> torch.Tensor:
        ctx.save_for_backward(x, w_enc, b_dec)
        ctx.active = active
        return active.read(pre)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, w_enc, b_dec = ctx.saved_tensors
        active: Active = ctx.active
        centred = x if b_dec is None else x - b_dec
        active, grad = active.without_zeros(grad)  # grad: bf16 when the forward ran under autocast
        per_latent = w_enc.new_zeros(active.d_sae).index_add_(0, active.latents, grad.to(w_enc))
        grad_x = grad_w = grad_b_dec = None
        if ctx.needs_input_grad[1]:
            grad_x = row_sum(w_enc.T.contiguous(), active, grad).to(x.dtype)
        if ctx.needs_input_grad[2]:
            grad_w = latent_sum(centred, active, grad).T.to(w_enc.dtype)
        if b_dec is not None and ctx.needs_input_grad[4]:
            grad_b_dec = -(w_enc @ per_latent)
        grad_b_enc = per_latent if ctx.needs_input_grad[3] else None
        return None, grad_x, grad_w, grad_b_enc, grad_b_dec, None


class _Decode(torch.autograd.Function):
    """[batch, d_out] row r = Σ over its pairs of values_e · W_dec[j_e]; backward over the pairs."""

    @staticmethod
    def forward(
        ctx: Any, values: torch.Tensor, w_dec: torch.Tensor, active: Active
    ) -> torch.Tensor:
        ctx.save_for_backward(w_dec)
        ctx.active = active
        ctx.nonzero = active.without_zeros(values)  # the pairs ∂W_dec sums over
        return row_sum(w_dec, *ctx.nonzero)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        (w_dec,) = ctx.saved_tensors
        active: Active = ctx.active
        grad_values = grad_w = None
        if ctx.needs_input_grad[0]:  # torch's sampled product takes float32 and float64 only
            grad_values = sampled_dot(grad.to(w_dec).contiguous(), w_dec, active)
        if ctx.needs_input_grad[1]:
            grad_w = latent_sum(grad.contiguous(), *ctx.nonzero).to(w_dec.dtype)
        return grad_values, grad_w, None


class Encoding:
    """A batch's pre-activations ``dense`` [batch, d_sae] and how gradients reach the parameters
    through the entries a step reads. Sparse (``Encoding.sparse``): ``dense`` is detached and
    ``at``/``decode`` run their backward over the pairs; otherwise (the dense reference) they are
    plain autograd through the differentiable ``dense``."""

    def __init__(self, dense: torch.Tensor) -> None:
        self.dense = dense
        self._encoder: tuple[torch.Tensor, ...] | None = None
        self._read: tuple[Active, torch.Tensor] | None = None

    @classmethod
    def sparse(
        cls,
        pre: torch.Tensor,
        x: torch.Tensor,
        w_enc: torch.Tensor,
        b_enc: torch.Tensor | None,
        b_dec: torch.Tensor | None,
    ) -> Encoding:
        """pre = (x − b_dec) W_enc + b_enc [batch, d_sae] (b_dec None: x itself is encoded;
        b_enc None: no bias), computed by the caller."""
        out = cls(pre.detach())
        out._encoder = (x, w_enc, b_enc, b_dec)  # type: ignore[assignment]
        return out

    def at(self, active: Active) -> torch.Tensor:
        """[n] the pre-activations at the pairs, differentiable. Read once for the same pairs:
        a second read (Gated's gate penalty, JumpReLU's L0) shares the first's tensor, so the
        gradients of both run one backward over the pairs."""
        if self._read is None or self._read[0] is not active:
            if self._encoder is None:
                values = active.read(self.dense)
            else:
                values = _ReadPre.apply(self.dense, *self._encoder, active)
            self._read = (active, values)
        return self._read[1]

    def decode(self, values: torch.Tensor, active: Active, w_dec: torch.Tensor) -> torch.Tensor:
        """[batch, d_out] Σ over each row's pairs of values_e · w_dec[j_e] (no bias)."""
        if self._encoder is None:
            return row_sum(w_dec, active, values)  # embedding_bag's own backward: the reference
        out: torch.Tensor = _Decode.apply(values, w_dec, active)
        return out
