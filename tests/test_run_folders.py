"""Run folders: a rerun never mixes with or destroys another run, a resume checks that the
checkpoint is this run's, and metrics hold each step once (issue 13, defects 1 and 2)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from interrupted import interrupted_and_resumed

from monosemantic.cli import main
from monosemantic.data.store import MatrixSource
from monosemantic.sae.registry import config, create
from monosemantic.training.trainer import TrainConfig, Trainer

FAST = ["--steps", "20", "--batch-size", "64", "--expansion", "2", "--no-progress"]


@pytest.fixture
def matrix(tmp_path: Path) -> Path:
    rows = torch.randn(3000, 8, generator=torch.Generator().manual_seed(0)).numpy()
    np.save(tmp_path / "rows.npy", rows)
    return tmp_path / "rows.npy"


def train_cli(matrix: Path, out: Path, *extra: str) -> int:
    return main(["train", "--data", str(matrix), "--out", str(out), *FAST, *extra])


def test_a_rerun_into_a_run_folder_is_refused_and_changes_nothing(matrix, tmp_path, capsys):
    out = tmp_path / "run"
    assert train_cli(matrix, out, "--k", "4") == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert train_cli(matrix, out, "--k", "8") == 2
    assert "already holds a run" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_overwrite_replaces_the_whole_run(matrix, tmp_path):
    out = tmp_path / "run"
    assert train_cli(matrix, out, "--k", "4") == 0
    assert train_cli(matrix, out, "--k", "2", "--overwrite") == 0
    assert sorted(p.name for p in (out / "saes").iterdir()) == ["topk-16-k2"], "no stale SAEs"
    summary = json.loads((out / "summary.json").read_text())
    assert [s["folder"] for s in summary["saes"]] == [str(out / "saes" / "topk-16-k2")]
    assert json.loads((out / "config.json").read_text())["sweep"]["settings"] == {"k": [2]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.npy", "run"], "no leftovers"


def test_a_failed_overwrite_leaves_the_old_run(matrix, tmp_path, capsys):
    out = tmp_path / "run"
    assert train_cli(matrix, out, "--k", "4") == 0
    before = (out / "config.json").read_bytes()
    # a learning rate this large makes the loss overflow part-way, after the new run has started
    assert train_cli(matrix, out, "--k", "2", "--overwrite", "--lr", "1e30") == 2
    assert "loss became" in capsys.readouterr().err
    assert (out / "config.json").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.npy", "run"]


def test_resume_refuses_other_settings_naming_them(matrix, tmp_path, capsys):
    out = tmp_path / "run"
    assert train_cli(matrix, out, "--k", "4", "--checkpoint-every", "10") == 0
    assert train_cli(matrix, out, "--k", "8", "--resume") == 2
    err = capsys.readouterr().err
    assert "holds a run with other settings" in err and "sweep.settings" in err and "[8]" in err


@pytest.mark.parametrize(
    ("other", "named"),
    [
        ({"architecture": "standard"}, "architecture: 'topk' there, 'standard' here"),
        ({"d_sae": 64}, "d_sae: 32 there, 64 here"),
        ({"k": 8}, "k: 4 there, 8 here"),
    ],
)
def test_a_checkpoint_of_another_sae_is_refused(tmp_path, other, named):
    source = MatrixSource(torch.randn(1024, 8, generator=torch.Generator().manual_seed(0)))
    cfg = TrainConfig(steps=5, batch_size=64, progress=False)
    trainer = Trainer([create(config("topk", d_in=8, d_sae=32, k=4))], cfg, tmp_path)
    trainer.fit(source.batches(64, seed=0))
    fields = {"architecture": "topk", "d_in": 8, "d_sae": 32, "k": 4, **other}
    if fields["architecture"] == "standard":
        del fields["k"]
    wrong = Trainer([create(config(fields.pop("architecture"), **fields))], cfg, tmp_path)
    with pytest.raises(ValueError, match="the checkpoint's SAE 0 is not this run's") as err:
        wrong.load_checkpoint()
    assert named in str(err.value)


def test_a_resumed_run_logs_each_step_once(tmp_path):
    source = MatrixSource(torch.randn(2048, 8, generator=torch.Generator().manual_seed(0)))

    def make():
        torch.manual_seed(0)
        return [create(config("topk", d_in=8, d_sae=32, k=4))]

    cfg = TrainConfig(steps=30, batch_size=64, progress=False, checkpoint_every=10, log_every=2)
    interrupted_and_resumed(
        make, lambda s: source.batches(64, seed=0, start_step=s), cfg, tmp_path, stop_at=15
    )
    steps = [json.loads(line)["step"] for line in (tmp_path / "resumed" / "metrics.jsonl").open()]
    assert steps == list(range(2, 31, 2)), "steps 12 and 14 ran twice but are logged once"
    full = [json.loads(line)["step"] for line in (tmp_path / "full" / "metrics.jsonl").open()]
    assert full == steps


def test_resume_refuses_data_that_changed_under_the_same_name(matrix, tmp_path, capsys):
    out = tmp_path / "run"
    assert train_cli(matrix, out, "--k", "4", "--checkpoint-every", "10") == 0
    np.save(matrix, np.load(matrix) * 2)  # other rows, same path
    assert train_cli(matrix, out, "--k", "4", "--resume") == 2
    assert "data_identity.sha256" in capsys.readouterr().err


def test_a_run_from_before_a_setting_existed_resumes_as_if_it_held_its_default(
    matrix, tmp_path, capsys
):
    """config.json of an older version lacks later settings (launch, train.autocast): resuming
    takes them at their defaults, and a non-default value now is refused."""
    out = tmp_path / "run"
    assert train_cli(matrix, out, "--k", "4", "--checkpoint-every", "10") == 0
    record = json.loads((out / "config.json").read_text())
    del record["launch"], record["train"]["autocast"]
    (out / "config.json").write_text(json.dumps(record))
    assert train_cli(matrix, out, "--k", "4", "--checkpoint-every", "10", "--resume") == 0
    (out / "config.json").write_text(json.dumps(record))
    resumed = ["--k", "4", "--checkpoint-every", "10", "--resume", "--autocast", "bfloat16"]
    assert train_cli(matrix, out, *resumed) == 2
    assert "train.autocast: None then, 'bfloat16' now" in capsys.readouterr().err
