"""The training loop: several SAEs on the same batches, from any iterator of [batch, d_in] tensors.

The trainer does not know where activations come from. Per step, for every SAE:
Adam on its ``loss`` terms with LR warmup and linear decay, sparsity-coefficient warmup, decoder
rows kept at unit norm by gradient projection where the architecture needs it, dead-latent
tracking (for AuxK and resampling) and optional Anthropic-style resampling. Inputs are scaled
so that E‖x‖² = 1; the scale is folded into the weights when training ends, so the returned SAEs
act on raw activations. Checkpoints are atomic and ``resume=True`` continues bit-for-bit.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from monosemantic.config import check
from monosemantic.data.store import check_finite
from monosemantic.files import atomic_write
from monosemantic.sae.base import SAE, LossContext, geometric_median, lr_for_width

Batches = Iterable[torch.Tensor] | Callable[[int], Iterable[torch.Tensor]]
CHECKPOINT = "checkpoint.pt"


@dataclass
class TrainConfig:
    """How to train. Per-SAE settings (width, k, λ) live in each SAE's own config."""

    steps: int = 2000
    """Optimisation steps (one batch each)."""
    batch_size: int = 4096
    """Activations per batch."""
    lr: float | None = None
    """Adam learning rate; None: 2e-4 / sqrt(d_sae / 2^14) per SAE (Gao et al. 2024)."""
    adam_betas: tuple[float, float] = (0.9, 0.999)
    """Adam β1 β2 (JumpReLU's paper uses β1 = 0)."""
    lr_warmup_steps: int = 0
    """Ramp the learning rate linearly from 0 over these steps."""
    lr_decay_fraction: float = 0.2
    """Decay the LR linearly to 0 over this final fraction of the steps."""
    sparsity_warmup_steps: int = 0
    """Ramp each SAE's sparsity coefficient linearly from 0 over these steps."""
    init_b_dec: str = "geometric_median"
    """geometric_median | mean | zeros: b_dec before the first step, from the first batch."""
    normalize_inputs: bool = True
    """Scale inputs so that E‖x‖² = 1 (from the first batch); folded into the weights at the end."""
    dead_after_tokens: int = 1_000_000
    """A latent that has not fired for this many inputs is dead (AuxK, resampling, metrics)."""
    resample_every: int | None = None
    """Resample dead latents every this many steps (Bricken et al. 2023); None: never."""
    grad_clip: float | None = 1.0
    """Clip each SAE's gradient norm to this; None: no clipping."""
    checkpoint_every: int | None = None
    """Write train/checkpoint.pt every this many steps (and at the end); --resume uses it."""
    log_every: int = 50
    """Write a line of train/metrics.jsonl every this many steps."""
    seed: int = 0
    hook: str = ""
    """The hook point the activations come from, named in error messages."""
    progress: bool = True
    """Show a progress bar."""

    def __post_init__(self) -> None:
        self.adam_betas = (float(self.adam_betas[0]), float(self.adam_betas[1]))
        check(self.steps > 0, "steps", self.steps, "a positive integer")
        check(self.batch_size > 0, "batch_size", self.batch_size, "a positive integer")
        check(self.lr is None or self.lr > 0, "lr", self.lr, "a positive float or None")
        check(
            0 <= self.lr_decay_fraction <= 1,
            "lr_decay_fraction",
            self.lr_decay_fraction,
            "in [0, 1]",
        )
        check(
            self.init_b_dec in ("geometric_median", "mean", "zeros"),
            "init_b_dec",
            self.init_b_dec,
            "geometric_median, mean or zeros",
        )
        check(self.dead_after_tokens > 0, "dead_after_tokens", self.dead_after_tokens, "> 0")
        check(
            self.resample_every is None or self.resample_every > 0,
            "resample_every",
            self.resample_every,
            "a positive integer or None",
        )
        check(
            self.checkpoint_every is None or self.checkpoint_every > 0,
            "checkpoint_every",
            self.checkpoint_every,
            "a positive integer or None",
        )

    def lr_at(self, step: int, base: float) -> float:
        """Linear warmup, constant, linear decay to 0 over the last ``lr_decay_fraction``."""
        warm = min(1.0, (step + 1) / self.lr_warmup_steps) if self.lr_warmup_steps else 1.0
        decay_steps = int(self.steps * self.lr_decay_fraction)
        left = self.steps - step
        decay = min(1.0, left / decay_steps) if decay_steps else 1.0
        return base * warm * decay

    def sparsity_at(self, step: int, coefficient: float) -> float:
        if not self.sparsity_warmup_steps:
            return coefficient
        return coefficient * min(1.0, (step + 1) / self.sparsity_warmup_steps)


@dataclass
class _Run:
    """One SAE's training state."""

    sae: SAE
    optimizer: torch.optim.Adam
    base_lr: float
    since_fired: torch.Tensor  # [d_sae] inputs since each latent last fired


