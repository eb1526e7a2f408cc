"""The training loop: several SAEs on the same model pass, from any iterator of activations.

The trainer does not know where activations come from: each step is a tensor [batch, d_in] or a
mapping ``{hook: [batch, d_hook]}`` (one model pass at several hook points); each SAE reads the
entry of its ``cfg.hook`` (a transcoder's target that of its ``cfg.hook_out``), so SAEs of
different widths and inputs train in one run. Per step, for
every SAE: the objective's loss terms (``objective.reconstruction`` by default), Adam (or Signum,
Muon: ``optimizers.py``) with LR warmup and linear decay, sparsity warmup, and after backward one
place for the gradients (decoder rows kept at unit norm by projection where the architecture
asks, clipping); then the architecture's own state update, dead-latent tracking and running
densities (for AuxK, aux_zipf_loss and resampling) and optional Anthropic-style resampling.
Inputs are scaled per hook so that E‖x‖² = 1; the scale is folded into the weights when training
ends, so the returned SAEs act on raw activations. Checkpoints are atomic and ``resume=True``
continues bit-for-bit.

Data-parallel (``world``, from ``distributed.launch``): each process gets its part of every
global batch (``cfg.batch_size`` rows in all); gradients are averaged over processes before
clipping, the first step's rows are gathered so input scales and b_dec come from the whole
batch, fire counts are summed, the architectures' batch statistics go through
``LossContext.across_ranks`` and resampling draws from the gathered batch with the RNG every
process shares, so all processes hold the same weights and take the steps one process would
take on the whole batches. Only the main process writes files.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from monosemantic.config import check
from monosemantic.data.store import Step, check_finite, rows_at
from monosemantic.files import atomic_write, finite, remove_partial_writes
from monosemantic.runtime import mixed_precision
from monosemantic.sae.base import SAE, LossContext, local, standardized
from monosemantic.training.distributed import SINGLE, World
from monosemantic.training.objective import Batch, Objective, reconstruction
from monosemantic.training.optimizers import OPTIMIZERS, default_lr, make_optimizer

OBJECTIVES = ("local", "e2e", "e2e+ds")
DISTRIBUTE = ("data", "saes")
Batches = Iterable[Step] | Callable[[int], Iterable[Step]]
CHECKPOINT = "checkpoint.pt"
AUTOCAST = (None, "bfloat16", "float16")
UNMEASURED = -1.0
"""A latent density before the first step."""


@dataclass
class TrainConfig:
    """How to train. Per-SAE settings (width, k, λ) live in each SAE's own config."""

    steps: int = 2000
    """Optimisation steps (one batch each)."""
    batch_size: int = 4096
    """Activations per batch."""
    optimizer: str = "adam"
    """adam | signum (sign of the momentum) | muon (orthogonalised momentum for matrices, Adam
    for biases); see training/optimizers.py."""
    lr: float | None = None
    """Learning rate; None: per SAE, adam 2e-4 and signum 5e-3 times sqrt(2^14 / d_sae) (Gao et
    al. 2024's width scaling), muon 2e-3."""
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
    autocast: str | None = None
    """bfloat16 (CPU or GPU) or float16 (GPU): each SAE's forward and loss run under
    torch.autocast in this dtype while its weights and optimiser state keep their own dtype
    (float32 master weights); None: no autocast."""
    checkpoint_every: int | None = None
    """Write train/checkpoint.pt every this many steps (and at the end); --resume uses it."""
    log_every: int = 50
    """Write a line of train/metrics.jsonl every this many steps."""
    objective: str = "local"
    """local: reconstruct the activations; e2e: minimise KL(p_clean ‖ p_sae) of the model's
    next-token predictions with the SAE spliced in (Braun et al. 2024; needs text data);
    e2e+ds: e2e plus the MSE of the activations at --downstream-hooks."""
    kl_coefficient: float = 1.0
    """α, the weight of e2e's KL term."""
    downstream_hooks: list[str] = field(default_factory=list)
    """e2e+ds: later hook points whose activations the spliced model should keep (e.g. the
    residual stream after every later layer)."""
    downstream_coefficient: float = 1.0
    """β, e2e+ds's weight of the downstream MSE, shared equally by the hook points."""
    distribute: str = "data"
    """Under torchrun: data (every process trains every SAE on its part of each global batch of
    batch_size rows, gradients averaged) or saes (each process trains its share of the sweep's
    SAEs on whole batches); see docs/scaling.md."""
    seed: int = 0
    progress: bool = True
    """Show a progress bar."""

    def __post_init__(self) -> None:
        self.adam_betas = (float(self.adam_betas[0]), float(self.adam_betas[1]))
        check(self.steps > 0, "steps", self.steps, "a positive integer")
        check(self.batch_size > 0, "batch_size", self.batch_size, "a positive integer")
        check(self.optimizer in OPTIMIZERS, "optimizer", self.optimizer, f"one of {OPTIMIZERS}")
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
            self.autocast in AUTOCAST,
            "autocast",
            self.autocast,
            "bfloat16, float16 or None (no autocast)",
        )
        check(self.objective in OBJECTIVES, "objective", self.objective, f"one of {OBJECTIVES}")
        check(self.distribute in DISTRIBUTE, "distribute", self.distribute, f"one of {DISTRIBUTE}")
        check(self.kl_coefficient > 0, "kl_coefficient", self.kl_coefficient, "> 0")
        check(
            bool(self.downstream_hooks) == (self.objective == "e2e+ds"),
            "downstream_hooks",
            self.downstream_hooks,
            "one or more hook points for --objective e2e+ds, and none for the others",
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

    def sparsity_scale_at(self, step: int) -> float:
        """The factor on every sparsity coefficient: a linear ramp over the warmup steps."""
        if not self.sparsity_warmup_steps:
            return 1.0
        return min(1.0, (step + 1) / self.sparsity_warmup_steps)


@dataclass
class _Run:
    """One SAE's training state."""

    sae: SAE
    optimizer: torch.optim.Optimizer
    base_lr: float
    since_fired: torch.Tensor  # [d_sae] inputs since each latent last fired
    density: torch.Tensor  # [d_sae] running firing frequency per input


class Trainer:
    """Trains ``saes`` together on shared steps. See the module docstring."""

    def __init__(
        self,
        saes: list[SAE],
        cfg: TrainConfig,
        out_dir: Path | None = None,
        *,
        objective: Objective = reconstruction,
        world: World = SINGLE,
    ) -> None:
        if not saes:
            raise ValueError("give at least one SAE to train")
        self.cfg = cfg
        self.out_dir = out_dir
        self.objective = objective
        self.world = world
        """The data-parallel processes; the steps given to this one are its part."""
        self.selection_reduce = world.reduce if world.size > 1 else local
        """What batch-level selections reduce over: one process needs no reduction."""
        self.step = 0
        self.hooks = sorted({h for sae in saes for h in (sae.cfg.hook, sae.cfg.target_hook)})
        """The hook points the SAEs read (their ``cfg.hook``, a transcoder's ``hook_out``)."""
        self.input_scale = dict.fromkeys(self.hooks, 1.0)
        """Per hook point: the factor that makes E‖x‖² = 1."""
        self.runs = []
        for sae in saes:
            lr = cfg.lr if cfg.lr is not None else default_lr(cfg.optimizer, sae.d_sae)
            opt = make_optimizer(cfg.optimizer, sae.parameters(), lr, cfg.adam_betas)
            since = torch.zeros(sae.d_sae, dtype=torch.long)
            density = torch.full((sae.d_sae,), UNMEASURED, dtype=torch.float64)
            self.runs.append(_Run(sae, opt, lr, since, density))

    def by_hook(self, step: Step) -> dict[str, torch.Tensor]:
        """One step's activations as ``{hook: [batch, d]}``, checked for every hook trained."""
        if isinstance(step, torch.Tensor):
            if len(self.hooks) > 1:
                raise ValueError(
                    f"the SAEs read {len(self.hooks)} hook points {self.hooks}: give each step "
                    "as a mapping {hook: activations}"
                )
            return {self.hooks[0]: step}
        acts, missing = {}, []
        for hook in self.hooks:
            try:
                acts[hook] = rows_at(step, hook)
            except KeyError:
                missing.append(hook)
        if missing:
            raise ValueError(
                f"the activations hold hook points {sorted(step)}, not {missing} that SAEs read"
            )
        return acts

    # --- set-up -------------------------------------------------------------------------------

    @torch.no_grad()
    def initialise(self, first: Step) -> None:
        """Input scales and b_dec (from the rows each SAE reconstructs) from the first step's
        activations (raw units); a transcoder's decoder starts tied to its encoder through the
        least-squares linear map from the step's inputs to its targets."""
        acts = self.by_hook(first)
        if self.cfg.normalize_inputs:
            for hook, rows in acts.items():
                self.input_scale[hook] = float(1.0 / rows.double().pow(2).sum(-1).mean().sqrt())
        centres: dict[tuple[str, bool], torch.Tensor] = {}  # shared by SAEs of one target
        for run in self.runs:
            cfg = run.sae.cfg
            key = (cfg.target_hook, cfg.standardize)
            if key not in centres:
                y = self.scaled(acts, cfg.target_hook, torch.float32)
                centres[key] = self.centre(standardized(y)[0] if cfg.standardize else y)
            run.sae.b_dec.copy_(centres[key].to(run.sae.b_dec.dtype))
            if run.sae.unit_norm_decoder:
                run.sae.normalize_decoder()
            if cfg.transcoder:
                x = self.scaled(acts, cfg.hook, torch.float32)
                y = self.scaled(acts, cfg.hook_out, torch.float32) - run.sae.b_dec.float()
                run.sae.tie_decoder_through(torch.linalg.lstsq(x, y).solution)

    def centre(self, rows: torch.Tensor) -> torch.Tensor:
        """b_dec's start [d] from rows [n, d] (in the units the SAE decodes to)."""
        if self.cfg.init_b_dec == "geometric_median":
            return geometric_median(rows)
        if self.cfg.init_b_dec == "mean":
            return rows.mean(0)
        return torch.zeros(rows.shape[-1])

    # --- one step -----------------------------------------------------------------------------

    def dead_mask(self, run: _Run) -> torch.Tensor:
        return run.since_fired >= self.cfg.dead_after_tokens

    def train_step(self, step: Step) -> dict[str, dict[str, float]]:
        """One optimisation step of every SAE on one step's activations (raw units)."""
        acts = self.by_hook(step)
        for hook, rows in acts.items():
            check_finite(rows, step=self.step, hook=hook or "(input rows)")
        context = (
            {}
            if isinstance(step, torch.Tensor)
            else {key: value for key, value in step.items() if key not in acts}
        )
        logs = {}
        scale = self.cfg.sparsity_scale_at(self.step)
        for i, run in enumerate(self.runs):
            sae = run.sae
            x = self.scaled(acts, sae.cfg.hook, sae.W_dec.dtype)
            target = (
                self.scaled(acts, sae.cfg.hook_out, sae.W_dec.dtype) if sae.cfg.hook_out else None
            )
            lr = self.cfg.lr_at(self.step, run.base_lr)
            for group in run.optimizer.param_groups:
                group["lr"] = lr
            ctx = LossContext(
                sparsity_scale=scale,
                dead=self.dead_mask(run),
                density=None if run.density[0] < 0 else run.density.float(),
                step=self.step,
                steps=self.cfg.steps,
                across_ranks=self.world.reduce,
            )
            batch = Batch(x, target, self.input_scale[sae.cfg.target_hook], context)
            with self.autocast(x), sae.selecting_across(self.selection_reduce):
                terms, out = self.objective(sae, batch, ctx)
            if not torch.isfinite(terms["loss"]):
                raise FloatingPointError(
                    f"SAE {i} ({sae.architecture}) loss became {terms['loss'].item()} at step "
                    f"{self.step} on hook {sae.cfg.hook or '(input rows)'}; weights were not "
                    "updated. Lower the learning rate or check the activations"
                )
            run.optimizer.zero_grad(set_to_none=True)
            terms["loss"].backward()
            self.prepare_gradients(sae)
            run.optimizer.step()
            with torch.no_grad():
                if sae.unit_norm_decoder:
                    sae.normalize_decoder()
                sae.update_state(out, ctx)
                fired = self.world.reduce(out.codes.fire_counts(), "sum")
                seen = x.shape[0] * self.world.size  # the global batch's rows
                run.since_fired += seen
                run.since_fired[fired > 0] = 0
                self.track_density(run, fired, seen)
                if self.cfg.resample_every and (self.step + 1) % self.cfg.resample_every == 0:
                    gathered = None if target is None else self.world.gather_rows(target)
                    self.resample(run, self.world.gather_rows(x), gathered)
                logs[str(i)] = {
                    **{k: float(v) for k, v in terms.items()},
                    "l0": float(out.codes.active().float().mean()),
                    "dead_fraction": float(self.dead_mask(run).float().mean()),
                    "lr": lr,
                    "sparsity_scale": scale,
                }
        self.step += 1
        return logs

    def autocast(self, x: torch.Tensor) -> torch.autocast:
        """The autocast context of ``cfg.autocast`` on ``x``'s device (disabled without it)."""
        return mixed_precision(x.device.type, self.cfg.autocast)

    def scaled(self, acts: dict[str, torch.Tensor], hook: str, dtype: torch.dtype) -> torch.Tensor:
        """The rows at ``hook`` in the units the SAEs train in (E‖x‖² = 1), in ``dtype``."""
        return (acts[hook] * self.input_scale[hook]).to(dtype)

    def track_density(self, run: _Run, fired: torch.Tensor, rows: int) -> None:
        """Fold a step's firing frequencies into the running density: an exponential moving
        average over roughly the last ``dead_after_tokens`` inputs; the first step sets it."""
        frequency = fired.double() / rows
        if run.density[0] < 0:
            run.density.copy_(frequency)
        else:
            run.density.lerp_(frequency, min(1.0, rows / self.cfg.dead_after_tokens))

    def prepare_gradients(self, sae: SAE) -> None:
        """Everything between backward and the optimiser step, in one place: the average over
        data-parallel processes (first: clipping needs the whole batch's norm), the decoder-norm
        projection and gradient clipping."""
        self.world.all_reduce_mean([p.grad for p in sae.parameters() if p.grad is not None])
        if sae.unit_norm_decoder:
            sae.project_decoder_grad()
        if self.cfg.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(sae.parameters(), self.cfg.grad_clip)

    @torch.no_grad()
    def resample(self, run: _Run, x: torch.Tensor, target: torch.Tensor | None = None) -> int:
        """Anthropic-style resampling of dead latents (Bricken et al. 2023, "Towards
        Monosemanticity"): each dead latent's decoder row becomes a batch input drawn with
        probability ∝ its squared reconstruction error, normalised; its encoder column that
        direction × 0.2 × the mean alive encoder norm; its encoder bias 0; Adam moments for those
        entries are reset. Inputs are drawn from the current batch. Returns the number resampled.
        A transcoder's decoder row is the drawn target's direction, its encoder column the drawn
        input's. (Gated SAEs reset their gate and magnitude biases and r_mag, see
        ``latent_biases``.)
        """
        sae = run.sae
        target = x if target is None else target
        dead = self.dead_mask(run).nonzero().squeeze(-1)
        if dead.numel() == 0:
            return 0
        error = (sae(x) - target).pow(2).sum(-1)
        if float(error.sum()) <= 0:
            return 0
        picks = torch.multinomial(error.pow(2), dead.numel(), replacement=True)
        directions = _unit(target[picks] - sae.b_dec)
        reads = _unit(x[picks]) if sae.cfg.transcoder else directions
        alive = ~self.dead_mask(run)
        enc_norm = sae.W_enc[:, alive].norm(dim=0).mean() if alive.any() else torch.tensor(1.0)
        sae.W_dec[dead] = directions.to(sae.W_dec.dtype)
        resets: list[tuple[torch.nn.Parameter, tuple[Any, ...]]] = [(sae.W_dec, (dead,))]
        if isinstance(sae.W_enc, torch.nn.Parameter):  # not an encoder-free SAE's W_decᵀ
            sae.W_enc[:, dead] = (reads.T * 0.2 * enc_norm).to(sae.W_dec.dtype)
            resets.append((sae.W_enc, (slice(None), dead)))
        biases = sae.latent_biases()
        for bias in biases:
            bias[dead] = 0.0
        for param, index in resets + [(bias, (dead,)) for bias in biases]:
            for moment in run.optimizer.state.get(param, {}).values():
                if isinstance(moment, torch.Tensor) and moment.shape == param.shape:
                    moment[index] = 0.0  # Adam's moments, Signum's and Muon's momentum
        run.since_fired[dead] = 0
        return int(dead.numel())

    # --- checkpoints --------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "saes": [r.sae.cfg.to_dict() for r in self.runs],
            "input_scale": self.input_scale,
            "config": asdict(self.cfg),
            "world_size": self.world.size,
            "rng": torch.get_rng_state(),
            "runs": [
                {
                    "sae": r.sae.state_dict(),
                    "optimizer": r.optimizer.state_dict(),
                    "since_fired": r.since_fired,
                    "density": r.density,
                    "training_state": r.sae.training_state(),
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
        saved_world = int(state.get("world_size", 1))
        if saved_world != self.world.size:
            raise ValueError(
                f"the checkpoint was written by {saved_world} data-parallel processes, this run "
                f"has {self.world.size}: resume with the same number (torchrun --nproc_per_node "
                f"{saved_world}, or no torchrun for 1), or start a new run in another folder"
            )
        for i, (run, saved) in enumerate(zip(self.runs, state["saes"], strict=True)):
            ours = run.sae.cfg.to_dict()
            differ = [
                f"{k}: {saved.get(k)!r} there, {v!r} here"
                for k, v in ours.items()
                if saved.get(k) != v
            ]
            if differ:
                raise ValueError(
                    f"the checkpoint's SAE {i} is not this run's ({'; '.join(differ)}); resume "
                    "with the same sweep, or start a new run in another folder"
                )
        self.step = int(state["step"])
        self.input_scale = {hook: float(v) for hook, v in state["input_scale"].items()}
        torch.set_rng_state(state["rng"])
        for run, saved in zip(self.runs, state["runs"], strict=True):
            run.sae.load_state_dict(saved["sae"])
            run.optimizer.load_state_dict(saved["optimizer"])
            run.since_fired.copy_(saved["since_fired"])
            run.density.copy_(saved["density"])
            run.sae.load_training_state(saved["training_state"])

    def save_checkpoint(self) -> None:
        """train/checkpoint.pt, from the main process (every process holds the same state)."""
        if self.out_dir is None or not self.world.main:
            return
        state = self.state_dict()
        atomic_write(self.out_dir / CHECKPOINT, lambda tmp: torch.save(state, tmp))

    def load_checkpoint(self) -> None:
        path = checkpoint_path(self.out_dir)
        try:
            state = torch.load(path, weights_only=True)
        except Exception as err:  # torch raises several types for a file it will not load
            raise ValueError(
                f"{path} is not a checkpoint this package wrote (it holds more than tensors and "
                f"plain values, or is damaged: {type(err).__name__}); it is never unpickled "
                "beyond that. Start afresh without --resume"
            ) from None
        self.load_state_dict(state)

    # --- the loop -----------------------------------------------------------------------------

    def open_log(self, path: Path) -> Any:
        """metrics.jsonl for appending, holding each step before ``self.step`` exactly once: a
        fresh run starts it empty; a resumed one drops the lines the lost steps had written."""
        kept = []
        if self.step > 0 and path.exists():
            lines = path.read_text().splitlines()
            kept = [line for line in lines if line and json.loads(line)["step"] <= self.step]
        atomic_write(path, lambda tmp: tmp.write_text("".join(line + "\n" for line in kept)))
        return path.open("a")

    def fit(self, batches: Iterable[Step]) -> list[dict[str, float]]:
        """Train until ``cfg.steps``; returns each SAE's metrics at the last step.

        ``batches`` must start at batch number ``self.step`` (0 for a fresh run); each is this
        process's part of the global batch. Every process returns the same metrics.
        """
        cfg = self.cfg
        log_file = None
        if self.out_dir is not None and self.world.main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            remove_partial_writes(self.out_dir)
            log_file = self.open_log(self.out_dir / "metrics.jsonl")
        iterator: Iterator[Step] = iter(batches)
        for run in self.runs:
            run.sae.train()
        last: dict[str, dict[str, float]] = {}
        quiet = not (cfg.progress and self.world.main)
        bar = tqdm(total=cfg.steps, initial=self.step, disable=quiet, desc="train")
        try:
            while self.step < cfg.steps:
                batch = next(iterator, None)
                if batch is None:
                    raise ValueError(
                        f"activation source ran out after {self.step} of {cfg.steps} steps; "
                        "give more data or fewer steps"
                    )
                if self.step == 0:
                    self.initialise(self.gathered(batch))
                last = self.train_step(batch)
                bar.update(1)
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    last = self.averaged(last)
                    bar.set_postfix(loss=f"{last['0']['loss']:.4g}", l0=f"{last['0']['l0']:.1f}")
                    if log_file is not None:
                        line = {"step": self.step, "saes": finite(last)}
                        log_file.write(json.dumps(line, allow_nan=False) + "\n")
                        log_file.flush()
                if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                    self.save_checkpoint()
        finally:
            # a source that runs ahead in a thread (data.prefetch) stops when its iterator closes
            close = getattr(iterator, "close", None)
            if close is not None:
                close()
            bar.close()
            if log_file is not None:
                log_file.close()
        self.save_checkpoint()
        return [last.get(str(i), {}) for i in range(len(self.runs))]

    def gathered(self, step: Step) -> dict[str, torch.Tensor]:
        """Every process's rows of ``step`` at each hook: the global batch ``initialise`` reads."""
        return {hook: self.world.gather_rows(rows) for hook, rows in self.by_hook(step).items()}

    def averaged(self, logs: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        """Each process's step metrics averaged over processes: the global batch's (the parts
        are equal), in one collective."""
        if self.world.size == 1:
            return logs
        keys = [(run, name) for run, values in logs.items() for name in values]
        values = torch.tensor([logs[run][name] for run, name in keys], dtype=torch.float64)
        self.world.reduce(values)
        out: dict[str, dict[str, float]] = {run: {} for run in logs}
        for (run, name), value in zip(keys, values.tolist(), strict=True):
            out[run][name] = value
        return out


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
    *,
    objective: Objective = reconstruction,
    world: World = SINGLE,
) -> list[dict[str, float]]:
    """Train ``saes`` in place on ``batches`` (``Step``s in raw units), minimising ``objective``.

    ``batches`` is an iterable, or a function of the start step returning one (needed for
    ``resume``: it must yield the steps from that one on). When training ends each hook's input
    scale is folded into its SAEs' weights, so they act on raw activations. Returns each SAE's
    metrics at the last step (loss terms, l0, dead_fraction, lr) plus its ``input_scale`` (and
    a transcoder's ``output_scale``). Under ``world``, each process calls this with its part of
    the batches (see the module docstring).
    """
    trainer = Trainer(saes, cfg, out_dir, objective=objective, world=world)
    if resume:
        if not callable(batches):
            raise TypeError("resume needs `batches` as a function of the start step")
        trainer.load_checkpoint()
    else:
        torch.manual_seed(cfg.seed)
    source = batches(trainer.step) if callable(batches) else batches
    results = trainer.fit(source)
    for run, result in zip(trainer.runs, results, strict=True):
        sae = run.sae
        scales = trainer.input_scale[sae.cfg.hook], trainer.input_scale[sae.cfg.target_hook]
        result["input_scale"] = scales[0]
        if sae.cfg.transcoder:
            result["output_scale"] = scales[1]
        sae.fold_input_scale(*scales)
        sae.eval()
    return results


def _unit(rows: torch.Tensor) -> torch.Tensor:
    """rows [n, d] scaled to unit norm (zero rows stay zero)."""
    return rows / rows.norm(dim=-1, keepdim=True).clamp_min(1e-8)


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
