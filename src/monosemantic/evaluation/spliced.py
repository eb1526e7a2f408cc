"""What an SAE's reconstruction costs a language model: splice it in and compare predictions.

For each batch the model runs clean, with the activation at ``hook`` replaced by the SAE's
reconstruction, and with it replaced by zeros (all through ``monosemantic.hooks``). A transcoder
reads one point and replaces another (an MLP's input → its output): its output takes the place of
the MLP's, and zero ablation zeroes that output. A sweep shares the clean and zero-ablated passes:
``spliced_metrics_many`` runs them once per batch (the zero-ablated one once per replaced point)
and one spliced pass per SAE.

    loss_recovered = (CE_zero − CE_sae) / (CE_zero − CE_clean)       (Bricken et al. 2023)
    kl             = KL(p_clean ‖ p_sae), mean over predicted positions (Braun et al. 2024,
                     arXiv 2405.12241, "batchmean" over tokens)

Excluded positions (``exclude``, e.g. BOS or other special tokens) are left out twice over: their
activations keep their original values in every run, because such tokens carry outlier
activations an SAE is usually not trained on and no downstream use would replace them; and a
position whose next token (the target) is excluded is not scored.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from monosemantic.config import check
from monosemantic.hooks import HookPoint, HookPointError, hooked

Rows = Callable[[torch.Tensor], torch.Tensor]
Where = str | HookPoint | tuple[str | HookPoint, str | HookPoint]
"""The point an SAE replaces, or a transcoder's (point it reads, point it replaces)."""


def logits_of(output: Any) -> torch.Tensor:
    """A model's output -> logits [batch, ctx, vocab]: a tensor, or an object with ``.logits``."""
    logits = output if isinstance(output, torch.Tensor) else getattr(output, "logits", None)
    if not isinstance(logits, torch.Tensor):
        raise TypeError(
            f"model returned a {type(output).__name__}; expected a logits tensor "
            "or an object with a .logits tensor (a causal language model)"
        )
    return logits


@dataclass(frozen=True)
class Splice:
    """Replace the activation at ``writes`` by ``rows`` of the one at ``reads`` (the same point
    for an SAE, another for a transcoder)."""

    reads: HookPoint
    writes: HookPoint
    rows: Rows

    @classmethod
    def of(cls, where: Where, sae: nn.Module) -> Splice:
        reads, writes = where if isinstance(where, tuple) else (where, where)
        return cls(HookPoint.parse(reads), HookPoint.parse(writes), _sae_rows(sae))


def _check_stream(act: torch.Tensor, keep: torch.Tensor, where: HookPoint) -> torch.Tensor:
    if act.ndim < 3 or act.shape[:2] != keep.shape:
        raise ValueError(
            f"hook {where} carries a tensor of shape {tuple(act.shape)}; "
            f"expected [batch, ctx, d] with [batch, ctx] = {tuple(keep.shape)} "
            "(choose a hook point on the token stream)"
        )
    return act


def spliced_into(
    model: nn.Module, splice: Splice, keep: torch.Tensor
) -> contextlib.AbstractContextManager[None]:
    """Hooks that replace the rows of the activation [batch, ctx, d] at ``splice.writes`` where
    keep [batch, ctx] by ``splice.rows`` of the activation at ``splice.reads``."""
    read: dict[str, torch.Tensor] = {}

    def record(act: torch.Tensor) -> None:
        read["act"] = _check_stream(act, keep, splice.reads)

    def replace(act: torch.Tensor) -> torch.Tensor:
        _check_stream(act, keep, splice.writes)
        if splice.reads == splice.writes:
            source = act
        elif "act" in read:
            source = read.pop("act")
        else:
            raise HookPointError(
                f"{splice.reads} did not run before {splice.writes}: a transcoder must read a "
                "point that comes earlier in the forward pass than the one it replaces"
            )
        out = act.clone()
        new = splice.rows(source[keep])
        if new.shape != out[keep].shape:
            raise ValueError(
                f"the SAE spliced at {splice.writes} returned rows of shape {tuple(new.shape)}, "
                f"expected {tuple(out[keep].shape)}: use one trained for this hook point"
            )
        out[keep] = new
        return out

    if splice.reads == splice.writes:
        return hooked(model, {splice.writes: replace})
    return hooked(model, {splice.reads: record, splice.writes: replace})