class Trainer:
    """Trains ``saes`` together on shared batches. See the module docstring."""

    def __init__(self, saes: list[SAE], cfg: TrainConfig, out_dir: Path | None = None) -> None:
        if not saes:
            raise ValueError("give at least one SAE to train")
        d_ins = {sae.d_in for sae in saes}
        if len(d_ins) != 1:
            raise ValueError(f"SAEs trained together must share d_in, got {sorted(d_ins)}")
        self.cfg = cfg
        self.out_dir = out_dir
        self.step = 0
        self.input_scale = 1.0
        self.runs = []
        for sae in saes:
            lr = cfg.lr if cfg.lr is not None else lr_for_width(sae.d_sae)
            opt = torch.optim.Adam(sae.parameters(), lr=lr, betas=cfg.adam_betas)
            since = torch.zeros(sae.d_sae, dtype=torch.long)
            self.runs.append(_Run(sae, opt, lr, since))

    # --- set-up -------------------------------------------------------------------------------

    @torch.no_grad()
    def initialise(self, first: torch.Tensor) -> None:
        """Input scale and b_dec from the first batch [batch, d_in] (raw units)."""
        if self.cfg.normalize_inputs:
            self.input_scale = float(1.0 / first.double().pow(2).sum(-1).mean().sqrt())
        x = first.float() * self.input_scale
        centre = {
            "geometric_median": lambda: geometric_median(x),
            "mean": lambda: x.mean(0),
            "zeros": lambda: torch.zeros(x.shape[-1]),
        }[self.cfg.init_b_dec]()
        for run in self.runs:
            run.sae.b_dec.copy_(centre.to(run.sae.b_dec.dtype))
            if run.sae.unit_norm_decoder:
                run.sae.normalize_decoder()

    # --- one step -----------------------------------------------------------------------------

    def dead_mask(self, run: _Run) -> torch.Tensor:
        return run.since_fired >= self.cfg.dead_after_tokens

    def train_step(self, batch: torch.Tensor) -> dict[str, dict[str, float]]:
        """One optimisation step of every SAE on ``batch`` [batch, d_in] (raw units)."""
        check_finite(batch, step=self.step, hook=self.cfg.hook)
        logs = {}
        for i, run in enumerate(self.runs):
            sae = run.sae
            x = (batch * self.input_scale).to(sae.W_enc.dtype)
            lam = self.cfg.sparsity_at(self.step, sae.cfg.sparsity_coefficient)
            lr = self.cfg.lr_at(self.step, run.base_lr)
            for group in run.optimizer.param_groups:
                group["lr"] = lr
            out = sae.forward_full(x)
            terms = sae.loss(
                x, out, LossContext(sparsity_coefficient=lam, dead=self.dead_mask(run))
            )
            if not torch.isfinite(terms["loss"]):
                raise FloatingPointError(
                    f"SAE {i} ({sae.cfg.architecture}) loss became {terms['loss'].item()} at step "
                    f"{self.step} on hook {self.cfg.hook or '?'}; weights were not updated. Lower "
                    "the learning rate or check the activations"
                )
            run.optimizer.zero_grad(set_to_none=True)
            terms["loss"].backward()
            if sae.unit_norm_decoder:
                sae.project_decoder_grad()
            if self.cfg.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(sae.parameters(), self.cfg.grad_clip)
            run.optimizer.step()
            if sae.unit_norm_decoder:
                sae.normalize_decoder()
            with torch.no_grad():
                fired = (out.f > 0).any(0)
                run.since_fired += x.shape[0]
                run.since_fired[fired] = 0
                if self.cfg.resample_every and (self.step + 1) % self.cfg.resample_every == 0:
                    self.resample(run, x)
                logs[str(i)] = {
                    **{k: float(v) for k, v in terms.items()},
                    "l0": float((out.f != 0).sum(-1).float().mean()),
                    "dead_fraction": float(self.dead_mask(run).float().mean()),
                    "lr": lr,
                    "sparsity_coefficient": lam,
                }
        self.step += 1
        return logs

    @torch.no_grad()
    def resample(self, run: _Run, x: torch.Tensor) -> int:
        """Anthropic-style resampling of dead latents (Bricken et al. 2023, "Towards
        Monosemanticity"): each dead latent's decoder row becomes a batch input drawn with
        probability ∝ its squared reconstruction error, normalised; its encoder column that
        direction × 0.2 × the mean alive encoder norm; its encoder bias 0; Adam moments for those
        entries are reset. Inputs are drawn from the current batch. Returns the number resampled.
        (Gated SAEs reset their gate and magnitude biases and r_mag, see ``latent_biases``.)
        """
        sae = run.sae
        dead = self.dead_mask(run).nonzero().squeeze(-1)
        if dead.numel() == 0:
            return 0
        error = (sae(x) - x).pow(2).sum(-1)
        if float(error.sum()) <= 0:
            return 0
        picks = torch.multinomial(error.pow(2), dead.numel(), replacement=True)
        directions = x[picks] - sae.b_dec
        directions = directions / directions.norm(dim=-1, keepdim=True).clamp_min(1e-8)
        alive = ~self.dead_mask(run)
        enc_norm = sae.W_enc[:, alive].norm(dim=0).mean() if alive.any() else torch.tensor(1.0)
        sae.W_dec[dead] = directions.to(sae.W_dec.dtype)
        sae.W_enc[:, dead] = (directions.T * 0.2 * enc_norm).to(sae.W_enc.dtype)
        biases = sae.latent_biases()
        for bias in biases:
            bias[dead] = 0.0
        resets = [(sae.W_dec, (dead,)), (sae.W_enc, (slice(None), dead))]
        for param, index in resets + [(bias, (dead,)) for bias in biases]:
            state = run.optimizer.state.get(param, {})
            for key in ("exp_avg", "exp_avg_sq"):
                if key in state:
                    state[key][index] = 0.0
        run.since_fired[dead] = 0
        return int(dead.numel())

    # --- checkpoints --------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "input_scale": self.input_scale,
            "config": asdict(self.cfg),
            "rng": torch.get_rng_state(),
            "runs": [
                {
                    "sae": r.sae.state_dict(),
                    "optimizer": r.optimizer.state_dict(),
                    "since_fired": r.since_fired,
                }
                for r in self.runs
            ],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if len(state["runs"]) != len(self.runs):
            raise ValueError(
                f"checkpoint holds {len(state['runs'])} SAEs but {len(self.runs)} were given; "
                "resume with the same sweep"
            )
        self.step = int(state["step"])
        self.input_scale = float(state["input_scale"])
        torch.set_rng_state(state["rng"])
        for run, saved in zip(self.runs, state["runs"], strict=True):
            run.sae.load_state_dict(saved["sae"])
            run.optimizer.load_state_dict(saved["optimizer"])
            run.since_fired.copy_(saved["since_fired"])

    def save_checkpoint(self) -> Path:
        assert self.out_dir is not None
        state = self.state_dict()
        return atomic_write(self.out_dir / CHECKPOINT, lambda tmp: torch.save(state, tmp))

    def load_checkpoint(self) -> None:
        path = checkpoint_path(self.out_dir)
        self.load_state_dict(torch.load(path, weights_only=True))

    # --- the loop -----------------------------------------------------------------------------

    def fit(self, batches: Iterable[torch.Tensor]) -> list[dict[str, float]]:
        """Train until ``cfg.steps``; returns each SAE's metrics at the last step.

        ``batches`` must start at batch number ``self.step`` (0 for a fresh run).
        """
        cfg = self.cfg
        log_file = None
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            log_file = (self.out_dir / "metrics.jsonl").open("a")
        iterator: Iterator[torch.Tensor] = iter(batches)
        for run in self.runs:
            run.sae.train()
        last: dict[str, dict[str, float]] = {}
        bar = tqdm(total=cfg.steps, initial=self.step, disable=not cfg.progress, desc="train")
        try:
            while self.step < cfg.steps:
                batch = next(iterator, None)
                if batch is None:
                    raise ValueError(
                        f"activation source ran out after {self.step} of {cfg.steps} steps; "
                        "give more data or fewer steps"
                    )
                if self.step == 0:
                    self.initialise(batch)
                last = self.train_step(batch)
                bar.update(1)
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    bar.set_postfix(loss=f"{last['0']['loss']:.4g}", l0=f"{last['0']['l0']:.1f}")
                    if log_file is not None:
                        log_file.write(json.dumps({"step": self.step, "saes": last}) + "\n")
                        log_file.flush()
                if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0 and self.out_dir:
                    self.save_checkpoint()
        finally:
            bar.close()
            if log_file is not None:
                log_file.close()
        if self.out_dir is not None:
            self.save_checkpoint()
        return [last.get(str(i), {}) for i in range(len(self.runs))]


