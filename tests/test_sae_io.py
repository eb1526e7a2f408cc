"""Saving and loading SAEs in SAELens's layout: exact round trips, and SAELens reading our folders
and we reading its folders, with the same encode/decode outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from monosemantic.sae.base import SAE, LossContext
from monosemantic.sae.io import (
    CFG_FILE,
    SPARSITY_FILE,
    WEIGHTS_FILE,
    SAEFormatError,
    load_sae,
    load_sparsity,
    save_sae,
)
from monosemantic.sae.registry import ARCHITECTURES, architecture_fields, config, create
from monosemantic.training.objective import Batch, reconstruction

D_IN, D_SAE, K = 12, 40, 4
ALL = sorted(ARCHITECTURES)


D_OUT = 7
TRANSCODES = {"hook": "model.layers.1.mlp:input", "hook_out": "model.layers.1.mlp:output"}


def random_sae(
    architecture: str, seed: int = 0, *, transcoder: bool = False, skip: bool = False
) -> SAE:
    """An SAE of ``architecture`` with every parameter random, in eval mode; ``transcoder``:
    one from d_in to D_OUT (``skip``: with a skip connection)."""
    torch.manual_seed(seed)
    fields = architecture_fields(ARCHITECTURES[architecture])
    own = {"k": K} if "k" in fields else {"sparsity_coefficient": 0.25}
    where = (
        {**TRANSCODES, "d_out": D_OUT, "skip": skip}
        if transcoder
        else {"hook": TRANSCODES["hook_out"]}
    )
    cfg = config(
        architecture,
        d_in=D_IN,
        d_sae=D_SAE,
        **own,
        **where,
        model="tiny-model",
        metadata={"run": 7, "note": "x"},
    )
    sae = create(cfg)
    with torch.no_grad():
        for p in sae.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
        if architecture == "jumprelu":
            # θ < 1/e: log θ round-trips through float32 θ exactly (see JumpReLUSAE.export_state)
            sae.log_threshold.copy_(torch.empty(D_SAE).uniform_(-6.0, -1.05))
        if hasattr(sae, "threshold"):  # global (BatchTopK and kin) or per latent (Feature Choice)
            sae.threshold.copy_(torch.empty_like(sae.threshold).uniform_(0.1, 0.5))
    return sae.eval()


def inputs(seed: int = 1, n: int = 64) -> torch.Tensor:
    return torch.randn(n, D_IN, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def sae_lens():
    return pytest.importorskip("sae_lens")


@pytest.mark.parametrize("architecture", ALL)
def test_round_trip_is_exact(tmp_path: Path, architecture: str) -> None:
    sae = random_sae(architecture)
    sparsity = torch.linspace(-5, 0, D_SAE)
    assert save_sae(sae, tmp_path / "sae", sparsity=sparsity) == tmp_path / "sae"
    loaded = load_sae(tmp_path / "sae")
    assert type(loaded) is type(sae)
    assert not loaded.training
    assert loaded.cfg == sae.cfg
    original, restored = sae.state_dict(), loaded.state_dict()
    assert original.keys() == restored.keys()
    for name, tensor in original.items():
        assert torch.equal(restored[name], tensor), name
    assert torch.equal(load_sparsity(tmp_path / "sae"), sparsity)
    assert sorted(p.name for p in (tmp_path / "sae").iterdir()) == sorted(
        [CFG_FILE, WEIGHTS_FILE, SPARSITY_FILE]
    ), "temporary files must not be left behind"


def test_resave_without_sparsity_removes_stale_file(tmp_path: Path) -> None:
    sae = random_sae("topk")
    save_sae(sae, tmp_path, sparsity=torch.zeros(D_SAE))
    save_sae(sae, tmp_path)
    assert load_sparsity(tmp_path) is None


def test_sparsity_shape_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"shape \(40,\), got \(39,\)"):
        save_sae(random_sae("topk"), tmp_path, sparsity=torch.zeros(D_SAE - 1))


def test_cfg_json_is_saelens_layout(tmp_path: Path) -> None:
    sae = random_sae("batchtopk")
    sae.threshold.fill_(0.3)
    save_sae(sae, tmp_path)
    cfg = json.loads((tmp_path / CFG_FILE).read_text())
    assert cfg["architecture"] == "jumprelu"
    assert (cfg["d_in"], cfg["d_sae"], cfg["apply_b_dec_to_input"]) == (D_IN, D_SAE, True)
    assert cfg["metadata"]["hook_name"] == "model.layers.1.mlp:output"
    assert cfg["metadata"]["monosemantic"]["architecture"] == "batchtopk"
    weights = load_file(tmp_path / WEIGHTS_FILE)
    assert torch.equal(weights["threshold"], torch.full((D_SAE,), 0.3))


NOT_IN_SAELENS = {"groupmax"}
"""Architectures SAELens has no class for: their folders keep our name."""


@pytest.mark.parametrize("architecture", sorted(NOT_IN_SAELENS))
def test_saelens_has_no_class_for(tmp_path: Path, sae_lens, architecture: str) -> None:
    save_sae(random_sae(architecture), tmp_path)
    assert json.loads((tmp_path / CFG_FILE).read_text())["architecture"] == architecture
    with pytest.raises(KeyError):
        sae_lens.SAE.load_from_disk(tmp_path)


@pytest.mark.parametrize("architecture", sorted(set(ALL) - NOT_IN_SAELENS))
def test_saelens_loads_our_folder(tmp_path: Path, sae_lens, architecture: str) -> None:
    sae = random_sae(architecture)
    save_sae(sae, tmp_path)
    theirs = sae_lens.SAE.load_from_disk(tmp_path)
    x = inputs()
    with torch.no_grad():
        f = sae.encode(x)
        torch.testing.assert_close(theirs.encode(x), f, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(theirs.decode(f), sae.decode(f), atol=1e-6, rtol=1e-6)
    assert (f != 0).any() and (f == 0).any(), "the test inputs must exercise sparsity"


def _randomise(module: torch.nn.Module, seed: int) -> None:
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * 0.5)


@pytest.mark.parametrize("apply_b_dec", [True, False])
@pytest.mark.parametrize("architecture", ["standard", "topk", "jumprelu", "gated"])
def test_we_load_saelens_folder(tmp_path: Path, sae_lens, architecture: str, apply_b_dec) -> None:
    classes = {
        "standard": (sae_lens.StandardSAE, sae_lens.StandardSAEConfig, {}),
        # SAELens trains TopK scoring pre·‖W_dec,i‖; loading folds the norms into the weights
        "topk": (
            sae_lens.TopKSAE,
            sae_lens.TopKSAEConfig,
            {"k": K, "rescale_acts_by_decoder_norm": True},
        ),
        "jumprelu": (sae_lens.JumpReLUSAE, sae_lens.JumpReLUSAEConfig, {}),
        "gated": (sae_lens.GatedSAE, sae_lens.GatedSAEConfig, {}),
    }
    cls, cfg_cls, extra = classes[architecture]
    metadata = sae_lens.saes.sae.SAEMetadata(hook_name="blocks.1.hook_resid_pre", model_name="m")
    cfg = cfg_cls(
        d_in=D_IN, d_sae=D_SAE, apply_b_dec_to_input=apply_b_dec, metadata=metadata, **extra
    )
    theirs = cls(cfg)
    _randomise(theirs, seed=3)
    if architecture == "jumprelu":
        with torch.no_grad():  # a few θ ≤ 0, which SAELens treats as 0
            theirs.threshold.copy_(torch.rand(D_SAE) * 0.6 - 0.1)
    theirs.save_model(tmp_path)
    ours = load_sae(tmp_path)
    assert ours.cfg.architecture == architecture
    assert (ours.cfg.hook, ours.cfg.model, getattr(ours.cfg, "k", None)) == (
        "blocks.1.hook_resid_pre",
        "m",
        extra.get("k"),
    )
    x = inputs(seed=4)
    with torch.no_grad():
        f = theirs.encode(x)
        torch.testing.assert_close(ours.encode(x), f, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(ours.decode(f), theirs.decode(f), atol=1e-6, rtol=1e-6)
    assert (f != 0).any() and (f == 0).any()


def test_we_load_saelens_batchtopk_checkpoint(tmp_path: Path, sae_lens) -> None:
    cfg = sae_lens.BatchTopKTrainingSAEConfig(d_in=D_IN, d_sae=D_SAE, k=K)
    theirs = sae_lens.BatchTopKTrainingSAE(cfg)
    _randomise(theirs, seed=5)
    theirs.topk_threshold = torch.tensor(0.125, dtype=torch.double)
    theirs.save_model(tmp_path)
    ours = load_sae(tmp_path)
    assert ours.cfg.architecture == "batchtopk" and ours.cfg.k == K
    assert ours.threshold.item() == 0.125
    x = inputs(seed=6)
    ours.train()  # batch top-k, what SAELens's training SAE computes
    with torch.no_grad():
        f = theirs.encode(x)
        assert int((f != 0).sum()) == K * x.shape[0]
        torch.testing.assert_close(ours.encode(x), f, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(ours.decode(f), theirs.decode(f), atol=1e-6, rtol=1e-6)


def test_missing_folder_and_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no SAE folder"):
        load_sae(tmp_path / "nope")
    save_sae(random_sae("standard"), tmp_path)
    (tmp_path / WEIGHTS_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=r"sae_weights\.safetensors is missing"):
        load_sae(tmp_path)
    (tmp_path / CFG_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=r"cfg\.json is missing"):
        load_sae(tmp_path)


def test_corrupt_files(tmp_path: Path) -> None:
    save_sae(random_sae("standard"), tmp_path)
    (tmp_path / WEIGHTS_FILE).write_bytes(b"not a safetensors file at all")
    with pytest.raises(SAEFormatError, match="not a readable safetensors file"):
        load_sae(tmp_path)
    (tmp_path / CFG_FILE).write_text("{ broken")
    with pytest.raises(SAEFormatError, match=r"cfg\.json is not valid JSON"):
        load_sae(tmp_path)


def test_weights_that_do_not_match_cfg(tmp_path: Path) -> None:
    save_sae(random_sae("topk"), tmp_path)
    weights = load_file(tmp_path / WEIGHTS_FILE)
    weights["W_enc"] = torch.zeros(D_IN, D_SAE + 1)
    weights["extra"] = torch.zeros(1)
    del weights["b_enc"]
    save_file(weights, tmp_path / WEIGHTS_FILE)
    with pytest.raises(SAEFormatError) as err:
        load_sae(tmp_path)
    message = str(err.value)
    assert "d_in=12, d_sae=40" in message
    assert "W_enc has shape (12, 41), expected (12, 40)" in message
    assert "missing b_enc" in message and "unexpected extra" in message


def test_unknown_architecture(tmp_path: Path) -> None:
    save_sae(random_sae("standard"), tmp_path)
    cfg = json.loads((tmp_path / CFG_FILE).read_text())
    del cfg["metadata"]["monosemantic"]
    cfg["architecture"] = "temporal"
    (tmp_path / CFG_FILE).write_text(json.dumps(cfg))
    with pytest.raises(SAEFormatError, match="architecture 'temporal' cannot be loaded"):
        load_sae(tmp_path)
    cfg["metadata"]["monosemantic"] = {**random_sae("standard").cfg.to_dict(), "architecture": "x"}
    (tmp_path / CFG_FILE).write_text(json.dumps(cfg))
    with pytest.raises(SAEFormatError, match="not a valid SAE config: architecture='x' is invalid"):
        load_sae(tmp_path)


def test_unsupported_saelens_normalisation(tmp_path: Path) -> None:
    save_sae(random_sae("standard"), tmp_path)
    cfg = json.loads((tmp_path / CFG_FILE).read_text())
    del cfg["metadata"]["monosemantic"]
    cfg["normalize_activations"] = "constant_norm_rescale"
    (tmp_path / CFG_FILE).write_text(json.dumps(cfg))
    with pytest.raises(SAEFormatError, match="='constant_norm_rescale' is not supported"):
        load_sae(tmp_path)


def test_batchtopk_rejects_per_latent_thresholds(tmp_path: Path) -> None:
    save_sae(random_sae("batchtopk"), tmp_path)
    weights = load_file(tmp_path / WEIGHTS_FILE)
    weights["threshold"] = torch.linspace(0.1, 0.2, D_SAE)
    save_file(weights, tmp_path / WEIGHTS_FILE)
    with pytest.raises(ValueError, match="load them as architecture 'jumprelu'"):
        load_sae(tmp_path)


def test_we_load_saelens_matryoshka_checkpoint(tmp_path: Path, sae_lens) -> None:
    cfg = sae_lens.MatryoshkaBatchTopKTrainingSAEConfig(
        d_in=D_IN, d_sae=D_SAE, k=K, matryoshka_widths=[8, 24, D_SAE]
    )
    theirs = sae_lens.MatryoshkaBatchTopKTrainingSAE(cfg)
    _randomise(theirs, seed=7)
    theirs.topk_threshold = torch.tensor(0.25, dtype=torch.double)
    theirs.save_model(tmp_path)
    ours = load_sae(tmp_path)
    assert ours.cfg.architecture == "matryoshka" and ours.cfg.widths == [8, 24, D_SAE]
    assert ours.threshold.item() == 0.25
    x = inputs(seed=8)
    ours.train()
    with torch.no_grad():
        f = theirs.encode(x)
        torch.testing.assert_close(ours.encode(x), f, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(ours.decode(f), theirs.decode(f), atol=1e-6, rtol=1e-6)


def test_matryoshka_losses_equal_saelens_training_pass(tmp_path: Path, sae_lens) -> None:
    """The reference implementation: SAELens's training SAE on the same weights and batch gives
    our full and inner-prefix reconstruction losses."""
    cfg = sae_lens.MatryoshkaBatchTopKTrainingSAEConfig(
        d_in=D_IN, d_sae=D_SAE, k=K, matryoshka_widths=[8, 24, D_SAE]
    )
    theirs = sae_lens.MatryoshkaBatchTopKTrainingSAE(cfg)
    _randomise(theirs, seed=9)
    theirs.save_model(tmp_path)
    ours = load_sae(tmp_path).train()
    x = inputs(seed=10)
    step = sae_lens.saes.sae.TrainStepInput(
        sae_in=x, coefficients={}, dead_neuron_mask=None, n_training_steps=0, is_logging_step=False
    )
    reference = theirs.training_forward_pass(step)
    terms, _ = reconstruction(ours, Batch(x), LossContext())
    inner = reference.losses["inner_mse_loss_8"] + reference.losses["inner_mse_loss_24"]
    torch.testing.assert_close(terms["mse"], reference.losses["mse_loss"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(terms["prefix_mse"], inner, rtol=1e-5, atol=1e-6)


def test_jumprelu_tanh_and_pre_act_losses_equal_saelens(tmp_path: Path, sae_lens) -> None:
    """SAELens's JumpReLU training SAE (tanh mode, pre-activation loss) on the same weights: the
    same loss values and the same threshold gradient."""
    cfg = sae_lens.JumpReLUTrainingSAEConfig(
        d_in=D_IN,
        d_sae=D_SAE,
        jumprelu_sparsity_loss_mode="tanh",
        jumprelu_bandwidth=0.5,
        pre_act_loss_coefficient=3e-3,
    )
    theirs = sae_lens.JumpReLUTrainingSAE(cfg)
    _randomise(theirs, seed=11)
    with torch.no_grad():
        theirs.threshold.copy_(torch.empty(D_SAE).uniform_(0.05, 0.6))
    ours = create(
        config(
            "jumprelu",
            d_in=D_IN,
            d_sae=D_SAE,
            sparsity_coefficient=0.7,
            jumprelu_bandwidth=0.5,
            jumprelu_sparsity_loss="tanh",
            pre_act_loss_coefficient=3e-3,
        )
    ).train()
    with torch.no_grad():
        for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
            getattr(ours, name).copy_(getattr(theirs, name))
        ours.log_threshold.copy_(theirs.threshold.log())
    x = inputs(seed=12)
    dead = torch.zeros(D_SAE, dtype=torch.bool)
    dead[::3] = True
    step = sae_lens.saes.sae.TrainStepInput(
        sae_in=x,
        coefficients={"l0": 0.7},
        dead_neuron_mask=dead,
        n_training_steps=0,
        is_logging_step=False,
    )
    reference = theirs.training_forward_pass(step)
    terms, _ = reconstruction(ours, Batch(x), LossContext(dead=dead))
    torch.testing.assert_close(
        0.7 * terms["tanh"], reference.losses["l0_loss"], rtol=1e-5, atol=1e-7
    )
    torch.testing.assert_close(
        3e-3 * terms["pre_act"], reference.losses["pre_act_loss"], rtol=1e-5, atol=1e-9
    )
    reference.losses["l0_loss"].backward()
    (0.7 * terms["tanh"]).backward()
    theta = ours.threshold.detach()
    torch.testing.assert_close(
        ours.log_threshold.grad / theta, theirs.threshold.grad, rtol=1e-4, atol=1e-7
    )


# --- transcoders ---------------------------------------------------------------------------

TRANSCODING = sorted(set(ALL) - {"matching_pursuit"})
"""Every architecture but matching pursuit (it searches its decoder for the input itself)."""


@pytest.mark.parametrize("skip", [False, True])
@pytest.mark.parametrize("architecture", TRANSCODING)
def test_transcoder_round_trip_is_exact(tmp_path: Path, architecture: str, skip: bool) -> None:
    sae = random_sae(architecture, transcoder=True, skip=skip)
    save_sae(sae, tmp_path)
    loaded = load_sae(tmp_path)
    assert loaded.cfg == sae.cfg and loaded.cfg.d_out == D_OUT and loaded.cfg.skip == skip
    original, restored = sae.state_dict(), loaded.state_dict()
    assert original.keys() == restored.keys() and ("W_skip" in original) == skip
    for name, tensor in original.items():
        assert torch.equal(restored[name], tensor), name
    x = inputs()
    with torch.no_grad():
        assert loaded(x).shape == (len(x), D_OUT)
        assert torch.equal(loaded(x), sae(x))


SAELENS_TRANSCODER_CLASSES = {
    "transcoder": "Transcoder",
    "skip_transcoder": "SkipTranscoder",
    "jumprelu_transcoder": "JumpReLUTranscoder",
    "jumprelu_skip_transcoder": "JumpReLUSkipTranscoder",
}


@pytest.mark.parametrize("skip", [False, True])
@pytest.mark.parametrize("architecture", TRANSCODING)
def test_saelens_loads_our_transcoder(tmp_path: Path, sae_lens, architecture: str, skip) -> None:
    """SAELens has ReLU and JumpReLU transcoders: ours of those functions load as them with the
    same outputs; an architecture it has none for is refused by SAELens, by name."""
    sae = random_sae(architecture, transcoder=True, skip=skip)
    save_sae(sae, tmp_path)
    raw = json.loads((tmp_path / CFG_FILE).read_text())
    assert raw["apply_b_dec_to_input"] is False
    assert (raw["d_out"], raw["hook_name_out"]) == (D_OUT, TRANSCODES["hook_out"])
    if raw["architecture"] not in SAELENS_TRANSCODER_CLASSES:
        assert raw["architecture"].endswith("skip_transcoder" if skip else "_transcoder")
        with pytest.raises(KeyError):
            sae_lens.SAE.load_from_disk(tmp_path)
        return
    theirs = sae_lens.SAE.load_from_disk(tmp_path)
    assert type(theirs).__name__ == SAELENS_TRANSCODER_CLASSES[raw["architecture"]]
    x = inputs()
    with torch.no_grad():
        f = sae.encode(x)
        torch.testing.assert_close(theirs.encode(x), f, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(theirs(x), sae(x), atol=1e-6, rtol=1e-6)
    assert (f != 0).any() and (f == 0).any(), "the test inputs must exercise sparsity"


@pytest.mark.parametrize("name", sorted(SAELENS_TRANSCODER_CLASSES))
def test_we_load_saelens_transcoder(tmp_path: Path, sae_lens, name: str) -> None:
    cls = getattr(sae_lens.saes.transcoder, SAELENS_TRANSCODER_CLASSES[name])
    cfg_cls = getattr(sae_lens.saes.transcoder, SAELENS_TRANSCODER_CLASSES[name] + "Config")
    metadata = sae_lens.saes.sae.SAEMetadata(hook_name="blocks.1.ln2.hook_normalized")
    theirs = cls(
        cfg_cls(d_in=D_IN, d_sae=D_SAE, d_out=D_OUT, apply_b_dec_to_input=False, metadata=metadata)
    )
    _randomise(theirs, seed=8)
    if "jumprelu" in name:
        with torch.no_grad():
            theirs.threshold.copy_(torch.rand(D_SAE) * 0.6)
    theirs.save_model(tmp_path)
    ours = load_sae(tmp_path)
    assert ours.cfg.architecture == ("jumprelu" if "jumprelu" in name else "standard")
    assert (ours.cfg.d_out, ours.cfg.skip, ours.cfg.hook) == (
        D_OUT,
        "skip" in name,
        "blocks.1.ln2.hook_normalized",
    )
    assert ours.cfg.transcoder, "SAELens's save_model drops hook_name_out; it is still a transcoder"
    x = inputs(seed=9)
    with torch.no_grad():
        f = theirs.encode(x)
        torch.testing.assert_close(ours.encode(x), f, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(ours(x), theirs(x), atol=1e-6, rtol=1e-6)
    assert (f != 0).any() and (f == 0).any()


# --- standardised inputs (multi-layer SAEs) -------------------------------------------------


@pytest.mark.parametrize("architecture", ["topk", "batchtopk", "standard", "jumprelu"])
def test_standardising_sae_loads_in_saelens_as_layer_norm(tmp_path: Path, sae_lens, architecture):
    """Ours standardises each row and undoes it after decoding; SAELens's layer_norm does the
    same, so its forward pass on raw rows equals ours, and it loads back here unchanged."""
    sae = random_sae(architecture)
    sae.cfg.standardize = True
    save_sae(sae, tmp_path)
    assert json.loads((tmp_path / CFG_FILE).read_text())["normalize_activations"] == "layer_norm"
    x = inputs() * 7.0 + 3.0
    theirs = sae_lens.SAE.load_from_disk(tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(theirs(x), sae(x), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(theirs.encode(x), sae.encode(x), atol=1e-5, rtol=1e-5)
    loaded = load_sae(tmp_path)
    assert loaded.cfg.standardize
    cfg = json.loads((tmp_path / CFG_FILE).read_text())
    del cfg["metadata"]["monosemantic"]  # as if SAELens had written it
    (tmp_path / CFG_FILE).write_text(json.dumps(cfg))
    assert load_sae(tmp_path).cfg.standardize


def test_standardising_sae_is_invariant_to_scale_and_shift() -> None:
    """Codes of a·x + b (b the same in every dimension) equal those of x; x̂ follows a·x̂ + b;
    and folding an input scale changes nothing."""
    sae = random_sae("topk")
    sae.cfg.standardize = True
    x = inputs()
    with torch.no_grad():
        torch.testing.assert_close(sae.encode(3.0 * x + 2.0), sae.encode(x), atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(sae(3.0 * x + 2.0), 3.0 * sae(x) + 2.0, atol=1e-4, rtol=1e-4)
        before = sae(x)
        sae.fold_input_scale(5.0)
        assert torch.equal(sae(x), before)
