"""The sparse autoencoder: one class; architectures differ in their sparsity function and losses.

Shapes: x [batch, d_in], pre-activations [batch, d_sae], x_hat [batch, d_out] (d_out = d_in
for an autoencoder). Weights follow SAELens names and layout: W_enc [d_in, d_sae], b_enc [d_sae],
W_dec [d_sae, d_out], b_dec [d_out], and a skip transcoder's W_skip [d_out, d_in].

    pre   = (x - b_dec) @ W_enc + b_enc  # a transcoder reads x itself: b_dec is an output bias
    f     = activation(pre)              # per architecture
    x_hat = f @ W_dec + b_dec  (+ x @ W_skipᵀ for a skip transcoder)

A transcoder (``cfg.hook_out`` set) reads one hook point and reconstructs another, e.g. an MLP's
input → its output (Dunefsky et al. 2024, arXiv 2406.11944); every architecture can be one. A
skip transcoder adds a linear map from input to output, initialised at 0 (Paulo et al. 2025,
arXiv 2501.18823).

An architecture is one file (see docs/guide.md, "Adding an architecture"): a config dataclass
subclassing ``SAEConfig`` with its own fields, and an ``SAE`` subclass decorated with
``registry.register`` that implements ``activation`` and declares ``config_class``, its sweep axes,
its SAELens name and mapping, whether its decoder is kept at unit norm, and any loss terms beyond
the objective's (``penalties``).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from monosemantic.config import ConfigError, check
from monosemantic.runtime import DTYPES
from monosemantic.sae.codes import Codes
from monosemantic.sae.sparse import SPARSE_DENSITY, Active, Encoding

UNKNOWN_HOOK = "unknown.hook_out"
"""A loaded transcoder's target when its files do not name one (SAELens's save_model and
sparsify do not record it); evaluation then takes it from --hook-out."""


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
    d_out: int = 0
    """Width of what the SAE reconstructs; 0: d_in (an autoencoder). A transcoder's output width."""
    dtype: str = "float32"
    """Weights' dtype (float32, bfloat16, float16, float64)."""
    hook: str = ""
    """The hook point the SAE reads, e.g. ``model.layers.6.mlp:output`` (empty for a matrix)."""
    hook_out: str = ""
    """A transcoder's target hook point (e.g. ``model.layers.3.mlp:output``): the SAE reads
    ``hook`` and reconstructs ``hook_out``; empty: an autoencoder of ``hook``."""
    skip: bool = False
    """A skip transcoder: add a linear skip x W_skipᵀ from input to output (needs hook_out)."""
    standardize: bool = False
    """Standardise each input vector (subtract its mean over d, divide by its std + 1e-5)
    before encoding and undo it after decoding: Lawson et al. 2024's multi-layer SAEs, SAELens's
    ``normalize_activations="layer_norm"``."""
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
        check(self.d_out >= 0, "d_out", self.d_out, "a positive integer, or 0 for d_in")
        self.d_out = self.d_out or self.d_in
        check(
            self.transcoder or self.d_out == self.d_in,
            "d_out",
            self.d_out,
            f"d_in={self.d_in} for an autoencoder; a transcoder (d_out ≠ d_in) needs hook_out, "
            "the hook point it reconstructs",
        )
        check(
            not (self.standardize and self.transcoder),
            "standardize",
            self.standardize,
            "False for a transcoder (its output is not its input's scale)",
        )
        check(
            self.transcoder or not self.skip,
            "skip",
            self.skip,
            "False for an autoencoder; a skip transcoder needs hook_out, the point it reconstructs",
        )
        check(self.dtype in DTYPES, "dtype", self.dtype, f"one of {sorted(DTYPES)}")
        self.validate()

    @property
    def transcoder(self) -> bool:
        """Whether the SAE reconstructs another hook point than it reads."""
        return bool(self.hook_out)

    @property
    def target_hook(self) -> str:
        """The hook point whose activations x_hat reconstructs."""
        return self.hook_out or self.hook

    def validate(self) -> None:
        """Check the architecture's own fields; raise ConfigError (``config.check``)."""

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON values, ``architecture`` first (``registry.config_from_dict``
        inverts it)."""
        return {"architecture": self.architecture, **asdict(self)}


@dataclass
class SAEOutput:
    """A training forward pass: reconstruction, codes and pre-activations."""

    x_hat: torch.Tensor  # [batch, d_out], the skip term included
    codes: Codes
    pre: torch.Tensor  # [batch, d_sae]; detached on the sparse path (read it through ``encoding``)
    skip: torch.Tensor | float = 0.0
    """A skip transcoder's x W_skipᵀ [batch, d_out] inside x_hat (0 otherwise), for loss terms
    that decode the codes again (Matryoshka's prefixes)."""
    scale: torch.Tensor | float = 1.0
    shift: torch.Tensor | float = 0.0
    """A standardising SAE's per-row std and mean [batch, 1]: x_hat = (what the decoder gives) ·
    scale + shift (+ skip); loss terms that decode again use them to reach x's units."""

    def raw(self, decoded: torch.Tensor) -> torch.Tensor:
        """A decoder output [batch, d_out] (codes W_dec + b_dec) in x's units, skip included
        (each of the three that is the identity skipped: it would be a pass over the batch)."""
        if not _is(self.scale, 1.0):
            decoded = decoded * self.scale
        if not _is(self.shift, 0.0):
            decoded = decoded + self.shift
        if not _is(self.skip, 0.0):
            decoded = decoded + self.skip
        return decoded

    active: Active | None = None
    """The sparse path's active pairs; None: dense codes."""
    active_values: torch.Tensor | None = None
    """[n] the codes at ``active``'s pairs (``codes`` holds them per row)."""
    sparse_encoding: Encoding | None = None

    @property
    def encoding(self) -> Encoding:
        """How loss terms read ``pre`` differentiably (``Encoding.at``, ``Encoding.decode``)."""
        return self.sparse_encoding if self.sparse_encoding is not None else Encoding(self.pre)

    def weighted_total(self, weights: torch.Tensor) -> torch.Tensor:
        """Σ over the batch and latents of f_i · weights_i (weights: [d_sae]), differentiable in
        both: over the pairs on the sparse path, not over rows padded to the longest one."""
        if self.active is None or self.active_values is None:
            return self.codes.scaled(weights).sum()
        values = self.active_values.to(weights.dtype)  # sums of bf16 codes kept in float32
        per_latent = values.new_zeros(self.active.d_sae).index_add(0, self.active.latents, values)
        return per_latent @ weights


Reduce = Callable[[torch.Tensor, str], torch.Tensor]
"""``(tensor, op)`` -> the tensor reduced over data-parallel processes (op: mean, sum, min, max)."""


def _is(value: torch.Tensor | float, constant: float) -> bool:
    return not isinstance(value, torch.Tensor) and value == constant


def squared_error(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Σ_d (a − b)² averaged over the rows of a, b [..., d]: torch's fused mean-squared-error
    kernel, summed, which makes one pass forward and one backward (the same written out as
    ``(a − b).pow(2).sum(-1).mean()`` makes five and six: 6.1 against 2.6 ms at [4096, 576])."""
    return F.mse_loss(a, b, reduction="sum") / a.shape[:-1].numel()


def local(tensor: torch.Tensor, op: str) -> torch.Tensor:
    """The ``Reduce`` of one process: its batch is the whole batch."""
    return tensor


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
    across_ranks: Reduce = local
    """Reduces over data-parallel processes, in place (``local`` in one process). Batch
    statistics that are not a mean over rows (a normaliser, ``update_state``'s minima) go
    through it, so each process's loss and state are those of the whole batch."""


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
    sparse_path: bool = True
    """Whether ``autoencode`` takes the sparse path (``sae/sparse.py``) when ``select`` gives the
    active pairs; set False on an instance for the dense reference."""
    sparse_density: float = SPARSE_DENSITY
    """Threshold architectures take the sparse path up to this fraction of active pairs."""

    def __init__(self, cfg: SAEConfig) -> None:
        super().__init__()
        if not isinstance(cfg, self.config_class):
            raise TypeError(
                f"{type(self).__name__} needs a {self.config_class.__name__}, "
                f"got a {type(cfg).__name__}"
            )
        self.cfg = cfg
        self.across_ranks: Reduce = local
        """How a batch-level selection (BatchTopK, Feature and Mutual Choice) reaches the rows of
        every data-parallel process: ``selecting_across`` sets it for a training step."""
        dtype = DTYPES[cfg.dtype]
        w_dec = _unit_rows(cfg.d_sae, cfg.d_out)
        self.W_dec = nn.Parameter(w_dec.to(dtype))
        # An autoencoder's encoder starts tied to its decoder; a transcoder's reads another space.
        self.init_encoder((_unit_rows(cfg.d_sae, cfg.d_in) if cfg.transcoder else w_dec).to(dtype))
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_out, dtype=dtype))
        self.W_skip = (
            nn.Parameter(torch.zeros(cfg.d_out, cfg.d_in, dtype=dtype)) if cfg.skip else None
        )

    def init_encoder(self, directions: torch.Tensor) -> None:
        """Create the encoder's parameters from unit directions [d_sae, d_in] (an autoencoder's
        initial decoder): W_enc = directionsᵀ (tied initialisation) and b_enc = 0. An
        architecture without an encoder overrides it."""
        self.W_enc = nn.Parameter(directions.T.clone())
        self.b_enc = nn.Parameter(torch.zeros(directions.shape[0], dtype=directions.dtype))

    @property
    def architecture(self) -> str:
        return self.cfg.architecture

    @property
    def d_in(self) -> int:
        return self.cfg.d_in

    @property
    def d_sae(self) -> int:
        return self.cfg.d_sae

    @property
    def d_out(self) -> int:
        return self.cfg.d_out

    def latent_biases(self) -> list[nn.Parameter]:
        """Per-latent encoder parameters [d_sae] that resampling resets to 0."""
        return [self.b_enc]

    # --- the forward pass -------------------------------------------------------------------

    def centred(self, x: torch.Tensor) -> torch.Tensor:
        """What the encoder reads: x − b_dec for an autoencoder, x itself for a transcoder."""
        return x if self.cfg.transcoder else x - self.b_dec

    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        """[batch, d_in] -> [batch, d_sae]: the encoder's affine map of ``centred(x)``."""
        return F.linear(self.centred(x), self.W_enc.T, self.b_enc)  # the bias fused in

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
        if self.cfg.standardize:
            x = standardized(x)[0]
        return self.activation(self.pre_acts(x))

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        """codes [..., d_sae] -> reconstruction [..., d_out] (without a skip transcoder's skip
        term, which reads x: ``forward_full`` adds it)."""
        return f @ self.W_dec + self.b_dec

    def forward_full(self, x: torch.Tensor) -> SAEOutput:
        """What training and evaluation need. x: [batch, d_in] -> ``SAEOutput`` (x_hat
        [batch, d_out]): ``autoencode`` plus a skip transcoder's skip term."""
        self.check_input(x)
        if self.cfg.standardize:
            x, mean, scale = standardized(x)
            out = self.autoencode(x)
            out.scale, out.shift = scale, mean
            out.x_hat = out.x_hat * scale + mean
            return out
        out = self.autoencode(x)
        if self.W_skip is not None:
            out.skip = x @ self.W_skip.T
            out.x_hat = out.x_hat + out.skip
        return out

    def autoencode(self, x: torch.Tensor) -> SAEOutput:
        """Encode and decode checked x [batch, d_in]: on the sparse path when ``select`` names the
        active pairs (codes as (indices, values), the decoder and every backward product over
        the pairs), else densely."""
        pre = self.pre_acts(x)
        active = self.select(pre.detach()) if self.sparse_path else None
        if active is None:
            f = self.activation(pre)
            return SAEOutput(x_hat=self.decode(f), codes=Codes(f), pre=pre)
        b_dec = None if self.cfg.transcoder else self.b_dec
        encoding = Encoding.sparse(pre, x, self.W_enc, self.encoder_bias(), b_dec)
        values = self.active_values(encoding, active)
        x_hat = encoding.decode(values, active, self.W_dec) + self.b_dec
        return SAEOutput(
            x_hat=x_hat,
            codes=active.codes(values),
            pre=encoding.dense,
            active=active,
            active_values=values,
            sparse_encoding=encoding,
        )

    def select(self, pre: torch.Tensor) -> Active | None:
        """The (row, latent) pairs that may be non-zero for pre-activations [batch, d_sae]
        (detached), or None to run this batch densely. Base: None (no sparse path)."""
        return None

    def active_values(self, encoding: Encoding, active: Active) -> torch.Tensor:
        """[n] the codes at the active pairs, differentiable: ``activation`` of the pairs'
        pre-activations. Base: their ReLU."""
        return encoding.at(active).relu()

    def encoder_bias(self) -> torch.Tensor | None:
        """The bias ``pre_acts`` adds after W_enc [d_sae], or None."""
        return self.b_enc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[..., d_in] -> reconstruction [..., d_out]; what ``patch`` splices into a model."""
        out = self.forward_full(x.reshape(-1, x.shape[-1]))
        return out.x_hat.reshape(*x.shape[:-1], self.d_out)

    # --- training ---------------------------------------------------------------------------

    @contextmanager
    def selecting_across(self, across_ranks: Reduce) -> Iterator[None]:
        """Inside, batch-level selections choose over the rows of every process (``across_ranks``
        reduces over them); outside, each call's batch is the whole batch (as when rank 0
        evaluates alone)."""
        self.across_ranks = across_ranks
        try:
            yield
        finally:
            self.across_ranks = local

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
    def tie_decoder_through(self, linear_map: torch.Tensor) -> None:
        """A transcoder's tied initialisation: decoder row i = the encoder's direction i carried
        through ``linear_map`` [d_in, d_out] (e.g. the least-squares map from inputs to
        targets), at unit norm, so each latent starts writing where its input points."""
        rows = self.W_enc.detach().float().T @ linear_map.float()
        self.W_dec.copy_(rows / rows.norm(dim=1, keepdim=True).clamp_min(1e-8))

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
    def fold_input_scale(self, scale: float, out_scale: float | None = None) -> None:
        """Make an SAE trained on ``scale * x`` (and, for a transcoder, targets
        ``out_scale * y``; None: ``scale``) act on raw x: same codes, x_hat in raw units.

        pre = (s·x − b_dec) W_enc + b_enc = (x − b_dec/s)(s·W_enc) + b_enc, and
        x_hat_raw = x_hat / t = f (W_dec/t) + b_dec/t + x (s/t · W_skip)ᵀ, with t the output
        scale (an autoencoder has t = s; a transcoder does not subtract b_dec).
        """
        out_scale = scale if out_scale is None else out_scale
        if not self.cfg.transcoder and out_scale != scale:
            raise ValueError("an autoencoder's input and output share one scale")
        if self.cfg.standardize:  # codes do not depend on the input's scale; x_hat follows it
            return
        self.W_enc.mul_(scale)
        self.W_dec.div_(out_scale)
        self.b_dec.div_(out_scale)
        if self.W_skip is not None:
            self.W_skip.mul_(scale / out_scale)

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
        out = f", d_out={self.d_out}" if self.cfg.transcoder else ""
        return f"{self.architecture}: d_in={self.d_in}, d_sae={self.d_sae}{out}"


STANDARDIZE_EPS = 1e-5


def standardized(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x [..., d] -> ((x − mean) / (std + eps), mean, std), mean and std [..., 1] over d; a
    reconstruction r goes back as r · std + mean (std with Bessel's correction, eps only on the
    way in: as Lawson et al.'s code and SAELens's "layer_norm" compute it)."""
    mean = x.mean(-1, keepdim=True)
    centred = x - mean
    std = centred.std(-1, keepdim=True)
    return centred / (std + STANDARDIZE_EPS), mean, std


def _unit_rows(rows: int, width: int) -> torch.Tensor:
    """[rows, width] random directions of unit norm (float32)."""
    w = torch.randn(rows, width, dtype=torch.float32)
    return w / w.norm(dim=1, keepdim=True)
