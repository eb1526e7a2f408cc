"""bf16 autocast training: float32 master weights, gradients equal to float32's within bf16
tolerance, the same training outcome."""

from __future__ import annotations

import warnings

import pytest
import torch

from monosemantic import runtime
from monosemantic.config import ConfigError
from monosemantic.data.store import MatrixSource
from monosemantic.sae.registry import ARCHITECTURES, config, create
from monosemantic.training.trainer import TrainConfig, Trainer, train


def rows(n: int = 2048, d: int = 32, atoms: int = 96, k: int = 4) -> torch.Tensor:
    """Sparse codes over a random unit dictionary: [n, d]."""
    g = torch.Generator().manual_seed(0)
    dictionary = torch.nn.functional.normalize(torch.randn(atoms, d, generator=g), dim=-1)
    codes = torch.zeros(n, atoms)
    picks = torch.rand(n, atoms, generator=g).topk(k, dim=-1).indices
    codes.scatter_(1, picks, torch.rand(n, k, generator=g) + 0.5)
    return codes @ dictionary


def topk_sae():
    torch.manual_seed(0)
    return create(config("topk", d_in=32, d_sae=128, k=8))


def trained(autocast: str | None, steps: int = 60):
    sae = topk_sae()
    source = MatrixSource(rows())
    cfg = TrainConfig(steps=steps, batch_size=256, lr=3e-3, autocast=autocast, progress=False)
    train([sae], lambda step: source.batches(256, seed=0, start_step=step), cfg)
    return sae


def fvu(sae, x: torch.Tensor) -> float:
    with torch.no_grad():
        return float((sae(x) - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum())


def test_one_step_gradients_equal_float32_within_bf16_tolerance() -> None:
    x = rows(512)
    grads = {}
    for autocast in (None, "bfloat16"):
        sae = topk_sae()
        trainer = Trainer(
            [sae],
            TrainConfig(steps=1, batch_size=512, autocast=autocast, grad_clip=None, progress=False),
        )
        trainer.initialise(x)
        captured = {}

        def keep(sae=sae, captured=captured) -> None:
            captured.update({n: p.grad.clone() for n, p in sae.named_parameters()})

        trainer.prepare_gradients = lambda s, keep=keep: keep()
        trainer.train_step(x)
        grads[autocast] = captured
    for name, exact in grads[None].items():
        approx = grads["bfloat16"][name]
        assert approx.dtype == torch.float32, name  # master weights' gradients stay float32
        error = (approx - exact).norm() / exact.norm()
        assert 0 < error < 5e-2, (name, float(error))  # bf16 really ran, and agrees


def test_autocast_training_keeps_float32_weights_and_reaches_the_same_fvu() -> None:
    x = rows(1024)
    exact, mixed = trained(None), trained("bfloat16")
    assert all(p.dtype == torch.float32 for p in mixed.parameters())
    assert not torch.equal(exact.W_enc, mixed.W_enc)
    assert fvu(mixed, x) == pytest.approx(fvu(exact, x), abs=0.02)
    assert fvu(exact, x) < 0.5  # it did learn


def test_an_unknown_autocast_dtype_is_refused() -> None:
    with pytest.raises(ConfigError, match="autocast='int8' is invalid: expected bfloat16, float16"):
        TrainConfig(autocast="int8")


def test_harvesting_under_autocast_matches_float32_within_bf16_tolerance() -> None:
    from conftest import make_tiny_llama

    from monosemantic.data.harvest import forward_activations
    from monosemantic.data.sources import DataConfig

    model = make_tiny_llama()
    tokens = torch.randint(3, 100, (4, 12), generator=torch.Generator().manual_seed(0))
    hooks = ["model.layers.1.mlp:input", "model.layers.1:output"]
    exact = forward_activations(model, tokens, hooks)
    mixed = forward_activations(model, tokens, hooks, autocast="bfloat16")
    assert next(model.parameters()).dtype == torch.float32
    for hook in hooks:
        error = (mixed[hook].float() - exact[hook]).norm() / exact[hook].norm()
        assert 0 < error < 3e-2, (hook, float(error))
    with pytest.raises(ConfigError, match="harvest_autocast='fp8' is invalid"):
        DataConfig(harvest_autocast="fp8")


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_every_architecture_trains_under_autocast_towards_float32s_step(name: str) -> None:
    """One step of each architecture, sparse path or dense, under bf16 autocast: a finite loss
    and float32 weights that moved like the float32 step's (cosine of the updates > 0.9)."""
    x = rows(256)
    updates = {}
    for autocast in (None, "bfloat16"):
        torch.manual_seed(0)
        fields = {"k": 8} if "k" in config(name, d_in=32, d_sae=128).__dataclass_fields__ else {}
        sae = create(config(name, d_in=32, d_sae=128, **fields))
        trainer = Trainer(
            [sae], TrainConfig(steps=1, batch_size=256, autocast=autocast, lr=1e-3, progress=False)
        )
        trainer.initialise(x)
        before = torch.cat([p.detach().flatten().clone() for p in sae.parameters()])
        logs = trainer.train_step(x)
        assert torch.isfinite(torch.tensor(logs["0"]["loss"]))
        assert all(p.dtype == torch.float32 for p in sae.parameters())
        updates[autocast] = torch.cat([p.detach().flatten() for p in sae.parameters()]) - before
    cosine = torch.nn.functional.cosine_similarity(updates[None], updates["bfloat16"], dim=0)
    assert cosine > 0.9, float(cosine)


@pytest.fixture
def cpu_speed(monkeypatch):
    """Sets whether this CPU has fast half-precision matmuls; the warning may fire again."""

    def set_fast(fast: bool) -> None:
        monkeypatch.setattr(runtime, "cpu_has_fast_matmul", lambda name: fast)
        runtime.warn_if_slow_on_cpu.cache_clear()

    yield set_fast
    runtime.warn_if_slow_on_cpu.cache_clear()


def test_autocast_on_a_cpu_without_fast_bf16_warns_once_and_says_what_to_do(cpu_speed) -> None:
    cpu_speed(False)
    with pytest.warns(UserWarning) as caught:
        trained("bfloat16", steps=3)
    messages = [str(w.message) for w in caught if "autocast on this CPU" in str(w.message)]
    assert len(messages) == 1, messages  # once per dtype, not once per step
    assert "bfloat16 autocast on this CPU is tens of times slower than float32" in messages[0]
    assert "Train and harvest in float32 here (leave out --autocast), or on a GPU" in messages[0]


def slow_cpu_warnings(run) -> list[str]:
    """The autocast-speed warnings ``run()`` gives."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run()
    return [str(w.message) for w in caught if "autocast on this CPU" in str(w.message)]


def test_autocast_on_a_cpu_with_fast_bf16_or_without_autocast_is_silent(cpu_speed) -> None:
    cpu_speed(True)
    assert slow_cpu_warnings(lambda: trained("bfloat16", steps=2)) == []
    cpu_speed(False)
    assert slow_cpu_warnings(lambda: trained(None, steps=2)) == []


def test_harvesting_under_autocast_on_a_slow_cpu_warns(cpu_speed) -> None:
    from conftest import make_tiny_llama

    from monosemantic.data.harvest import forward_activations

    cpu_speed(False)
    tokens = torch.randint(3, 100, (1, 6), generator=torch.Generator().manual_seed(0))
    model, hooks = make_tiny_llama(), ["model.layers.0:output"]
    (message,) = slow_cpu_warnings(
        lambda: forward_activations(model, tokens, hooks, autocast="float16")
    )
    assert message.startswith("float16 autocast on this CPU is tens of times slower")
