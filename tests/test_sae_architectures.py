"""Each architecture's sparsity function, losses and custom gradients against their definitions."""

from __future__ import annotations

import pytest
import torch

from monosemantic.config import ConfigError
from monosemantic.sae.base import SAE, LossContext, SAEConfig
from monosemantic.sae.batchtopk import THRESHOLD_DECAY, BatchTopKSAE
from monosemantic.sae.feature_choice import FeatureChoiceSAE
from monosemantic.sae.gated import GatedSAE
from monosemantic.sae.groupmax import GroupMaxSAE
from monosemantic.sae.jumprelu import JumpReLUSAE, heaviside, jumprelu
from monosemantic.sae.matching_pursuit import MatchingPursuitSAE
from monosemantic.sae.matryoshka import MatryoshkaSAE
from monosemantic.sae.mutual_choice import MutualChoiceSAE
from monosemantic.sae.p_anneal import PAnnealSAE
from monosemantic.sae.registry import ARCHITECTURES, architecture_fields, config, create
from monosemantic.sae.relu import ReluSAE
from monosemantic.sae.topk import TopKSAE
from monosemantic.training.objective import Batch, reconstruction

D_IN, D_SAE, K, BATCH = 10, 48, 3, 32


def make(architecture: str, dtype: str = "float64", seed: int = 0, **kw) -> SAE:
    """``architecture`` with all parameters random (θ in a range where some latents fire)."""
    torch.manual_seed(seed)
    if "k" in architecture_fields(ARCHITECTURES[architecture]):
        kw = {"k": K, **kw}
    sae = create(config(architecture, d_in=D_IN, d_sae=D_SAE, dtype=dtype, **kw))
    with torch.no_grad():
        for p in sae.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
        if isinstance(sae, JumpReLUSAE):
            sae.log_threshold.copy_(torch.empty(D_SAE).uniform_(-3.0, 0.0))
    return sae


