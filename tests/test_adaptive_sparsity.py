"""Feature Choice, Mutual Choice, aux_zipf_loss and Matryoshka against their definitions: brute
force selections, closed-form Zipf fits, AuxK as the special case, hand-summed prefix losses."""

from __future__ import annotations

import pytest
import torch

from monosemantic.config import ConfigError
from monosemantic.sae.aux_zipf import aux_zipf_loss, under_use, weighted_aux_loss, zipf_target
from monosemantic.sae.base import LossContext
from monosemantic.sae.batchtopk import THRESHOLD_DECAY, batch_topk_codes
from monosemantic.sae.feature_choice import FeatureChoiceSAE, feature_choice_mask
from monosemantic.sae.matryoshka import MatryoshkaSAE, prefix_reconstructions
from monosemantic.sae.registry import config, create
from monosemantic.sae.sparse import Encoding
from monosemantic.sae.topk import auxk_loss
from monosemantic.training.objective import Batch, reconstruction

D_IN, D_SAE, K, N = 10, 48, 3, 40


def scores(seed: int = 0) -> torch.Tensor:
    return torch.randn(N, D_SAE, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def make(architecture: str, seed: int = 0, **kw) -> torch.nn.Module:
    torch.manual_seed(seed)
    sae = create(config(architecture, d_in=D_IN, d_sae=D_SAE, k=K, dtype="float64", **kw))
    with torch.no_grad():
        for p in sae.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
    return sae


def inputs(seed: int = 1) -> torch.Tensor:
    return torch.randn(N, D_IN, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# --- Feature Choice -----------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 3, 5])
def test_feature_choice_selects_each_latents_top_tokens_with_the_budget(k: int) -> None:
    pre = scores()
    pre[:, 7] = -5.0 - torch.rand(N, dtype=torch.float64)  # a latent no token would choose
    mask = feature_choice_mask(pre, k)
    per_latent = mask.sum(0)
    assert int(mask.sum()) == k * N, "Σ m_i = k·N"
    if k * N >= D_SAE:
        assert bool((per_latent >= 1).all()), "no latent is left unselected"
    m, extra = divmod(k * N, D_SAE)
    assert sorted(set(per_latent.tolist())) == sorted({m, m + 1} if extra else {m})
    assert int((per_latent == m + 1).sum()) == extra
    # brute force: each latent keeps its best tokens, and the extra tokens go to the latents
    # whose next-best token scores highest
    acts = pre.relu()
    for i in range(D_SAE):
        kept, rest = acts[mask[:, i], i], acts[~mask[:, i], i]
        assert kept.numel() == 0 or rest.numel() == 0 or kept.min() >= rest.max()
    next_best = acts.sort(0, descending=True).values[m]
    winners = per_latent == m + 1
    if extra:
        assert next_best[winners].min() >= next_best[~winners].max()


def test_feature_choice_codes_vary_per_token_in_training() -> None:
    sae = make("feature_choice").train()
    with torch.no_grad():
        sae.b_enc.fill_(20.0)  # every score positive: every selected entry fires
        out = sae.forward_full(inputs())
    fired = out.codes.fire_counts()
    assert int(out.codes.active().sum()) == K * N
    assert bool((fired > 0).all()), "every latent fires over the batch"
    assert out.codes.active().min() < K < out.codes.active().max()


def test_feature_choice_thresholds_are_running_means_of_each_latents_smallest_kept() -> None:
    sae = make("feature_choice").train()
    assert bool((sae.threshold < 0).all()), "unset before training"
    smallest = []
    for seed in (1, 2):
        _, out = reconstruction(sae, Batch(inputs(seed)), LossContext())
        f = out.codes.dense().detach()
        smallest.append(f.masked_fill(f <= 0, float("inf")).min(0).values)
        sae.update_state(out, LossContext())
    both = torch.isfinite(smallest[0]) & torch.isfinite(smallest[1])
    expected = THRESHOLD_DECAY * smallest[0] + (1 - THRESHOLD_DECAY) * smallest[1]
    torch.testing.assert_close(sae.threshold[both], expected[both], rtol=1e-12, atol=0)
    assert both.sum() > D_SAE // 2


def test_feature_choice_inference_uses_per_latent_thresholds() -> None:
    sae = make("feature_choice").eval()
    x = inputs()
    with torch.no_grad():
        fallback = sae.encode(x)  # no θ yet: feature choice over the given batch
        assert int(feature_choice_mask(sae.pre_acts(x), K).sum()) == K * N
        assert bool((fallback != 0).sum(0).ge(1).any())
        theta = torch.linspace(0.0, 1.0, D_SAE, dtype=torch.float64)
        sae.threshold.copy_(theta)
        sae.threshold[3] = -1.0  # never estimated: never fires
        pre, f = sae.pre_acts(x), sae.encode(x)
    expected = pre * (pre > theta)
    expected[:, 3] = 0
    torch.testing.assert_close(f, expected, rtol=0, atol=0)
    torch.testing.assert_close(sae.encode(x[:1]), f[:1]), "rows are independent in eval mode"


# --- Mutual Choice ------------------------------------------------------------------------------


@pytest.mark.parametrize("ties", [False, True])
def test_mutual_choice_keeps_exactly_k_times_n_entries(ties: bool) -> None:
    pre = scores().abs() + 0.1
    if ties:
        pre = pre.round(decimals=0) + 1.0  # a handful of distinct values: ties at the cut
    codes = batch_topk_codes(pre, K)
    assert int((codes != 0).sum()) == K * N
    cut = codes[codes > 0].min()
    assert bool((pre[codes == 0] <= cut).all()), "nothing larger than a kept entry is dropped"
    assert bool((codes[codes != 0] == pre[codes != 0]).all())


def test_mutual_choice_trains_with_aux_zipf_not_auxk() -> None:
    sae = make("mutual_choice").train()
    dead = torch.zeros(D_SAE, dtype=torch.bool)
    dead[:10] = True
    terms, out = reconstruction(sae, Batch(inputs()), LossContext(dead=dead))
    assert set(terms) == {"mse", "aux_zipf", "loss"}
    assert int(out.codes.active().sum()) == K * N
    residual = (inputs() - out.x_hat).detach()
    aux_k = sae.cfg.resolved_aux_k
    torch.testing.assert_close(
        terms["aux_zipf"], auxk_loss(sae.W_dec, out.encoding, residual, dead, aux_k)
    )


# --- aux_zipf_loss ------------------------------------------------------------------------------


def zipf_densities(alpha: float = 1.3, c: float = 0.4, seed: int = 0) -> torch.Tensor:
    """[D_SAE] densities exactly C·rank^(−α), in a shuffled latent order."""
    ranks = torch.arange(1, D_SAE + 1, dtype=torch.float64)
    order = torch.randperm(D_SAE, generator=torch.Generator().manual_seed(seed))
    return torch.empty(D_SAE, dtype=torch.float64).scatter(0, order, c * ranks.pow(-alpha))


def test_zipf_target_recovers_an_exact_zipf_law() -> None:
    density = zipf_densities()
    torch.testing.assert_close(zipf_target(density), density, rtol=1e-10, atol=0)
    assert bool((under_use(density) == 0).all())


def test_aux_zipf_is_zero_when_usage_matches_its_target() -> None:
    sae = make("mutual_choice").train()
    x = inputs()
    out = sae.forward_full(x)
    loss = aux_zipf_loss(
        sae.W_dec, out.encoding, (x - out.x_hat).detach(), zipf_densities(), None, 8
    )
    assert loss.item() == 0.0


def test_under_use_is_the_shortfall_below_the_fitted_law() -> None:
    density = zipf_densities()
    ranks = torch.arange(1, D_SAE + 1)
    tail = ranks[-5:]
    by_rank = density.argsort(descending=True)
    low = density.clone()
    low[by_rank[tail - 1]] *= 0.25  # the five least used fall to a quarter of their target
    low[by_rank[-1]] = 0.0  # and the last is dead
    w = under_use(low)
    # the fit uses the more used half, which is unchanged, so targets stay exact
    expected = torch.zeros(D_SAE, dtype=torch.float64)
    expected[by_rank[tail[:-1] - 1]] = 0.75
    expected[by_rank[-1]] = 1.0
    torch.testing.assert_close(w, expected, rtol=1e-9, atol=1e-12)


def test_aux_zipf_with_zero_one_weights_is_auxk() -> None:
    sae = make("feature_choice").train()
    x = inputs()
    out = sae.forward_full(x)
    residual = (x - out.x_hat).detach()
    dead = torch.zeros(D_SAE, dtype=torch.bool)
    dead[::4] = True
    expected = auxk_loss(sae.W_dec, out.encoding, residual, dead, 5)
    torch.testing.assert_close(
        weighted_aux_loss(sae.W_dec, out.encoding, residual, dead.double(), 5), expected
    )
    torch.testing.assert_close(
        aux_zipf_loss(sae.W_dec, out.encoding, residual, None, dead, 5), expected
    )


def test_aux_zipf_gradient_raises_under_used_latents_along_the_residual() -> None:
    """One under-used latent whose decoder row is the residual's direction: descending the loss
    raises its encoder bias (more use); latents on target get no gradient."""
    torch.manual_seed(0)
    density = zipf_densities()
    latent = int(density.argmin())  # the least used: the fit and the other ranks are unchanged
    density[latent] *= 0.5
    w_dec = torch.randn(D_SAE, D_IN, dtype=torch.float64)
    residual = torch.randn(N, D_IN, dtype=torch.float64).abs() + 0.5
    w_dec[latent] = residual.mean(0) / residual.mean(0).norm()
    b_enc = torch.zeros(D_SAE, dtype=torch.float64, requires_grad=True)
    pre = torch.rand(N, D_SAE, dtype=torch.float64) * 0.1 + b_enc
    loss = aux_zipf_loss(w_dec, Encoding(pre), residual, density, None, aux_k=4)
    loss.backward()
    assert loss.item() > 0
    assert b_enc.grad[latent] < 0, "gradient descent raises the under-used latent"
    assert bool((b_enc.grad[torch.arange(D_SAE) != latent] == 0).all())


# --- Matryoshka ---------------------------------------------------------------------------------


def test_matryoshka_widths_and_validation() -> None:
    assert config("matryoshka", d_in=4, d_sae=64, k=2).widths == [8, 16, 32, 64]
    assert config("matryoshka", d_in=4, d_sae=64, k=2, levels=1).widths == [64]
    cfg = config("matryoshka", d_in=4, d_sae=64, k=2, prefix_widths=[5, 40])
    assert cfg.widths == [5, 40, 64]
    with pytest.raises(ConfigError, match=r"prefix_widths=\[40, 5\] is invalid: expected incr"):
        config("matryoshka", d_in=4, d_sae=64, k=2, prefix_widths=[40, 5])
    with pytest.raises(ConfigError, match=r"prefix_widths=\[64\] is invalid"):
        config("matryoshka", d_in=4, d_sae=64, k=2, prefix_widths=[64])
    with pytest.raises(ConfigError, match=r"levels=8 is invalid: expected in 1..7"):
        config("matryoshka", d_in=4, d_sae=64, k=2, levels=8)


def test_matryoshka_loss_is_the_sum_of_prefix_losses() -> None:
    sae = make("matryoshka", prefix_widths=[6, 20]).train()
    x = inputs()
    terms, out = reconstruction(sae, Batch(x), LossContext())
    f = out.codes.dense()
    by_hand = [
        (x - (f[:, :w] @ sae.W_dec[:w] + sae.b_dec)).pow(2).sum(-1).mean() for w in (6, 20, D_SAE)
    ]
    torch.testing.assert_close(terms["mse"], by_hand[2])
    torch.testing.assert_close(terms["prefix_mse"], by_hand[0] + by_hand[1])
    torch.testing.assert_close(
        terms["loss"], sum(by_hand) + sae.cfg.aux_coefficient * terms["auxk"]
    )
    full = prefix_reconstructions(f, sae.W_dec, sae.b_dec, [6, 20, D_SAE])[-1]
    torch.testing.assert_close(full, out.x_hat)


def test_matryoshka_first_prefix_alone_is_its_prefix() -> None:
    sae = make("matryoshka", prefix_widths=[6, 20]).eval()
    sae.threshold.fill_(0.2)
    x = inputs()
    small = sae.prefix(6)
    assert small.d_sae == 6 and not small.training
    with torch.no_grad():
        f = sae.encode(x)
        torch.testing.assert_close(small.encode(x), f[:, :6], rtol=0, atol=1e-12)
        (first, *_) = prefix_reconstructions(f, sae.W_dec, sae.b_dec, [6])
        torch.testing.assert_close(small(x), first)
    assert (f[:, :6] != 0).any()
    assert isinstance(sae, MatryoshkaSAE) and isinstance(make("feature_choice"), FeatureChoiceSAE)
