import itertools

import pytest
import torch

from monosemantic.config import ConfigError
from monosemantic.data.store import MatrixSource, NonFiniteActivationError
from monosemantic.sae.registry import config, create
from monosemantic.training.trainer import TrainConfig, Trainer, train


def make_saes(seed=0, hook=""):
    torch.manual_seed(seed)
    return [
        create(config("topk", d_in=16, d_sae=64, k=4, hook=hook)),
        create(config("topk", d_in=16, d_sae=32, k=2, hook=hook)),
    ]


def data(n=2048, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g) * 3 + 1


def fast(**kw):
    base = dict(steps=40, batch_size=64, lr=3e-3, progress=False, seed=0, log_every=5)
    return TrainConfig(**{**base, **kw})


def test_resumed_run_matches_uninterrupted(tmp_path):
    source = MatrixSource(data())
    full = make_saes()
    train(full, lambda s: source.batches(64, seed=0, start_step=s), fast(), tmp_path / "a")

    class Interrupt(Exception):
        pass

    def stops_after_20(start):
        for i, batch in enumerate(source.batches(64, seed=0, start_step=start)):
            if i == 20:
                raise Interrupt
            yield batch

    cfg = fast(checkpoint_every=10)
    with pytest.raises(Interrupt):
        train(make_saes(), stops_after_20, cfg, tmp_path / "b")
    resumed = make_saes(seed=123)  # weights come from the checkpoint, not from this init
    train(
        resumed,
        lambda s: source.batches(64, seed=0, start_step=s),
        cfg,
        tmp_path / "b",
        resume=True,
    )
    for a, b in zip(full, resumed, strict=True):
        for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
            torch.testing.assert_close(pa, pb, atol=1e-6, rtol=0, msg=name)


def test_resume_without_checkpoint_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint to resume from"):
        train(make_saes(), lambda s: iter([]), fast(), tmp_path, resume=True)


def test_non_finite_activations_stop_before_weights_change():
    x = data(n=256)
    batches = list(x.split(64))
    batches[2] = batches[2].clone()
    batches[2][5, 3] = float("nan")
    saes = make_saes(hook="model.layers.3.mlp:output")
    trainer = Trainer(saes, fast())
    with pytest.raises(NonFiniteActivationError, match=r"step 2.*model\.layers\.3\.mlp:output"):
        trainer.fit(batches)
    before = {k: v.clone() for k, v in saes[0].state_dict().items()}
    with pytest.raises(NonFiniteActivationError):
        trainer.train_step(batches[2])
    for k, v in saes[0].state_dict().items():
        assert torch.equal(before[k], v)


def test_lr_and_sparsity_schedules():
    cfg = fast(steps=100, lr_warmup_steps=10, lr_decay_fraction=0.2, sparsity_warmup_steps=50)
    assert cfg.lr_at(0, 1.0) == pytest.approx(0.1)
    assert cfg.lr_at(9, 1.0) == pytest.approx(1.0)
    assert cfg.lr_at(50, 1.0) == pytest.approx(1.0)
    assert cfg.lr_at(90, 1.0) == pytest.approx(0.5)  # 10 of the 20 decay steps left
    assert cfg.sparsity_scale_at(24) == pytest.approx(0.5)
    assert cfg.sparsity_scale_at(80) == pytest.approx(1.0)


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match=r"init_b_dec='median' is invalid"):
        TrainConfig(init_b_dec="median")
    with pytest.raises(ConfigError, match="steps=0 is invalid"):
        TrainConfig(steps=0)


def test_input_scale_is_folded_into_the_weights():
    """Training on 100·x and on x sees the same normalised inputs, so the returned SAEs differ
    exactly by the scale: sae_big(100 x) = 100 sae_small(x)."""
    x = data(n=512)
    small, big = make_saes()[:1], make_saes()[:1]
    r_small = train(small, x.split(64), fast(steps=8, init_b_dec="mean"))
    r_big = train(big, (100 * x).split(64), fast(steps=8, init_b_dec="mean"))
    assert r_big[0]["input_scale"] == pytest.approx(r_small[0]["input_scale"] / 100)
    with torch.no_grad():
        torch.testing.assert_close(
            big[0](100 * x[:32]), 100 * small[0](x[:32]), rtol=1e-3, atol=1e-3
        )


