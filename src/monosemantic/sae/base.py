"""The sparse autoencoder: one class, architectures differ in their sparsity function and losses.

Shapes: x [batch, d_in], pre-activations and codes f [batch, d_sae], x_hat [batch, d_in].
Weights follow SAELens names and layout: W_enc [d_in, d_sae], b_enc [d_sae], W_dec [d_sae, d_in],
b_dec [d_in].

    pre   = (x - b_dec) @ W_enc + b_enc
    f     = activation(pre)              # per architecture
    x_hat = f @ W_dec + b_dec

An architecture subclasses ``SAE``, sets ``architecture``, implements ``activation`` and may add
loss terms in ``loss``; then it gets one line in ``registry.py``.
"""

from __future__ import annotations

import abc
import math
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from monosemantic.config import check, dataclass_from_dict
from monosemantic.runtime import DTYPES


@dataclass
class SAEConfig:
    """Everything needed to build an SAE. Validated at construction."""

    architecture: str
    d_in: int
    d_sae: int
    k: int | None = None
    """Active latents per input (topk, batchtopk)."""
    sparsity_coefficient: float = 0.0
    """λ: weight of the L1 (relu, gated) or L0 (jumprelu) penalty."""
    aux_k: int | None = None
    """Dead latents used by the AuxK loss; default d_in // 2 (topk, batchtopk)."""
    aux_coefficient: float = 1 / 32
    """Weight of the auxiliary loss (AuxK for topk/batchtopk)."""
    jumprelu_bandwidth: float = 1e-3
    """ε of the rectangle kernel in JumpReLU's straight-through estimators."""
    jumprelu_init_threshold: float = 1e-3
    dtype: str = "float32"
    hook: str = ""
    """The hook point the SAE reads, e.g. ``model.layers.6.mlp:output``."""
    model: str = ""
    """The subject model's name, for the record."""
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from monosemantic.sae.registry import ARCHITECTURES, check_architecture

        check_architecture(self.architecture)
        check(self.d_in > 0, "d_in", self.d_in, "a positive integer")
        check(self.d_sae > 0, "d_sae", self.d_sae, "a positive integer")
        check(self.dtype in DTYPES, "dtype", self.dtype, f"one of {sorted(DTYPES)}")
        check(
            self.sparsity_coefficient >= 0,
            "sparsity_coefficient",
            self.sparsity_coefficient,
            ">= 0",
        )
        if self.k is not None:
            check(0 < self.k <= self.d_sae, "k", self.k, f"in 1..d_sae={self.d_sae}")
        ARCHITECTURES[self.architecture].validate(self)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SAEConfig:
        return dataclass_from_dict(cls, data)


@dataclass
class SAEOutput:
    """What a forward pass returns: reconstruction, codes, pre-activations, and extras."""

    x_hat: torch.Tensor  # [batch, d_in]
    f: torch.Tensor  # [batch, d_sae]
    pre: torch.Tensor  # [batch, d_sae]
    extras: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class LossContext:
    """Training state a loss may need beyond the batch."""

    sparsity_coefficient: float = 0.0
    """λ after warmup."""
    dead: torch.Tensor | None = None
    """[d_sae] bool: latents that have not fired for a while (AuxK)."""