def batch(seed: int = 1, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.randn(BATCH, D_IN, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def loss_terms(sae: SAE, x: torch.Tensor, lam: float = 1.0, dead=None):
    """The default objective's terms and output; ``lam`` sets the sparsity coefficient."""
    if hasattr(sae.cfg, "sparsity_coefficient"):
        sae.cfg.sparsity_coefficient = lam
    return reconstruction(sae, Batch(x), LossContext(dead=dead))


def test_registry_holds_every_architecture() -> None:
    expected = {
        "standard": ReluSAE,
        "topk": TopKSAE,
        "batchtopk": BatchTopKSAE,
        "jumprelu": JumpReLUSAE,
        "gated": GatedSAE,
        "feature_choice": FeatureChoiceSAE,
        "mutual_choice": MutualChoiceSAE,
        "matryoshka": MatryoshkaSAE,
        "groupmax": GroupMaxSAE,
        "p_anneal": PAnnealSAE,
        "matching_pursuit": MatchingPursuitSAE,
    }
    assert expected == ARCHITECTURES


# --- TopK and BatchTopK -------------------------------------------------------------------------


def test_topk_keeps_exactly_the_k_largest_per_row() -> None:
    sae = make("topk")
    with torch.no_grad():
        sae.b_enc.fill_(20.0)  # all pre-activations positive: ReLU zeroes none of the top k
        x = batch()
        pre, f = sae.pre_acts(x), sae.encode(x)
    assert ((f != 0).sum(-1) == K).all()
    kth_largest = pre.sort(-1, descending=True).values[:, K - 1 : K]
    torch.testing.assert_close(f, pre * (pre >= kth_largest), rtol=0, atol=0)


def test_batchtopk_keeps_k_times_batch_overall_in_training() -> None:
    sae = make("batchtopk").train()
    with torch.no_grad():
        sae.b_enc.fill_(20.0)
        x = batch()
        pre, f = sae.pre_acts(x), sae.encode(x)
    counts = (f != 0).sum(-1)
    assert int(counts.sum()) == K * BATCH
    assert counts.min() < K < counts.max(), "the budget is shared, not per row"
    cut = pre.flatten().sort(descending=True).values[K * BATCH - 1]
    torch.testing.assert_close(f, pre * (pre >= cut), rtol=0, atol=0)


def test_batchtopk_threshold_is_running_mean_of_smallest_kept() -> None:
    sae = make("batchtopk").train()
    assert sae.threshold.item() < 0, "unset before training"
    smallest = []
    for seed in (1, 2):
        _, out = loss_terms(sae, batch(seed))
        f = out.codes.dense()
        smallest.append(f[f > 0].min().item())
        sae.update_state(out, LossContext())
    expected = THRESHOLD_DECAY * smallest[0] + (1 - THRESHOLD_DECAY) * smallest[1]
    assert sae.threshold.item() == pytest.approx(expected, rel=1e-12)
    loss_terms(sae, batch(3))
    assert sae.threshold.item() == pytest.approx(expected, rel=1e-12), "the loss leaves θ alone"


def test_batchtopk_eval_uses_the_threshold() -> None:
    sae = make("batchtopk")
    x = batch()
    with torch.no_grad():
        sae.eval()
        fallback = sae.encode(x)  # θ not estimated yet: batch top-k
        assert int((fallback != 0).sum()) == K * BATCH
        sae.threshold.fill_(0.4)
        pre, f = sae.pre_acts(x), sae.encode(x)
        torch.testing.assert_close(f, pre * (pre > 0.4), rtol=0, atol=0)
        # rows are independent in eval mode: encoding one row alone gives the same codes
        torch.testing.assert_close(sae.encode(x[:1]), f[:1])


def test_groupmax_keeps_each_groups_largest() -> None:
    """Brute force over the k contiguous groups of d_sae / k latents; the sparse path's
    reconstruction equals decoding the dense codes."""
    sae = make("groupmax")
    x = batch()
    with torch.no_grad():
        pre, f, out = sae.pre_acts(x), sae.encode(x), sae.forward_full(x)
    size = D_SAE // K
    expected = torch.zeros_like(pre)
    for row in range(BATCH):
        for g in range(K):
            block = pre[row, g * size : (g + 1) * size].relu()
            expected[row, g * size + int(block.argmax())] = block.max()
    torch.testing.assert_close(f, expected, rtol=0, atol=0)
    torch.testing.assert_close(out.codes.dense(), expected, rtol=0, atol=0)
    torch.testing.assert_close(out.x_hat, sae.decode(expected))
    assert bool((out.codes.indices // size == torch.arange(K)).all()), "one latent per group"
    with pytest.raises(ConfigError, match=r"k=5 is invalid: expected a divisor of d_sae=48"):
        config("groupmax", d_in=D_IN, d_sae=D_SAE, k=5)


# --- JumpReLU -----------------------------------------------------------------------------------


def jump_inputs(eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """pre [BATCH, D_SAE] with a third of the entries inside the kernel window |pre − θ| < ε/2."""
    g = torch.Generator().manual_seed(0)
    theta = torch.rand(D_SAE, generator=g, dtype=torch.float64) + 0.1
    pre = torch.randn(BATCH, D_SAE, generator=g, dtype=torch.float64)
    near = torch.rand(BATCH, D_SAE, generator=g) < 1 / 3
    offset = (torch.rand(BATCH, D_SAE, generator=g, dtype=torch.float64) - 0.5) * 0.9 * eps
    pre = torch.where(near, theta + offset, pre)
    upstream = torch.randn(BATCH, D_SAE, generator=g, dtype=torch.float64)
    return pre, theta, upstream


@pytest.mark.parametrize("eps", [1e-3, 0.05])
def test_jumprelu_gradients_are_the_rectangle_estimators(eps: float) -> None:
    pre, theta, upstream = jump_inputs(eps)
    pre.requires_grad_(True)
    theta.requires_grad_(True)
    f = jumprelu(pre, theta, eps)
    torch.testing.assert_close(f, pre * (pre > theta), rtol=0, atol=0)
    f.backward(upstream)
    step = (pre > theta).double()
    window = ((pre - theta).abs() < eps / 2).double()
    assert window.sum() > BATCH, "the test must exercise the kernel"
    torch.testing.assert_close(pre.grad, upstream * step, rtol=0, atol=0)
    expected_theta = (-(theta / eps) * window * upstream).sum(0)
    torch.testing.assert_close(theta.grad, expected_theta, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("eps", [1e-3, 0.05])
def test_heaviside_gradients_are_the_rectangle_estimators(eps: float) -> None:
    pre, theta, upstream = jump_inputs(eps)
    pre.requires_grad_(True)
    theta.requires_grad_(True)
    h = heaviside(pre, theta, eps)
    torch.testing.assert_close(h, (pre > theta).double(), rtol=0, atol=0)
    h.backward(upstream)
    assert pre.grad is None or not pre.grad.any(), "∂H/∂pre = 0"
    window = ((pre - theta).abs() < eps / 2).double()
    torch.testing.assert_close(theta.grad, (-(1 / eps) * window * upstream).sum(0))


def test_jumprelu_pre_gradient_matches_finite_differences_away_from_threshold() -> None:
    pre, theta, _ = jump_inputs(1e-3)
    far = (pre - theta).abs() > 1e-3
    pre.requires_grad_(True)
    jumprelu(pre, theta, 1e-3).sum().backward()
    h = 1e-6
    with torch.no_grad():
        numeric = (jumprelu(pre + h, theta, 1e-3) - jumprelu(pre - h, theta, 1e-3)) / (2 * h)
    torch.testing.assert_close(pre.grad[far], numeric[far], rtol=1e-7, atol=1e-7)


def test_jumprelu_sae_l0_gradient_reaches_log_threshold_by_chain_rule() -> None:
    lam, eps = 0.7, 0.5  # a wide window so that many latents get a gradient
    sae = make("jumprelu", jumprelu_bandwidth=eps)
    x = batch()
    terms, out = loss_terms(sae, x, lam)
    assert terms["l0"].item() == pytest.approx(out.codes.active().double().mean().item())
    # only the L0 term: the mse path's gradient to θ is tested above
    (lam * terms["l0"]).backward()
    with torch.no_grad():
        theta, pre = sae.threshold, out.pre
        window = ((pre - theta).abs() < eps / 2).double()
        d_theta = lam * (-(1 / eps) * window).sum(0) / BATCH
    assert window.any()
    torch.testing.assert_close(sae.log_threshold.grad, theta * d_theta)


def test_jumprelu_tanh_loss_and_its_threshold_gradient() -> None:
    """λ Σ tanh(c f ‖W_dec‖) by hand; its gradient reaches θ only through JumpReLU's estimator:
    ∂/∂θ_i = λ Σ_b c n_i sech²(c f n_i) · (−θ_i/ε) K((pre − θ_i)/ε), per log θ times θ."""
    lam, c, eps = 0.3, 4.0, 0.5
    sae = make("jumprelu", jumprelu_bandwidth=eps, jumprelu_sparsity_loss="tanh")
    sae.cfg.sparsity_coefficient = lam
    x = batch()
    out = sae.forward_full(x)
    terms = sae.penalties(out, x, LossContext())
    assert set(terms) == {"tanh"}
    weight, value = terms["tanh"]
    norms = sae.W_dec.norm(dim=-1).detach()
    f, pre, theta = out.codes.dense(), out.pre.detach(), sae.threshold.detach()
    torch.testing.assert_close(value, (c * f * norms).tanh().sum(-1).mean())
    (weight * value).backward()
    window = ((pre - theta).abs() < eps / 2).double()
    sech2 = 1 - (c * f.detach() * norms).tanh().pow(2)
    d_theta = (lam * c * norms * sech2 * (-(theta / eps)) * window).sum(0) / BATCH
    assert window.sum() > 0
    torch.testing.assert_close(sae.log_threshold.grad, d_theta * theta, rtol=1e-10, atol=1e-12)


def test_jumprelu_pre_act_loss_pulls_dead_latents_to_their_thresholds() -> None:
    sae = make("jumprelu", pre_act_loss_coefficient=3e-6)
    x = batch()
    out = sae.forward_full(x)
    dead = torch.zeros(D_SAE, dtype=torch.bool)
    dead[:5] = True
    terms = sae.penalties(out, x, LossContext(dead=dead))
    weight, value = terms["pre_act"]
    norms = sae.W_dec.norm(dim=-1)
    by_hand = ((sae.threshold - out.pre).relu()[:, :5] * norms[:5]).sum(-1).mean()
    assert weight == 3e-6 and value.item() > 0
    torch.testing.assert_close(value, by_hand)
    no_dead = sae.penalties(out, x, LossContext(dead=torch.zeros(D_SAE, dtype=torch.bool)))
    assert no_dead["pre_act"][1].item() == 0.0


# --- Gated and ReLU -----------------------------------------------------------------------------


def test_gated_forward_and_losses_match_the_equations() -> None:
    sae = make("gated")
    assert not hasattr(sae, "b_enc")
    x = batch()
    with torch.no_grad():
        centred = x - sae.b_dec
        pi_gate = centred @ sae.W_enc + sae.b_gate
        magnitude = centred @ (sae.W_enc * sae.r_mag.exp()) + sae.b_mag
        f = (pi_gate > 0).double() * magnitude.relu()
        x_hat = f @ sae.W_dec + sae.b_dec
    lam = 0.3
    terms, out = loss_terms(sae, x, lam)
    assert (f > 0).any() and (f == 0).any()
    torch.testing.assert_close(out.codes.dense(), f)
    torch.testing.assert_close(out.x_hat, x_hat)
    with torch.no_grad():
        l1 = pi_gate.relu().sum() / BATCH
        aux = (x - (pi_gate.relu() @ sae.W_dec + sae.b_dec)).pow(2).sum() / BATCH
        mse = (x - x_hat).pow(2).sum() / BATCH
    torch.testing.assert_close(terms["l1"], l1)
    torch.testing.assert_close(terms["aux"], aux)
    torch.testing.assert_close(terms["loss"], mse + lam * l1 + aux)
    terms["aux"].backward()
    assert sae.W_dec.grad is None and sae.b_dec.grad is not None, "aux sees a frozen decoder"
    assert sae.b_gate.grad is not None and sae.b_gate.grad.any()


def test_relu_l1_is_decoder_norm_weighted() -> None:
    sae = make("standard")
    x = batch()
    lam = 0.2
    terms, out = loss_terms(sae, x, lam)
    f = out.codes.dense()
    torch.testing.assert_close(f, sae.pre_acts(x).relu())
    with torch.no_grad():
        by_hand = (
            sum(f[b, i] * sae.W_dec[i].norm() for b in range(BATCH) for i in range(D_SAE)) / BATCH
        )
        mse = (x - out.x_hat).pow(2).sum() / BATCH
    torch.testing.assert_close(terms["l1"], by_hand)
    torch.testing.assert_close(terms["loss"], mse + lam * by_hand)


# --- shared behaviour ---------------------------------------------------------------------------


@pytest.mark.parametrize("architecture", sorted(set(ARCHITECTURES) - {"matching_pursuit"}))
@pytest.mark.parametrize("training", [True, False])
def test_fold_input_scale(architecture: str, training: bool) -> None:
    """Folding keeps the codes; matching pursuit's codes scale instead
    (tests/test_matching_pursuit.py)."""
    scale = 3.7
    sae = make(architecture).train(training)
    if hasattr(sae, "threshold") and not isinstance(sae, JumpReLUSAE):
        sae.threshold.fill_(0.3)
    x = batch()
    with torch.no_grad():
        f_scaled, x_hat_scaled = sae.encode(scale * x), sae(scale * x)
        sae.fold_input_scale(scale)
        f, x_hat = sae.encode(x), sae(x)
    assert (f != 0).any() and (f == 0).any()
    torch.testing.assert_close(f, f_scaled, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(x_hat, x_hat_scaled / scale, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"architecture": "topk", "k": 0}, r"k=0 is invalid: expected in 1..d_sae=48"),
        ({"architecture": "batchtopk", "k": 49}, r"k=49 is invalid: expected in 1..d_sae=48"),
        ({"architecture": "topk", "aux_k": 0}, r"aux_k=0 is invalid"),
        ({"architecture": "topk", "sparsity_coefficient": 1.0}, r"unknown TopKConfig fields"),
        ({"architecture": "jumprelu", "jumprelu_bandwidth": 0.0}, r"jumprelu_bandwidth=0.0 is"),
        (
            {"architecture": "jumprelu", "jumprelu_init_threshold": -1.0},
            r"jumprelu_init_threshold=-1.0 is invalid: expected > 0",
        ),
        ({"architecture": "relu"}, r"architecture='relu' is invalid: expected one of \["),
        ({"architecture": "standard", "sparsity_coefficient": -1}, r"sparsity_coefficient=-1"),
    ],
)
def test_config_validation(kwargs: dict, message: str) -> None:
    fields = dict(kwargs)
    name = fields.pop("architecture")
    with pytest.raises(ConfigError, match=message):
        config(name, d_in=D_IN, d_sae=D_SAE, **fields)


def test_the_shared_config_alone_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"build an architecture's config"):
        SAEConfig(d_in=D_IN, d_sae=D_SAE)


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_wrong_d_in_is_reported(architecture: str) -> None:
    sae = make(architecture, hook="model.layers.2:output")
    with pytest.raises(ValueError, match=r"d_in=10 \(hook model.layers.2:output\), got shape"):
        sae.encode(torch.zeros(4, D_IN + 1, dtype=torch.float64))