def test_unit_norm_decoder_kept():
    saes = make_saes()
    train(saes, data().split(64), fast(steps=10))
    # folded by the input scale, so rows have the common norm 1 / scale
    norms = saes[0].W_dec.norm(dim=1)
    torch.testing.assert_close(norms, norms[0].expand_as(norms))


def test_resampling_revives_dead_latents():
    saes = make_saes()[:1]
    trainer = Trainer(saes, fast(dead_after_tokens=1, resample_every=1))
    x = data(n=64)
    trainer.initialise(x)
    run = trainer.runs[0]
    run.since_fired[:10] = 5  # latents 0..9 dead
    n = trainer.resample(run, x * trainer.input_scale[""])
    assert n == 10
    sae = saes[0]
    torch.testing.assert_close(sae.W_dec[:10].norm(dim=1), torch.ones(10))
    assert torch.all(sae.b_enc[:10] == 0)
    # each new decoder row is the direction of some input (minus b_dec)
    dirs = x * trainer.input_scale[""] - sae.b_dec
    dirs = dirs / dirs.norm(dim=1, keepdim=True)
    best = (sae.W_dec[:10] @ dirs.T).max(dim=1).values
    torch.testing.assert_close(best, torch.ones(10))
    assert torch.all(run.since_fired[:10] == 0)


ARCHS = {
    "standard": {"sparsity_coefficient": 1e-3},
    "topk": {"k": 4},
    "batchtopk": {"k": 4},
    "jumprelu": {"sparsity_coefficient": 1e-3},
    "gated": {"sparsity_coefficient": 1e-3},
    "feature_choice": {"k": 4},
    "mutual_choice": {"k": 4},
    "matryoshka": {"k": 4},
    "groupmax": {"k": 4},
    "p_anneal": {"sparsity_coefficient": 1e-3},
    "matching_pursuit": {"k": 4},
}


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_every_architecture_trains_and_resamples(arch, tmp_path):
    torch.manual_seed(0)
    sae = create(config(arch, d_in=16, d_sae=64, **ARCHS[arch]))
    trainer = Trainer([sae], fast(steps=60, resample_every=20, dead_after_tokens=64))
    source = MatrixSource(data())
    trainer.initialise(next(source.batches(64, seed=0)))
    first = trainer.train_step(next(source.batches(64, seed=0)))["0"]["mse"]
    trainer.runs[0].since_fired[:8] = 10_000  # force some dead latents
    assert trainer.resample(trainer.runs[0], data(n=64) * trainer.input_scale[""]) >= 8
    for bias in sae.latent_biases():
        assert torch.all(bias[:8] == 0)
    last = trainer.fit(source.batches(64, seed=0, start_step=1))[0]["mse"]
    # pursuit over a random unit dictionary already fits Gaussian rows well: less to gain
    assert last < (0.8 if arch == "matching_pursuit" else 0.75) * first


def test_running_density_is_an_average_of_firing_frequencies():
    """The density handed to loss terms (aux_zipf_loss): the first step's frequencies, then an
    exponential moving average with weight batch / dead_after_tokens."""
    torch.manual_seed(0)
    sae = create(config("topk", d_in=16, d_sae=64, k=4))
    trainer = Trainer([sae], fast(dead_after_tokens=256))
    batches = list(itertools.islice(MatrixSource(data()).batches(64, seed=0), 3))
    trainer.initialise(batches[0])
    expected = None
    for rows in batches:
        with torch.no_grad():
            x = rows * trainer.input_scale[""]
            frequency = sae.forward_full(x).codes.fire_counts().double() / 64
        expected = frequency if expected is None else expected + (64 / 256) * (frequency - expected)
        trainer.train_step(rows)
        torch.testing.assert_close(trainer.runs[0].density, expected, rtol=1e-12, atol=1e-15)
    assert trainer.state_dict()["runs"][0]["density"] is trainer.runs[0].density