def _sae_rows(sae: nn.Module) -> Rows:
    """rows [n, d] -> the SAE's reconstruction, run in the SAE's dtype and device, cast back."""
    param = next(sae.parameters(), None)

    def rows(x: torch.Tensor) -> torch.Tensor:
        if param is None:
            return sae(x)
        return sae(x.to(device=param.device, dtype=param.dtype)).to(x.device, x.dtype)

    return rows


def _scored_log_probs(model: nn.Module, ids: torch.Tensor, scored: torch.Tensor) -> torch.Tensor:
    """Log-probabilities [n_scored, vocab] (float32) at positions t where scored[:, t]."""
    logits = logits_of(model(ids))
    return logits[:, :-1][scored].float().log_softmax(-1)


def _check_inputs(tokens: torch.Tensor, exclude: torch.Tensor | None) -> torch.Tensor:
    """Validate and return the exclude mask [n, ctx] (all False when None)."""
    if tokens.ndim != 2 or tokens.dtype != torch.long or tokens.shape[1] < 2:
        raise ValueError(
            f"tokens must be a LongTensor [n, ctx] with ctx >= 2, got "
            f"{tokens.dtype} of shape {tuple(tokens.shape)}"
        )
    if exclude is None:
        return torch.zeros_like(tokens, dtype=torch.bool)
    if exclude.shape != tokens.shape or exclude.dtype != torch.bool:
        raise ValueError(
            f"exclude must be a BoolTensor shaped like tokens {tuple(tokens.shape)}, "
            f"got {exclude.dtype} of shape {tuple(exclude.shape)}"
        )
    return exclude


def _batch_sums(
    model: nn.Module,
    spliced: list[Splice],
    ids: torch.Tensor,
    keep: torch.Tensor,
) -> list[dict[str, float]]:
    """Per SAE: summed CE and KL terms (nats) over one batch's scored positions, and their
    number. The clean pass runs once, the zero-ablated pass once per replaced point.

    ids, keep: [batch, ctx]; position t predicts t + 1 and is scored when t + 1 is kept.
    """
    scored = keep[:, 1:]
    targets = ids[:, 1:][scored][:, None]  # [n_scored, 1]
    clean = _scored_log_probs(model, ids, scored)
    p_clean = clean.exp()

    def run(splice: Splice) -> torch.Tensor:
        with spliced_into(model, splice, keep):
            return _scored_log_probs(model, ids, scored)

    def nll(log_probs: torch.Tensor) -> float:
        return -log_probs.gather(-1, targets).double().sum().item()

    def kl(log_probs: torch.Tensor) -> float:
        return (p_clean * (clean - log_probs)).double().sum().item()

    points = dict.fromkeys(s.writes for s in spliced)
    zeroed = {p: run(Splice(p, p, torch.zeros_like)) for p in points}
    rows = []
    for splice in spliced:
        with_sae = run(splice)
        rows.append(
            {
                "ce_clean": nll(clean),
                "ce_sae": nll(with_sae),
                "ce_zero_ablation": nll(zeroed[splice.writes]),
                "kl": kl(with_sae),
                "kl_zero": kl(zeroed[splice.writes]),
                "n_scored": float(targets.shape[0]),
            }
        )
    return rows


def spliced_metrics(
    model: nn.Module,
    tokens: torch.Tensor,
    hook: Where,
    sae: nn.Module,
    *,
    batch_size: int = 8,
    exclude: torch.Tensor | None = None,
    progress: bool = False,
) -> dict[str, float]:
    """Cross-entropy and KL of ``model`` with ``sae`` spliced in at ``hook``; see
    ``spliced_metrics_many`` for the arguments and results."""
    (result,) = spliced_metrics_many(
        model, tokens, [(hook, sae)], batch_size=batch_size, exclude=exclude, progress=progress
    )
    return result


