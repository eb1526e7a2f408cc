"""End-to-end objectives (Braun et al. 2024): KL through the spliced model, checked against the
definitions on a tiny 2-layer transformer: an exact SAE costs nothing and gets no gradient, the
KL and downstream terms equal brute force, the clean pass is shared and resumable, and training
lowers the KL without touching the model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tiny_lm import sharp_lm

from monosemantic.config import ConfigError
from monosemantic.hooks import capture, patch
from monosemantic.sae.base import LossContext
from monosemantic.sae.registry import config, create
from monosemantic.training.end_to_end import CLEAN, KEEP, LOGITS, TOKENS, EndToEnd, WindowSteps
from monosemantic.training.objective import Batch
from monosemantic.training.trainer import TrainConfig, train

HOOK = "blocks.0:output"
LATER = "blocks.1:output"
D, VOCAB, CTX = 16, 300, 12


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return sharp_lm(2, d_model=D, vocab_size=VOCAB, context_size=CTX)


def windows(n: int = 6, seed: int = 3) -> torch.Tensor:
    return torch.randint(0, VOCAB, (n, CTX), generator=torch.Generator().manual_seed(seed))


def exclude_first(tokens: torch.Tensor) -> torch.Tensor:
    """Position 0 excluded, as BOS would be."""
    mask = torch.zeros_like(tokens, dtype=torch.bool)
    mask[:, 0] = True
    return mask


def identity_sae():
    """ReLU(x) − ReLU(−x) = x: a standard SAE that returns its input exactly."""
    sae = create(config("standard", d_in=D, d_sae=2 * D, hook=HOOK))
    eye = torch.eye(D)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], dim=1))
        sae.W_dec.copy_(torch.cat([eye, -eye], dim=0))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae


def step_of(model, downstream=()) -> dict[str, torch.Tensor]:
    tokens = windows()
    source = WindowSteps(model, tokens, [HOOK], list(downstream), exclude_first(tokens))
    return source.clean_pass(torch.arange(len(tokens)))


def batch_of(step: dict[str, torch.Tensor]) -> Batch:
    return Batch(step[HOOK], context={k: v for k, v in step.items() if k != HOOK})


def test_an_exact_sae_has_zero_kl_and_zero_gradient(model) -> None:
    sae = identity_sae()
    step = step_of(model)
    terms, _ = EndToEnd(model)(sae, batch_of(step), LossContext())
    assert terms["kl"].item() == pytest.approx(0.0, abs=1e-6)
    terms["loss"].backward()
    for name, p in sae.named_parameters():
        assert p.grad is not None and p.grad.abs().max() < 1e-5, name
    assert all(p.grad is None for p in model.parameters()), "the model stays frozen"


def test_kl_equals_brute_force_with_the_sae_spliced_in(model) -> None:
    torch.manual_seed(1)
    sae = create(config("topk", d_in=D, d_sae=32, k=3, hook=HOOK))
    step = step_of(model)
    terms, _ = EndToEnd(model, kl_coefficient=2.0)(sae, batch_of(step), LossContext())
    ids, keep = step[TOKENS], step[KEEP]

    def replace(act: torch.Tensor) -> torch.Tensor:
        out = act.clone()
        out[keep] = sae(act[keep])
        return out

    with torch.no_grad():
        clean = model(ids).log_softmax(-1)[keep]
        with patch(model, HOOK, replace):
            spliced = model(ids).log_softmax(-1)[keep]
        expected = (clean.exp() * (clean - spliced)).sum(-1).mean()
    assert terms["kl"].item() == pytest.approx(2.0 * expected.item(), rel=1e-4)
    assert expected > 1e-3, "a random SAE must cost something for the test to mean anything"
    assert torch.equal(step[LOGITS][~keep].argmax(-1), model(ids)[~keep].argmax(-1))


def test_downstream_term_reads_the_spliced_later_layer(model) -> None:
    """β/|D| Σ MSE: at a later layer it is the brute-force MSE of spliced vs clean activations;
    at a point before the splice (the embedding) the SAE changes nothing, so its MSE is 0."""
    torch.manual_seed(2)
    sae = create(config("topk", d_in=D, d_sae=32, k=3, hook=HOOK))
    step = step_of(model, downstream=[LATER, "embed:output"])
    assert torch.equal(step[CLEAN + LATER], capture_at(model, step[TOKENS], LATER))
    objective = EndToEnd(model, downstream=[LATER, "embed:output"], downstream_coefficient=3.0)
    terms, _ = objective(sae, batch_of(step), LossContext())
    keep = step[KEEP]

    def replace(act: torch.Tensor) -> torch.Tensor:
        out = act.clone()
        out[keep] = sae(act[keep])
        return out

    with torch.no_grad(), patch(model, HOOK, replace):
        spliced = capture_at(model, step[TOKENS], LATER)
    later = F.mse_loss(spliced, step[CLEAN + LATER]).item()
    assert terms["downstream"].item() == pytest.approx(3.0 / 2 * (later + 0.0), rel=1e-4)
    assert later > 0


def capture_at(model, ids: torch.Tensor, point: str) -> torch.Tensor:
    with torch.no_grad(), capture(model, [point]) as acts:
        model(ids)
    return acts[point]


def test_window_steps_hold_kept_rows_and_resume_exactly(model) -> None:
    tokens = windows(n=10)
    source = WindowSteps(model, tokens, [HOOK], [], exclude_first(tokens))
    steps = list(zip(range(4), source.batches(3 * CTX, seed=5), strict=False))
    first = steps[0][1]
    assert first[TOKENS].shape == (3, CTX) and first[LOGITS].shape == (3, CTX, VOCAB)
    assert first[HOOK].shape == (3 * (CTX - 1), D), "excluded positions are left out"
    assert torch.equal(first[HOOK], capture_at(model, first[TOKENS], HOOK)[first[KEEP]])
    resumed = next(iter(source.batches(3 * CTX, seed=5, start_step=3)))
    assert torch.equal(resumed[TOKENS], steps[3][1][TOKENS])


def test_e2e_training_lowers_the_kl_and_leaves_the_model_alone(model) -> None:
    tokens = windows(n=64, seed=7)
    source = WindowSteps(model, tokens, [HOOK], [], exclude_first(tokens))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(0)
    sae = create(config("standard", d_in=D, d_sae=64, hook=HOOK, sparsity_coefficient=1e-4))
    objective = EndToEnd(model)
    cfg = TrainConfig(steps=80, batch_size=4 * CTX, lr=3e-3, progress=False, objective="e2e")
    held = step_of(model)
    start = objective(sae, batch_of(held), LossContext())[0]["kl"].item()
    train([sae], source.batches(cfg.batch_size, seed=0), cfg, objective=objective)
    end = objective(sae, batch_of(held), LossContext())[0]["kl"].item()
    assert end < 0.5 * start, (start, end)
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name


def test_objective_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="objective='kl' is invalid"):
        TrainConfig(objective="kl")
    with pytest.raises(ConfigError, match=r"downstream_hooks=.*for --objective e2e\+ds"):
        TrainConfig(objective="e2e+ds")
    with pytest.raises(ConfigError, match="downstream_hooks"):
        TrainConfig(objective="e2e", downstream_hooks=[LATER])
    assert TrainConfig(objective="e2e+ds", downstream_hooks=[LATER]).downstream_hooks == [LATER]
