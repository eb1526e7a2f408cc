"""The sparse autoencoder: one class; architectures differ in their sparsity function and losses.

Shapes: x [batch, d_in], pre-activations [batch, d_sae], x_hat [batch, d_in].
Weights follow SAELens names and layout: W_enc [d_in, d_sae], b_enc [d_sae], W_dec [d_sae, d_in],
b_dec [d_in].

    pre   = (x - b_dec) @ W_enc + b_enc
    f     = activation(pre)              # per architecture
    x_hat = f @ W_dec + b_dec

An architecture is one file (see docs/guide.md, "Adding an architecture"): a config dataclass
subclassing ``SAEConfig`` with its own fields, and an ``SAE`` subclass decorated with
``registry.register`` that implements ``activation`` and declares ``config_class``, its sweep axes,
its SAELens name and mapping, whether its decoder is kept at unit norm, and any loss terms beyond
the objective's (``penalties``).
"""

from __future__ import annotations

import abc
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from monosemantic.config import ConfigError, check
from monosemantic.runtime import DTYPES


@dataclass(kw_only=True)
class SAEConfig:
    """What every SAE has. Each architecture subclasses this with its own fields and
    ``architecture`` name; build one with ``registry.config(name, ...)`` or the subclass."""

    architecture: ClassVar[str] = ""
    """The registry name, set by each architecture's config class."""
    d_in: int
    """Width of the activations the SAE reads."""
    d_sae: int
    """Number of latents."""
    dtype: str = "float32"
    """Weights' dtype (float32, bfloat16, float16, float64)."""
    hook: str = ""
    """The hook point the SAE reads, e.g. ``model.layers.6.mlp:output`` (empty for a matrix)."""
    model: str = ""
    """The subject model's name, for the record."""
    metadata: dict[str, Any] = field(default_factory=dict)
    """Anything else to keep in cfg.json (JSON values only)."""

    def __post_init__(self) -> None:
        if not self.architecture:
            raise ConfigError(
                "SAEConfig holds only the fields every SAE shares: build an architecture's "
                "config, e.g. monosemantic.sae.registry.config('topk', d_in=..., d_sae=..., k=...)"
            )
        check(self.d_in > 0, "d_in", self.d_in, "a positive integer")
        check(self.d_sae > 0, "d_sae", self.d_sae, "a positive integer")
        check(self.dtype in DTYPES, "dtype", self.dtype, f"one of {sorted(DTYPES)}")
        self.validate()

    def validate(self) -> None:
        """Check the architecture's own fields; raise ConfigError (``config.check``)."""

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON values, ``architecture`` first (``registry.config_from_dict``
        inverts it)."""
        return {"architecture": self.architecture, **asdict(self)}


class Codes:
    """A batch's latent activations: dense ``[batch, d_sae]``, or each row's k (index, value)
    pairs (``indices``, ``values``: [batch, k]) so nothing needs a dense matrix. A value may be 0
    (an entry kept by top-k whose ReLU is 0): it does not count as firing."""

    def __init__(
        self, values: torch.Tensor, indices: torch.Tensor | None = None, d_sae: int | None = None
    ) -> None:
        if indices is not None and d_sae is None:
            raise ValueError("sparse codes need d_sae, the number of latents")
        self.values = values
        self.indices = indices
        self.d_sae = values.shape[-1] if indices is None else int(d_sae)  # type: ignore[arg-type]

    def dense(self) -> torch.Tensor:
        """[batch, d_sae]."""
        if self.indices is None:
            return self.values
        out = self.values.new_zeros(*self.values.shape[:-1], self.d_sae)
        return out.scatter(-1, self.indices, self.values)

    def active(self) -> torch.Tensor:
        """[batch] number of non-zero codes in each row (L0)."""
        return (self.values != 0).sum(-1)

    def fire_counts(self) -> torch.Tensor:
        """[d_sae] number of rows on which each latent is non-zero (int64)."""
        fired = self.values != 0
        if self.indices is None:
            return fired.sum(0)
        return torch.bincount(self.indices[fired], minlength=self.d_sae)


@dataclass
class SAEOutput:
    """A training forward pass: reconstruction, codes and pre-activations."""

    x_hat: torch.Tensor  # [batch, d_in]
    codes: Codes
    pre: torch.Tensor  # [batch, d_sae]


@dataclass
class LossContext:
    """Training state that loss terms may need beyond the batch."""

    sparsity_scale: float = 1.0
    """Warmup factor in [0, 1] applied to sparsity penalties."""
    dead: torch.Tensor | None = None
    """[d_sae] bool: latents that have not fired for a while (AuxK)."""
    density: torch.Tensor | None = None
    """[d_sae] float: each latent's running firing frequency per input (aux_zipf_loss)."""
    step: int = 0
    """The training step being taken (0-based), for loss terms with a schedule."""
    steps: int = 1
    """The run's number of steps."""


Penalties = dict[str, tuple[float, torch.Tensor]]
"""Loss terms beyond the objective's: name -> (weight, value); the objective adds weight·value."""


