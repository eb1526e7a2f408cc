"""Spliced-in evaluation on a tiny random Llama, against hand-computed CE and KL."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import make_tiny_llama
from torch import nn
from transformers import LlamaForCausalLM

from monosemantic.evaluation.spliced import spliced_metrics, spliced_metrics_many
from monosemantic.hooks import capture, patch

HOOK = "model.layers.0:output"
BOS = 0


class Identity(nn.Module):
    """An "SAE" that reconstructs perfectly."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class Zero(nn.Module):
    """An "SAE" that reconstructs nothing."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)


class CorruptRows(nn.Module):
    """Identity, except rows equal to ``target`` [d], which it replaces by noise."""

    def __init__(self, target: torch.Tensor) -> None:
        super().__init__()
        self.target = target

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hit = torch.isclose(x, self.target).all(-1, keepdim=True)
        return torch.where(hit, 5 * torch.randn_like(x), x)


class Half(nn.Module):
    """A lossy float64 "SAE": halves its input (checks dtype casting both ways)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(0.5, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.dtype == torch.float64
        return x * self.scale


@pytest.fixture(scope="module")
def model() -> LlamaForCausalLM:
    # spread-out logits, so CE and KL differences are sizeable
    return make_tiny_llama(initializer_range=0.3)


@pytest.fixture(scope="module")
def tokens() -> torch.Tensor:
    ids = torch.randint(1, 100, (5, 12), generator=torch.Generator().manual_seed(1))
    ids[:, 0] = BOS
    return ids


def log_probs(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits.double().log_softmax(-1)


def test_identity_recovers_everything(model, tokens) -> None:
    got = spliced_metrics(model, tokens, HOOK, Identity(), batch_size=2)
    assert got["ce_sae"] == got["ce_clean"]
    assert got["loss_recovered"] == pytest.approx(1.0, abs=1e-6)
    assert 0 <= got["kl"] <= 1e-7
    assert got["kl_zero"] > 1e-3  # zero ablation does hurt, so the ratio is meaningful
    # A zeroed residual stream stays zero through a bias-free Llama: uniform logits.
    assert got["ce_zero_ablation"] == pytest.approx(math.log(100), rel=1e-6)
    assert got["n_scored"] == 5 * 11


def test_zero_sae_recovers_nothing(model, tokens) -> None:
    got = spliced_metrics(model, tokens, HOOK, Zero(), batch_size=3)
    assert got["loss_recovered"] == pytest.approx(0.0, abs=1e-9)
    assert got["kl"] == pytest.approx(got["kl_zero"], rel=1e-9)


def test_ce_and_kl_match_brute_force(model, tokens) -> None:
    got = spliced_metrics(model, tokens, HOOK, Half(), batch_size=2)
    clean = log_probs(model, tokens)[:, :-1].reshape(-1, 100)
    with patch(model, HOOK, lambda act: act * 0.5):
        half = log_probs(model, tokens)[:, :-1].reshape(-1, 100)
    with patch(model, HOOK, torch.zeros_like):
        zero = log_probs(model, tokens)[:, :-1].reshape(-1, 100)
    targets = tokens[:, 1:].reshape(-1)
    assert got["ce_clean"] == pytest.approx(F.cross_entropy(clean, targets).item(), rel=1e-5)
    assert got["ce_sae"] == pytest.approx(F.cross_entropy(half, targets).item(), rel=1e-5)
    kl = F.kl_div(half, clean, log_target=True, reduction="batchmean").item()
    kl_zero = F.kl_div(zero, clean, log_target=True, reduction="batchmean").item()
    assert kl > 1e-4
    assert got["kl"] == pytest.approx(kl, rel=1e-4)
    assert got["kl_zero"] == pytest.approx(kl_zero, rel=1e-4)
    ce_zero = F.cross_entropy(zero, targets).item()
    expected = (ce_zero - got["ce_sae"]) / (ce_zero - got["ce_clean"])
    assert got["loss_recovered"] == pytest.approx(expected, rel=1e-5)


def test_a_sweep_shares_the_clean_and_zero_passes(model, tokens) -> None:
    """Several SAEs at two hooks: each result equals its own one-SAE run, with fewer passes."""
    other = "model.layers.1:input"
    saes = [(HOOK, Half()), (HOOK, Identity()), (other, Half())]
    calls = []
    handle = model.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        together = spliced_metrics_many(model, tokens, saes, batch_size=2)
        shared = len(calls)
        alone = [spliced_metrics(model, tokens, hook, sae, batch_size=2) for hook, sae in saes]
    finally:
        handle.remove()
    for got, expected in zip(together, alone, strict=True):
        assert got == pytest.approx(expected, rel=1e-12)
    batches = 3  # 5 windows, 2 per batch
    assert shared == batches * (1 + 2 + 3), "clean once, zero once per hook, one pass per SAE"
    assert len(calls) - shared == batches * 3 * 3


def test_exclude_keeps_activations_and_skips_targets(model, tokens) -> None:
    # BOS at the start and again mid-sequence (packed documents); both are excluded.
    ids = tokens.clone()
    ids[:, 6] = BOS
    exclude = ids == BOS
    got = spliced_metrics(model, ids, HOOK, Zero(), exclude=exclude)
    keep = ~exclude
    scored = keep[:, 1:].reshape(-1)
    targets = ids[:, 1:].reshape(-1)[scored]
    clean = log_probs(model, ids)[:, :-1].reshape(-1, 100)[scored]
    with patch(model, HOOK, lambda act: act * exclude[..., None]):  # BOS rows keep their values
        zero = log_probs(model, ids)[:, :-1].reshape(-1, 100)[scored]
    assert got["n_scored"] == 5 * 10
    assert got["ce_clean"] == pytest.approx(F.cross_entropy(clean, targets).item(), rel=1e-5)
    assert got["ce_sae"] == pytest.approx(F.cross_entropy(zero, targets).item(), rel=1e-5)
    kl = F.kl_div(zero, clean, log_target=True, reduction="batchmean").item()
    assert got["kl"] == pytest.approx(kl, rel=1e-4)


def test_bos_only_difference_does_not_count(model, tokens) -> None:
    with capture(model, HOOK) as acts, torch.no_grad():
        model(input_ids=tokens)
    bos_act = acts[HOOK][0, 0].clone()  # position 0 sees only itself: the same in every row
    corrupt_bos = CorruptRows(bos_act)
    exclude = tokens == BOS
    with_mask = spliced_metrics(model, tokens, HOOK, corrupt_bos, exclude=exclude)
    assert with_mask["kl"] == 0.0
    assert with_mask["loss_recovered"] == pytest.approx(1.0, abs=1e-6)
    without = spliced_metrics(model, tokens, HOOK, corrupt_bos)
    assert without["kl"] > 1e-3  # the corruption is real when BOS is not excluded


def test_accepts_plain_logits_and_restores_modes(tokens) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(100, 16), nn.Linear(16, 16), nn.Linear(16, 100))
    model.train()
    sae = Identity().train()
    got = spliced_metrics(model, tokens, "1:output", sae)
    assert got["kl"] == 0.0
    assert model.training and sae.training


def test_bad_inputs(model, tokens) -> None:
    with pytest.raises(ValueError, match="LongTensor"):
        spliced_metrics(model, tokens.float(), HOOK, Identity())
    with pytest.raises(ValueError, match="exclude must be"):
        spliced_metrics(model, tokens, HOOK, Identity(), exclude=torch.zeros(5, 3, dtype=bool))
    with pytest.raises(ValueError, match="no position was scored"):
        spliced_metrics(model, tokens, HOOK, Identity(), exclude=torch.ones_like(tokens) > 0)
    with pytest.raises(ValueError, match="expected \\[batch, ctx, d\\]"):
        spliced_metrics(model, tokens, "model.rotary_emb:output", Identity())
