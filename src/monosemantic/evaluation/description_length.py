"""Description length: the bits per input an SAE's codes take to send (Ayonrinde, Pearce, Sharkey
2024, "Interpretability as Compression: Reconsidering SAE Explanations of Neural Activations with
MDL-SAEs", arXiv 2410.11179).

Two measures, streamed over the evaluation data:

    bound      L0 · (B + log2 F)       B bits for each active value, log2 F bits to name its latent
    entropy    Σ_i H(q_i)              q_i = round(f_i / Δ): latent i's activation quantised to bin
                                       width Δ, zero included; H the empirical entropy in bits

The paper computes the entropy with one effective precision for every latent, the bin width of
the histogram (there: the coarsest rounding that leaves the reconstruction loss nearly
unchanged). Codes of SAEs trained here are in units of inputs scaled to E‖x‖² = 1, so one
default Δ suits them all. Among SAEs whose error is within a tolerance, MDL prefers the one with
the shortest description.
"""

from __future__ import annotations

import math

import torch

from monosemantic.config import check
from monosemantic.sae.base import Codes

BIN_WIDTH = 2.0**-6
"""Default Δ: about a tenth of a typical active code (≈ 0.2 for TopK at k = 32)."""
VALUE_BITS = 8.0
"""Default B of the bound."""


class DescriptionLength:
    """Streaming accumulator of both measures: ``update`` per batch of codes, then ``result``.

    Counts are kept per (latent, quantised level) for the non-zero levels only; a latent's zero
    count is the number of inputs minus those.
    """

    def __init__(
        self, d_sae: int, *, bin_width: float = BIN_WIDTH, value_bits: float = VALUE_BITS
    ) -> None:
        check(d_sae > 0, "d_sae", d_sae, "a positive integer")
        check(bin_width > 0, "bin_width", bin_width, "a positive float (the quantisation step Δ)")
        check(value_bits > 0, "value_bits", value_bits, "a positive number of bits")
        self.d_sae = d_sae
        self.bin_width = bin_width
        self.value_bits = value_bits
        self.n = 0
        self._active = 0
        self._keys = torch.zeros(0, dtype=torch.int64)  # latent · 2^32 + (level + 2^31), sorted
        self._counts = torch.zeros(0, dtype=torch.int64)

    @torch.no_grad()
    def update(self, codes: Codes) -> None:
        """Add a batch of codes (dense or sparse)."""
        if codes.d_sae != self.d_sae:
            raise ValueError(f"codes have {codes.d_sae} latents, expected {self.d_sae}")
        values = codes.values.detach().double().cpu()
        if codes.indices is None:
            rows, latents = values.nonzero(as_tuple=True)
            values = values[rows, latents]
        else:
            indices = codes.indices.cpu()
            keep = values != 0
            latents, values = indices[keep], values[keep]
        self.n += codes.values.shape[0]
        self._active += int(latents.numel())
        levels = torch.round(values / self.bin_width).long()
        nonzero = levels != 0  # values within Δ/2 of 0 quantise to the zero level
        keys = latents[nonzero] * 2**32 + (levels[nonzero] + 2**31)
        keys, counts = torch.unique(keys, return_counts=True)
        merged, where = torch.unique(torch.cat([self._keys, keys]), return_inverse=True)
        totals = torch.zeros(len(merged), dtype=torch.int64)
        self._counts = totals.index_add_(0, where, torch.cat([self._counts, counts]))
        self._keys = merged

    def result(self) -> dict[str, float]:
        """``description_length_bound`` and ``description_length`` (bits per input), with
        ``description_length_bin_width``."""
        if self.n == 0:
            raise ValueError("no inputs seen: call update() with at least one batch first")
        latents = self._keys // 2**32
        p = self._counts.double() / self.n
        nonzero_mass = torch.zeros(self.d_sae, dtype=torch.float64).index_add_(0, latents, p)
        zero = (1.0 - nonzero_mass).clamp_min(0.0)
        entropy = -(p * p.log2()).sum() - (zero[zero > 0] * zero[zero > 0].log2()).sum()
        l0 = self._active / self.n
        return {
            "description_length_bound": l0 * (self.value_bits + math.log2(self.d_sae)),
            "description_length": float(entropy),
            "description_length_bin_width": self.bin_width,
        }