class SAE(nn.Module, abc.ABC):
    """Base sparse autoencoder; see the module docstring. Class attributes are the
    architecture's declarations, read by the registry, the sweep, save/load and the trainer."""

    config_class: ClassVar[type[SAEConfig]]
    """The architecture's config dataclass; its ``architecture`` is the registry name."""
    sweep_axes: ClassVar[dict[str, str]] = {}
    """Config fields a sweep may give several values, with the label used in folder names."""
    unit_norm_decoder: ClassVar[bool] = False
    """Whether the trainer keeps decoder rows at unit norm (with gradient projection)."""
    saelens_architecture: ClassVar[str | None] = None
    """The SAELens ``architecture`` written to cfg.json; None: this architecture's name."""
    saelens_reads: ClassVar[tuple[str, ...]] = ()
    """SAELens architectures whose folders load as this one."""

    def __init__(self, cfg: SAEConfig) -> None:
        super().__init__()
        if not isinstance(cfg, self.config_class):
            raise TypeError(
                f"{type(self).__name__} needs a {self.config_class.__name__}, "
                f"got a {type(cfg).__name__}"
            )
        self.cfg = cfg
        dtype = DTYPES[cfg.dtype]
        w_dec = torch.randn(cfg.d_sae, cfg.d_in, dtype=torch.float32)
        w_dec = w_dec / w_dec.norm(dim=1, keepdim=True)
        self.W_dec = nn.Parameter(w_dec.to(dtype))
        self.init_encoder(w_dec.to(dtype))
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_in, dtype=dtype))

    def init_encoder(self, w_dec: torch.Tensor) -> None:
        """Create the encoder's parameters from the initial decoder [d_sae, d_in]: W_enc = W_decᵀ
        (tied initialisation) and b_enc = 0. An architecture without an encoder overrides it."""
        self.W_enc = nn.Parameter(w_dec.T.clone())
        self.b_enc = nn.Parameter(torch.zeros(w_dec.shape[0], dtype=w_dec.dtype))

    @property
    def architecture(self) -> str:
        return self.cfg.architecture

    @property
    def d_in(self) -> int:
        return self.cfg.d_in

    @property
    def d_sae(self) -> int:
        return self.cfg.d_sae

    def latent_biases(self) -> list[nn.Parameter]:
        """Per-latent encoder parameters [d_sae] that resampling resets to 0."""
        return [self.b_enc]

    # --- the forward pass -------------------------------------------------------------------

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
        """What training and evaluation need. x: [batch, d_in]. Architectures whose codes are
        sparse override this to return ``Codes`` as (indices, values)."""
        self.check_input(x)
        pre = self.pre_acts(x)
        f = self.activation(pre)
        return SAEOutput(x_hat=self.decode(f), codes=Codes(f), pre=pre)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[..., d_in] -> reconstruction [..., d_in]; what ``patch`` splices into a model."""
        shape = x.shape
        out = self.forward_full(x.reshape(-1, shape[-1]))
        return out.x_hat.reshape(shape)

    # --- training ---------------------------------------------------------------------------

    def penalties(self, out: SAEOutput, target: torch.Tensor, ctx: LossContext) -> Penalties:
        """Loss terms of this architecture beyond the objective's reconstruction (sparsity
        penalties, auxiliary losses); ``target`` [batch, d_in] is what x_hat should match."""
        return {}

    @torch.no_grad()
    def update_state(self, out: SAEOutput, ctx: LossContext) -> None:
        """Update non-gradient state from a training step's output (after the optimiser step;
        ``ctx`` is the step's context). Base: nothing."""

    def training_state(self) -> dict[str, torch.Tensor]:
        """State that only training needs (schedules, running statistics), checkpointed by the
        trainer but not part of the saved dictionary. Base: none."""
        return {}

    def load_training_state(self, state: dict[str, torch.Tensor]) -> None:
        """Inverse of ``training_state``."""

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

    # --- SAELens mapping --------------------------------------------------------------------

    @classmethod
    def saelens_fields(cls, cfg: SAEConfig) -> dict[str, Any]:
        """Architecture fields SAELens reads from cfg.json (e.g. TopK's ``k``)."""
        return {}

    @classmethod
    def config_from_saelens(cls, raw: dict[str, Any]) -> dict[str, Any]:
        """Our config fields from an SAELens cfg.json (``raw``); ValueError if unusable."""
        return {}

    @classmethod
    def weights_from_saelens(cls, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Tensors of an SAELens folder under the names ``export_state`` uses."""
        return weights

    @classmethod
    def shift_encoder_bias(
        cls, weights: dict[str, torch.Tensor], shift: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Weights whose encoder reads x − b_dec from ones that read x: ``shift`` = b_dec W_enc
        [d_sae] is added to the pre-activation bias."""
        return {**weights, "b_enc": weights["b_enc"] + shift}

    def export_state(self) -> dict[str, torch.Tensor]:
        """Tensors as SAELens names and stores them (override where names differ)."""
        return {k: v.detach().contiguous() for k, v in self.state_dict().items()}

    def import_state(self, state: dict[str, torch.Tensor]) -> None:
        """Inverse of ``export_state``."""
        self.load_state_dict(state)

    def extra_repr(self) -> str:
        return f"{self.architecture}: d_in={self.d_in}, d_sae={self.d_sae}"