def checkpoint_path(out_dir: Path | None) -> Path:
    if out_dir is None or not (out_dir / CHECKPOINT).exists():
        raise FileNotFoundError(
            f"no checkpoint to resume from in {out_dir}; run without --resume to start afresh"
        )
    return out_dir / CHECKPOINT


def train(
    saes: list[SAE],
    batches: Batches,
    cfg: TrainConfig,
    out_dir: Path | None = None,
    resume: bool = False,
) -> list[dict[str, float]]:
    """Train ``saes`` in place on ``batches`` ([batch, d_in] tensors, raw units).

    ``batches`` is an iterable, or a function of the start step returning one (needed for
    ``resume``: it must yield the batches from that step on). When training ends the input scale
    is folded into the weights, so the SAEs act on raw activations. Returns each SAE's metrics at
    the last step (loss terms, l0, dead_fraction, lr) plus ``input_scale``.
    """
    trainer = Trainer(saes, cfg, out_dir)
    if resume:
        if not callable(batches):
            raise TypeError("resume needs `batches` as a function of the start step")
        trainer.load_checkpoint()
    else:
        torch.manual_seed(cfg.seed)
    source = batches(trainer.step) if callable(batches) else batches
    results = trainer.fit(source)
    for run in trainer.runs:
        run.sae.fold_input_scale(trainer.input_scale)
        run.sae.eval()
    return [{**r, "input_scale": trainer.input_scale} for r in results]
