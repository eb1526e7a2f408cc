"""Bilinear layers and their gated (GLU) relatives.

A bilinear layer computes g(x) = (W x) ⊙ (V x) (Pearce et al. 2024, "Bilinear MLPs enable
weight-based mechanistic interpretability", arXiv 2410.08417; Dooms et al. 2024, arXiv 2406.03947);
a GLU puts a nonlinearity on one side, g(x) = σ(W x) ⊙ (V x) (Shazeer 2020). Both sides come from
one ``nn.Linear`` to 2·d_out, split in halves. A bias is folded in by appending a constant 1 to x,
so the layer stays exactly quadratic in the augmented input [x, 1] and the tensor maths in
``monosemantic.bilinear.tensor`` covers it unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from monosemantic.config import check

GATES: dict[str, type[nn.Module]] = {
    "none": nn.Identity,
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
}
"""Gate nonlinearities σ by name; ``none`` makes the layer bilinear."""


def append_one(x: torch.Tensor) -> torch.Tensor:
    """[..., d] -> [..., d + 1]: x with a constant 1 appended (the folded bias)."""
    return torch.cat([x, x.new_ones(*x.shape[:-1], 1)], dim=-1)


class GLU(nn.Module):
    """g(x) = σ(W x) ⊙ (V x), x: [..., d_in] -> [..., d_out].

    ``proj.weight`` is [2·d_out, d_in (+1 with bias)]: rows ``:d_out`` are W, the rest V.
    """

    def __init__(self, d_in: int, d_out: int, gate: str = "none", bias: bool = False) -> None:
        super().__init__()
        check(d_in > 0, "d_in", d_in, "a positive integer")
        check(d_out > 0, "d_out", d_out, "a positive integer")
        check(gate in GATES, "gate", gate, f"one of {sorted(GATES)}")
        self.d_in, self.d_out, self.gate_name, self.bias = d_in, d_out, gate, bias
        self.proj = nn.Linear(d_in + int(bias), 2 * d_out, bias=False)
        self.gate = GATES[gate]()

    @property
    def W(self) -> torch.Tensor:
        """[d_out, d_in (+1)]: the gated side; the last column is the bias when ``bias``."""
        return self.proj.weight[: self.d_out]

    @property
    def V(self) -> torch.Tensor:
        """[d_out, d_in (+1)]: the linear side."""
        return self.proj.weight[self.d_out :]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.d_in:
            raise ValueError(
                f"{type(self).__name__} expects inputs with d_in={self.d_in}, "
                f"got shape {tuple(x.shape)}"
            )
        left, right = self.proj(append_one(x) if self.bias else x).chunk(2, dim=-1)
        return self.gate(left) * right

    def extra_repr(self) -> str:
        return f"d_in={self.d_in}, d_out={self.d_out}, gate={self.gate_name}, bias={self.bias}"


class Bilinear(GLU):
    """g(x) = (W x) ⊙ (V x): a GLU without a gate nonlinearity."""

    def __init__(self, d_in: int, d_out: int, bias: bool = False) -> None:
        super().__init__(d_in, d_out, gate="none", bias=bias)


class GatedMLP(nn.Module):
    """y = P g(x) with g a GLU of hidden width d_hidden; x, y: [..., d_model]."""

    def __init__(self, d_model: int, d_hidden: int, gate: str = "none", bias: bool = False) -> None:
        super().__init__()
        self.glu = GLU(d_model, d_hidden, gate=gate, bias=bias)
        self.out = nn.Linear(d_hidden, d_model, bias=False)

    @property
    def P(self) -> torch.Tensor:
        """[d_model, d_hidden]: the out-projection."""
        return self.out.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.glu(x))


class BilinearMLP(GatedMLP):
    """y = P ((W x) ⊙ (V x)): the bilinear MLP whose tensor ``bilinear.tensor`` decomposes."""

    def __init__(self, d_model: int, d_hidden: int, bias: bool = False) -> None:
        super().__init__(d_model, d_hidden, gate="none", bias=bias)
