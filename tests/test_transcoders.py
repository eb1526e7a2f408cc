"""Transcoders: an SAE that reads one hook point and reconstructs another (Dunefsky et al. 2024),
with an optional linear skip (Paulo et al. 2025). Checked against the definitions: the encoder
reads x itself, scales fold exactly, a linear map is recovered, resampling uses the target, and a
transcoder equal to a ReLU MLP spliced in its place leaves the model's predictions unchanged."""

from __future__ import annotations

import copy

import pytest
import torch
from tiny_lm import sharp_lm

from monosemantic.config import ConfigError
from monosemantic.data.sources import DataConfig
from monosemantic.evaluation.spliced import spliced_metrics
from monosemantic.sae.registry import config, create
from monosemantic.training.sweep import SweepConfig, sae_name
from monosemantic.training.trainer import TrainConfig, Trainer, train

IN, OUT = "x", "y"


def transcoder(architecture: str = "standard", d_in: int = 6, d_out: int = 5, **fields):
    return create(
        config(architecture, d_in=d_in, d_sae=16, d_out=d_out, hook=IN, hook_out=OUT, **fields)
    )


def test_config_says_what_a_transcoder_needs() -> None:
    with pytest.raises(ConfigError, match=r"d_out=5 is invalid.*needs hook_out"):
        config("standard", d_in=6, d_sae=16, d_out=5)
    with pytest.raises(ConfigError, match=r"skip=True is invalid.*needs hook_out"):
        config("topk", d_in=6, d_sae=16, k=4, skip=True)
    with pytest.raises(ConfigError, match=r"matching pursuit .* cannot map one hook point"):
        config("matching_pursuit", d_in=6, d_sae=16, hook=IN, hook_out=OUT)
    assert config("topk", d_in=6, d_sae=16, k=4, hook=IN, hook_out=OUT).d_out == 6
    with pytest.raises(ConfigError, match=r"hook_out.*one target per --hook"):
        DataConfig(hook=["a:input", "b:input"], hook_out=["a:output"])
    with pytest.raises(ConfigError, match="a point other than the --hook"):
        DataConfig(hook=["a:input"], hook_out=["a:input"])
    data = DataConfig(hook=["a:input", "b"], hook_out=["a:output", "b.mlp"])
    assert data.pairs == [("a:input", "a:output"), ("b:output", "b.mlp:output")]
    assert data.points == ["a:input", "b:output", "a:output", "b.mlp:output"]


def test_encoder_reads_x_not_x_minus_b_dec() -> None:
    sae = transcoder("topk", k=3)
    x = torch.randn(8, 6)
    before = sae.encode(x)
    with torch.no_grad():
        sae.b_dec.add_(torch.randn(5))
    assert torch.equal(sae.encode(x), before), "b_dec is the output's bias, not the input's"
    assert sae(x).shape == (8, 5)
    assert sae(x.reshape(2, 4, 6)).shape == (2, 4, 5)


@pytest.mark.parametrize("architecture", ["standard", "topk", "jumprelu", "gated", "batchtopk"])
def test_fold_input_scale_with_separate_output_scale(architecture: str) -> None:
    """Trained on s·x → t·y, folded, the SAE maps raw x to (its trained output)/t."""
    torch.manual_seed(0)
    fields = {"k": 3} if architecture in ("topk", "batchtopk") else {}
    sae = transcoder(architecture, skip=True, **fields).eval()
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    s, t = 2.5, 0.4
    x = torch.randn(32, 6)
    with torch.no_grad():
        expected_codes = sae.encode(s * x)
        expected = sae(s * x) / t
        folded = copy.deepcopy(sae)
        folded.fold_input_scale(s, t)
        torch.testing.assert_close(folded.encode(x), expected_codes)
        torch.testing.assert_close(folded(x), expected)


def test_autoencoder_refuses_two_scales() -> None:
    sae = create(config("standard", d_in=6, d_sae=16))
    with pytest.raises(ValueError, match="share one scale"):
        sae.fold_input_scale(2.0, 3.0)


