"""An architecture defined entirely here, without touching the package: its config fields, sweep
axis and SAELens mapping are its own, and the sweep, the command line, save/load and evaluation
take it from the registry (docs/guide.md, "Adding an architecture", points here)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pytest
import torch

from monosemantic.cli import main
from monosemantic.config import ConfigError, check
from monosemantic.data.sources import DataConfig
from monosemantic.evaluation.evaluate import evaluate_folder
from monosemantic.sae.base import SAE, LossContext, Penalties, SAEConfig, SAEOutput
from monosemantic.sae.io import load_sae
from monosemantic.sae.registry import ARCHITECTURES, register
from monosemantic.training.sweep import SweepConfig, train_sweep
from monosemantic.training.trainer import TrainConfig

# --- the architecture: soft-thresholded ReLU codes with an L1 penalty ---------------------------


@dataclass(kw_only=True)
class ShrinkConfig(SAEConfig):
    architecture: ClassVar[str] = "shrink"
    shrink: float = 0.0
    """Soft threshold subtracted from every pre-activation."""
    l1_coefficient: float = 1e-3
    """Weight of the L1 penalty on the codes."""

    def validate(self) -> None:
        check(self.shrink >= 0, "shrink", self.shrink, ">= 0")


class ShrinkSAE(SAE):
    """f = ReLU(pre − shrink). SAELens's "standard" computes ReLU(pre), so the folder stores
    b_enc − shrink as its b_enc: SAELens then computes the same function."""

    config_class = ShrinkConfig
    cfg: ShrinkConfig
    sweep_axes = {"shrink": "s"}
    unit_norm_decoder = True
    saelens_architecture = "standard"

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        return (pre - self.cfg.shrink).relu()

    def penalties(self, out: SAEOutput, target: torch.Tensor, ctx: LossContext) -> Penalties:
        l1 = out.codes.dense().sum(-1).mean()
        return {"l1": (ctx.sparsity_scale * self.cfg.l1_coefficient, l1)}

    def export_state(self) -> dict[str, torch.Tensor]:
        state = super().export_state()
        state["b_enc"] = state["b_enc"] - self.cfg.shrink
        return state

    def import_state(self, state: dict[str, torch.Tensor]) -> None:
        super().import_state({**state, "b_enc": state["b_enc"] + self.cfg.shrink})

    @classmethod
    def saelens_fields(cls, cfg: SAEConfig) -> dict[str, Any]:
        return {"l1_coefficient": getattr(cfg, "l1_coefficient", 0.0)}


@pytest.fixture
def shrink_registered():
    register(ShrinkSAE)
    yield
    del ARCHITECTURES["shrink"]


@pytest.fixture
def matrix(tmp_path):
    """4000 sparse combinations of 24 unit atoms in 8 dimensions, as a .npy file."""
    g = torch.Generator().manual_seed(0)
    atoms = torch.nn.functional.normalize(torch.randn(24, 8, generator=g), dim=1)
    codes = torch.rand(4000, 24, generator=g) * (torch.rand(4000, 24, generator=g) < 0.1)
    path = tmp_path / "rows.npy"
    np.save(path, (codes @ atoms).numpy())
    return path


TRAIN = TrainConfig(steps=60, batch_size=128, lr=3e-3, progress=False, log_every=10)


def test_sweep_save_load_and_evaluate(shrink_registered, matrix, tmp_path):
    sweep = SweepConfig("shrink", expansion=[2], settings={"shrink": [0.0, 0.2]})
    summaries = train_sweep(DataConfig(data=str(matrix)), sweep, TRAIN, tmp_path / "run")
    assert [s["name"] for s in summaries] == ["shrink-16-s0", "shrink-16-s0.2"]
    x = torch.from_numpy(np.load(matrix))[:256]
    for summary, shrink in zip(summaries, (0.0, 0.2), strict=True):
        sae = load_sae(summary["folder"])
        assert isinstance(sae, ShrinkSAE) and sae.cfg.shrink == shrink
        assert summary["train"]["l1"] > 0, "the architecture's penalty reached the loss"
        with torch.no_grad():
            pre = sae.pre_acts(x)
            torch.testing.assert_close(sae.encode(x), (pre - shrink).relu())
        metrics = evaluate_folder(summary["folder"], DataConfig(data=str(matrix)))
        assert metrics["fvu"] == pytest.approx(summary["eval"]["fvu"], rel=1e-6)
        assert metrics["fvu"] < 0.5
    l0 = [s["eval"]["l0"] for s in summaries]
    assert l0[1] < l0[0], "a larger soft threshold fires fewer latents"


def test_the_command_line_offers_its_fields(shrink_registered, matrix, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--data", str(matrix), "--architecture", "shrink", "--shrink", "0.1"]
    fast = ["--steps", "20", "--batch-size", "64", "--expansion", "2", "--no-progress"]
    assert main([*args, "--l1-coefficient", "0.01", *fast, "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["sweep"]["settings"] == {"shrink": [0.1], "l1_coefficient": 0.01}
    sae = load_sae(out / "saes" / "shrink-16-s0.1")
    assert (sae.cfg.shrink, sae.cfg.l1_coefficient) == (0.1, 0.01)
    # an option of another architecture is refused, naming whose it is
    assert main([*args, "--k", "4", *fast, "--out", str(out)]) == 2
    assert (
        "k does not apply to architecture shrink (it belongs to batchtopk, feature_choice, "
        "groupmax, matching_pursuit, matryoshka, mutual_choice, topk)" in (capsys.readouterr().err)
    )


def test_saelens_reads_it_as_the_same_function(shrink_registered, tmp_path):
    sae_lens = pytest.importorskip("sae_lens")
    torch.manual_seed(0)
    sae = ShrinkSAE(ShrinkConfig(d_in=8, d_sae=32, shrink=0.3)).eval()
    with torch.no_grad():
        for p in sae.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
    from monosemantic.sae.io import save_sae

    save_sae(sae, tmp_path)
    theirs = sae_lens.SAE.load_from_disk(tmp_path)
    x = torch.randn(64, 8)
    with torch.no_grad():
        f = sae.encode(x)
        torch.testing.assert_close(theirs.encode(x), f, atol=1e-6, rtol=1e-6)
    assert (f != 0).any() and (f == 0).any()


def test_its_config_is_validated(shrink_registered):
    with pytest.raises(ConfigError, match=r"shrink=-1.0 is invalid: expected >= 0"):
        ShrinkConfig(d_in=8, d_sae=16, shrink=-1.0)
    with pytest.raises(ValueError, match="registered already"):

        class Impostor(ShrinkSAE):
            pass

        register(Impostor)