class SAE(nn.Module, abc.ABC):
    """Base sparse autoencoder. Subclasses implement ``activation``; see the module docstring."""

    architecture: ClassVar[str] = ""
    unit_norm_decoder: ClassVar[bool] = False
    """Whether the trainer keeps decoder rows at unit norm (with gradient projection)."""
    saelens_architecture: ClassVar[str | None] = None
    """The SAELens ``architecture`` this one is saved as, when its name differs."""

    def __init__(self, cfg: SAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        dtype = DTYPES[cfg.dtype]
        w_dec = torch.randn(cfg.d_sae, cfg.d_in, dtype=torch.float32)
        w_dec = w_dec / w_dec.norm(dim=1, keepdim=True)
        self.W_dec = nn.Parameter(w_dec.to(dtype))
        self.W_enc = nn.Parameter(w_dec.T.clone().to(dtype))  # tied initialisation
        self.b_enc = nn.Parameter(torch.zeros(cfg.d_sae, dtype=dtype))
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_in, dtype=dtype))

    @classmethod
    def validate(cls, cfg: SAEConfig) -> None:
        """Check architecture-specific config fields; raise ConfigError."""

    def latent_biases(self) -> list[nn.Parameter]:
        """Per-latent encoder parameters [d_sae] that resampling resets to 0."""
        return [self.b_enc]

    @property
    def d_in(self) -> int:
        return self.cfg.d_in

    @property
    def d_sae(self) -> int:
        return self.cfg.d_sae

    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        """[batch, d_in] -> [batch, d_sae]: the encoder's affine map, b_dec subtracted first."""
        return (x - self.b_dec) @ self.W_enc + self.b_enc

    @abc.abstractmethod
    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        """[batch, d_sae] pre-activations -> codes. The architecture's sparsity function."""

    def check_input(self, x: torch.Tensor) -> None:
        if x.shape[-1] != self.d_in:
            where = f" (hook {self.cfg.hook})" if self.cfg.hook else ""
            raise ValueError(
                f"SAE expects inputs with d_in={self.d_in}{where}, got shape {tuple(x.shape)}; "
                "train or load an SAE for this hook point"
            )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """[..., d_in] -> codes [..., d_sae]."""
        self.check_input(x)
        return self.activation(self.pre_acts(x))

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        """codes [..., d_sae] -> reconstruction [..., d_in]."""
        return f @ self.W_dec + self.b_dec

    def forward_full(self, x: torch.Tensor) -> SAEOutput:
        """Everything the losses need. x: [batch, d_in]."""
        self.check_input(x)
        pre = self.pre_acts(x)
        f = self.activation(pre)
        return SAEOutput(x_hat=self.decode(f), f=f, pre=pre)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[..., d_in] -> reconstruction [..., d_in]; what ``patch`` splices into a model."""
        shape = x.shape
        out = self.forward_full(x.reshape(-1, shape[-1]))
        return out.x_hat.reshape(shape)

    def loss(self, x: torch.Tensor, out: SAEOutput, ctx: LossContext) -> dict[str, torch.Tensor]:
        """Loss terms; ``loss`` is the total that is minimised. Base: squared error only.

        ``mse`` is Σ_d (x - x_hat)² averaged over the batch.
        """
        mse = (out.x_hat - x).pow(2).sum(-1).mean()
        return {"loss": mse, "mse": mse}

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        """Rescale decoder rows to unit norm."""
        self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-8))

    @torch.no_grad()
    def project_decoder_grad(self) -> None:
        """Remove the gradient component parallel to each (unit) decoder row."""
        if self.W_dec.grad is None:
            return
        rows = self.W_dec / self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-8)
        parallel = (self.W_dec.grad * rows).sum(-1, keepdim=True)
        self.W_dec.grad.sub_(parallel * rows)

    @torch.no_grad()
    def fold_input_scale(self, scale: float) -> None:
        """Make an SAE trained on ``scale * x`` act on raw x: same codes, x_hat in raw units.

        pre = (s·x − b_dec) W_enc + b_enc = (x − b_dec/s)(s·W_enc) + b_enc, and
        x_hat_raw = x_hat / s = f (W_dec/s) + b_dec/s.
        """
        if scale == 1.0:
            return
        self.W_enc.mul_(scale)
        self.W_dec.div_(scale)
        self.b_dec.div_(scale)

    def export_state(self) -> dict[str, torch.Tensor]:
        """Tensors as SAELens names and stores them (override where names differ)."""
        return {k: v.detach().contiguous() for k, v in self.state_dict().items()}

    def import_state(self, state: dict[str, torch.Tensor]) -> None:
        """Inverse of ``export_state``."""
        self.load_state_dict(state)

    def extra_repr(self) -> str:
        return f"{self.architecture}: d_in={self.d_in}, d_sae={self.d_sae}"


def geometric_median(points: torch.Tensor, iters: int = 100, tol: float = 1e-6) -> torch.Tensor:
    """Weiszfeld's algorithm. points: [n, d] -> [d], the point minimising Σ‖p_i − m‖."""
    points = points.double()
    median = points.mean(0)
    for _ in range(iters):
        dist = (points - median).norm(dim=1).clamp_min(1e-12)
        weights = 1.0 / dist
        new = (weights[:, None] * points).sum(0) / weights.sum()
        moved = (new - median).norm()
        median = new
        if moved <= tol * max(1.0, median.norm().item()):
            break
    return median.float()


def default_aux_k(cfg: SAEConfig) -> int:
    return cfg.aux_k if cfg.aux_k is not None else min(cfg.d_sae, max(1, cfg.d_in // 2))


def lr_for_width(d_sae: int) -> float:
    """Gao et al. 2024's learning-rate scaling: 2e-4 / sqrt(d_sae / 2^14)."""
    return 2e-4 / math.sqrt(d_sae / 2**14)