def linear_map_steps(a: torch.Tensor, n: int, steps: int, noise: float, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(n, a.shape[1], generator=g)
        yield {IN: x, OUT: x @ a.T + noise * torch.randn(n, a.shape[0], generator=g)}


def test_skip_transcoder_recovers_a_linear_map() -> None:
    """y = A x + noise: with a strong sparsity penalty the latents stay off and the skip carries
    the map, so W_skip ≈ A (in raw units, after the scales are folded)."""
    torch.manual_seed(0)
    a = torch.randn(5, 6)
    sae = transcoder("standard", skip=True, sparsity_coefficient=10.0)
    cfg = TrainConfig(steps=400, batch_size=256, lr=1e-2, progress=False, lr_decay_fraction=0.3)
    train([sae], linear_map_steps(a, 256, 400, noise=0.01), cfg)
    assert sae.W_skip is not None
    error = (sae.W_skip - a).norm() / a.norm()
    assert error < 0.02, f"relative error of W_skip {error:.3f}"


def test_topk_transcoder_recovers_the_mapped_dictionary() -> None:
    """x = sparse codes of a planted dictionary D (3 of 24 atoms); y = A x. A TopK transcoder's
    decoder rows should become the mapped atoms A d_i (up to scale), its codes the planted codes."""
    torch.manual_seed(1)
    d_in, d_out, atoms, k = 32, 24, 32, 3
    dictionary = torch.nn.functional.normalize(torch.randn(atoms, d_in), dim=1)
    a = torch.randn(d_out, d_in) / d_in**0.5
    mapped = torch.nn.functional.normalize(dictionary @ a.T, dim=1)

    def steps():
        g = torch.Generator().manual_seed(2)
        while True:
            idx = torch.rand(512, atoms, generator=g).topk(k, dim=1).indices
            codes = torch.zeros(512, atoms).scatter(1, idx, torch.rand(512, k, generator=g) + 0.5)
            x = codes @ dictionary
            yield {IN: x, OUT: x @ a.T}

    sae = create(config("topk", d_in=d_in, d_sae=64, d_out=d_out, hook=IN, hook_out=OUT, k=k))
    cfg = TrainConfig(steps=1500, batch_size=512, lr=3e-3, progress=False)
    train([sae], steps(), cfg)
    rows = torch.nn.functional.normalize(sae.W_dec.detach(), dim=1)
    best = (mapped @ rows.T).max(dim=1).values  # [atoms] best cosine of each mapped atom
    assert (best > 0.95).float().mean() >= 0.9, f"best cosines {best.sort().values}"


def test_resampling_puts_target_directions_in_the_decoder() -> None:
    torch.manual_seed(0)
    sae = transcoder("standard")
    trainer = Trainer(
        [sae], TrainConfig(steps=1, batch_size=64, progress=False, dead_after_tokens=1)
    )
    step = {IN: torch.randn(64, 6), OUT: torch.randn(64, 5) + 3.0}
    trainer.initialise(step)
    trainer.runs[0].since_fired.fill_(10)  # every latent dead
    x, y = step[IN] * trainer.input_scale[IN], step[OUT] * trainer.input_scale[OUT]
    with torch.no_grad():
        assert trainer.resample(trainer.runs[0], x, y) == 16
    rows = torch.nn.functional.normalize(sae.W_dec.detach(), dim=1)
    targets = torch.nn.functional.normalize(y - sae.b_dec.detach(), dim=1)
    inputs = torch.nn.functional.normalize(x, dim=1)
    assert (rows @ targets.T).max(dim=1).values.min() > 1 - 1e-5
    columns = torch.nn.functional.normalize(sae.W_enc.detach().T, dim=1)
    assert (columns @ inputs.T).max(dim=1).values.min() > 1 - 1e-5


def test_trainer_folds_both_scales_and_reports_them() -> None:
    torch.manual_seed(0)
    a = torch.randn(5, 6) * 7.0  # targets far larger than inputs
    sae = transcoder("topk", k=4)
    results = train(
        [sae],
        linear_map_steps(a, 128, 50, noise=0.0),
        TrainConfig(steps=50, batch_size=128, progress=False),
    )
    assert results[0]["output_scale"] < results[0]["input_scale"]
    x = torch.randn(512, 6)
    with torch.no_grad():
        fvu = (sae(x) - x @ a.T).pow(2).sum() / (x @ a.T).pow(2).sum()
    assert fvu < 0.5, "in raw units, the folded transcoder must predict raw targets"


def relu_lm() -> torch.nn.Module:
    return sharp_lm(d_mlp=32, gain=25.0)


def mlp_as_transcoder(model: torch.nn.Module, skip: bool = False):
    """A ReLU transcoder whose weights are the MLP's: f = ReLU(x U), ŷ = f D, exactly the MLP."""
    mlp = model.blocks[0].mlp
    d_model, hidden = mlp.up.weight.shape[1], mlp.up.weight.shape[0]
    sae = create(
        config(
            "standard",
            d_in=d_model,
            d_sae=hidden,
            hook="blocks.0.mlp:input",
            hook_out="blocks.0.mlp:output",
            skip=skip,
        )
    )
    with torch.no_grad():
        sae.W_enc.copy_(mlp.up.weight.T)
        sae.b_enc.zero_()
        sae.W_dec.copy_(mlp.down.weight.T)
        sae.b_dec.zero_()
    return sae.eval()


def test_transcoder_equal_to_the_mlp_splices_in_without_loss() -> None:
    model = relu_lm()
    sae = mlp_as_transcoder(model)
    tokens = torch.randint(0, 300, (6, 12), generator=torch.Generator().manual_seed(3))
    where = (sae.cfg.hook, sae.cfg.hook_out)
    result = spliced_metrics(model, tokens, where, sae)
    assert result["ce_sae"] == pytest.approx(result["ce_clean"], abs=1e-5)
    assert result["kl"] == pytest.approx(0.0, abs=1e-6)
    assert result["loss_recovered"] == pytest.approx(1.0, abs=1e-4)
    assert result["ce_zero_ablation"] != pytest.approx(result["ce_clean"], abs=1e-3)
    with torch.no_grad():  # a wrong transcoder costs loss
        sae.W_dec.mul_(-1)
    assert spliced_metrics(model, tokens, where, sae)["kl"] > 1e-3


def test_transcoder_reading_a_later_point_is_refused() -> None:
    model = relu_lm()
    sae = mlp_as_transcoder(model)
    tokens = torch.randint(0, 300, (2, 12))
    message = r"blocks\.0:output did not run before blocks\.0\.mlp:output"
    with pytest.raises(ValueError, match=message):
        spliced_metrics(model, tokens, ("blocks.0:output", "blocks.0.mlp:output"), sae)


def test_sweep_names_and_configs() -> None:
    sweep = SweepConfig("topk", [2], {"k": [4, 8]}, skip_transcoder=True)
    configs = sweep.configs(16, IN, "m", d_out=12, hook_out=OUT)
    assert [(c.d_in, c.d_sae, c.d_out, c.skip, c.k) for c in configs] == [
        (16, 32, 12, True, 4),
        (16, 32, 12, True, 8),
    ]
    assert sae_name(create(configs[0])) == "topk-skip-transcoder-32-k4"


def test_widths_in_latents_replace_expansions() -> None:
    sweep = SweepConfig("topk", [2], {"k": 4}, d_sae=[40, 24])
    assert [c.d_sae for c in sweep.configs(16, IN, "m")] == [40, 24]
    with pytest.raises(ConfigError, match="d_sae"):
        SweepConfig("topk", d_sae=[0])
    from monosemantic.cli import build_parser

    args = build_parser().parse_args(["train", "--d-sae", "4096", "--data", "x.npy"])
    assert args.d_sae == [4096]