def spliced_metrics_many(
    model: nn.Module,
    tokens: torch.Tensor,
    saes: Sequence[tuple[Where, nn.Module]],
    *,
    batch_size: int = 8,
    exclude: torch.Tensor | None = None,
    progress: bool = False,
) -> list[dict[str, float]]:
    """Cross-entropy and KL of ``model`` with each SAE of ``saes`` ((hook, sae) pairs) spliced in
    at its hook, one at a time; the clean pass runs once per batch for all of them and the
    zero-ablated pass once per replaced point. A transcoder's hook is (reads, replaces), e.g.
    ("model.layers.3.mlp:input", "model.layers.3.mlp:output"), and it maps [n, d_in] -> [n, d].

    tokens: [n, ctx] token ids; exclude: [n, ctx] bool, True for tokens (BOS, padding, other
    special tokens) whose activations are kept and which are not scored as targets. Each SAE is
    any module mapping [n, d] -> [n, d]. Returns per SAE ``ce_clean``, ``ce_sae``,
    ``ce_zero_ablation`` (nats per scored token), ``loss_recovered`` (NaN when zero ablation
    costs nothing), ``kl``, ``kl_zero`` (nats) and ``n_scored``. Model and SAEs run in eval mode;
    their modes are restored.
    """
    check(batch_size > 0, "batch_size", batch_size, "a positive integer")
    check(len(saes) > 0, "saes", saes, "at least one (hook, sae) pair")
    exclude = _check_inputs(tokens, exclude)
    spliced = [Splice.of(hook, sae) for hook, sae in saes]
    device = next(model.parameters()).device
    sums = [dict.fromkeys(SUMS, 0.0) for _ in saes]
    modules = [model, *(sae for _, sae in saes)]
    modes = [module.training for module in modules]
    for module in modules:
        module.eval()
    try:
        with torch.no_grad():
            for start in tqdm(
                range(0, len(tokens), batch_size), disable=not progress, desc="spliced eval"
            ):
                ids = tokens[start : start + batch_size].to(device)
                keep = ~exclude[start : start + batch_size].to(device)
                for total, batch in zip(sums, _batch_sums(model, spliced, ids, keep), strict=True):
                    for name, value in batch.items():
                        total[name] += value
    finally:
        for module, mode in zip(modules, modes, strict=True):
            module.train(mode)
    return [_per_token(total) for total in sums]


SUMS = ("ce_clean", "ce_sae", "ce_zero_ablation", "kl", "kl_zero", "n_scored")


def _per_token(sums: dict[str, float]) -> dict[str, float]:
    """Sums over scored positions -> means per position, and loss recovered."""
    sums = dict(sums)
    n_scored = int(sums.pop("n_scored"))
    if n_scored == 0:
        raise ValueError(
            "no position was scored: every target token is excluded; "
            "exclude only special tokens such as BOS"
        )
    result = {name: total / n_scored for name, total in sums.items()}
    gap = result["ce_zero_ablation"] - result["ce_clean"]
    recovered = result["ce_zero_ablation"] - result["ce_sae"]
    result["loss_recovered"] = recovered / gap if gap != 0 else float("nan")
    result["n_scored"] = n_scored
    return result


@torch.no_grad()
def compare_models(
    reference: nn.Module,
    candidate: nn.Module,
    tokens: torch.Tensor,
    *,
    batch_size: int = 8,
    exclude: torch.Tensor | None = None,
) -> dict[str, float]:
    """Per scored token, nats: ``ce_reference``, ``ce_candidate`` and ``kl`` (KL(reference ‖
    candidate) of the next-token distributions) over ``tokens`` [n, ctx]; position t is scored
    when t + 1 is not excluded, as in ``spliced_metrics``."""
    keep = ~_check_inputs(tokens, exclude)
    sums = {"ce_reference": 0.0, "ce_candidate": 0.0, "kl": 0.0, "n": 0.0}
    for start in range(0, len(tokens), batch_size):
        ids, scored = tokens[start : start + batch_size], keep[start : start + batch_size, 1:]
        targets = ids[:, 1:][scored][:, None]
        ref = _scored_log_probs(reference, ids, scored)
        cand = _scored_log_probs(candidate, ids, scored)
        sums["ce_reference"] -= ref.gather(-1, targets).double().sum().item()
        sums["ce_candidate"] -= cand.gather(-1, targets).double().sum().item()
        sums["kl"] += (ref.exp() * (ref - cand)).double().sum().item()
        sums["n"] += targets.shape[0]
    n = sums.pop("n")
    return {name: value / n for name, value in sums.items()}
