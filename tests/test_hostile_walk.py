"""Every command, given bad arguments and hostile files, fails with one line on stderr and a
non-zero exit: never a traceback (issue 13: every user-facing failure is one line)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from monosemantic.cli import build_parser, main


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hostile")
    garbage = root / "garbage.bin"
    garbage.write_bytes(b"\x93NUMPY garbage \x00\xff" * 20)
    fake_npy = root / "fake.npy"
    fake_npy.write_bytes(garbage.read_bytes())
    folder = root / "folder"
    folder.mkdir()
    for name in ("cfg.json", "sae_weights.safetensors", "model.safetensors", "config.json",
                 "manifest.json", "ae.pt", "sae.safetensors"):  # fmt: skip
        (folder / name).write_bytes(b"{ not json \xff")
    nan = root / "nan.npy"
    np.save(nan, np.full((50, 4), np.nan, dtype=np.float32))
    script = root / "evil.json"
    script.write_text(json.dumps({"format": "<script>alert(1)</script>", "shards": "x"}))
    return {"garbage": garbage, "fake_npy": fake_npy, "folder": folder, "nan": nan,
            "missing": root / "missing", "root": root}  # fmt: skip


def lines(h: dict[str, Path]) -> list[list[str]]:
    out = str(h["root"] / "out")
    return [
        ["train", "--data", str(h["fake_npy"]), "--out", out],
        ["train", "--data", str(h["nan"]), "--out", out],
        ["train", "--data", str(h["folder"]), "--out", out],
        ["train", "--data", str(h["missing"]) + ".npy", "--out", out],
        ["train", "--data", str(h["nan"]), "--out", out, "--steps", "-3"],
        ["train", "--data", str(h["nan"]), "--out", out, "--architecture", "topk", "--k", "0"],
        ["train", "--data", str(h["nan"]), "--out", out, "--hook", "no:where"],
        ["train", "--out", out, "--resume"],
        ["cache", "--data", str(h["folder"]), "--out", out, "--model", str(h["missing"])],
        ["cache", "--model", str(h["garbage"]), "--out", out],
        ["eval", str(h["folder"])],
        ["eval", str(h["missing"])],
        ["eval", str(h["folder"] / "ae.pt")],
        ["mdl", str(h["folder"]), "--tolerance", "0.3"],
        ["mdl", str(h["missing"]), "--tolerance", "0.3"],
        ["mdl-mnist", "--widths", "-4", "--out", out],
        ["info", str(h["folder"])],
        ["info", str(h["folder"] / "ae.pt")],
        ["info", str(h["missing"])],
        ["bilinear", "decompose", str(h["folder"]), "--out", out],
        ["bilinear", "decompose", str(h["missing"]), "--out", out],
        ["bilinear", "lm-features", str(h["folder"]), "--out", out],
        ["bilinear", "convert", str(h["folder"]), "--out", out],
        ["bilinear", "convert", str(h["missing"]), "--out", out, "--layers", "-1"],
        ["zoo", "train", "mnist", "--epochs", "-1", "--out", out],
        ["zoo", "train", "lm", "--steps", "-1", "--out", out],
        ["demo", "--out", str(h["garbage"])],
        ["steer", str(h["folder"]), "--latent", "0", "--prompt", "x"],
        ["steer", str(h["missing"]), "--latent", "-1", "--prompt", "x"],
        ["ablate", str(h["folder"]), "--latent", "0"],
        ["browse", str(h["folder"]), "--out", out],
        ["browse", str(h["missing"]), "--top", "0"],
        ["serve", str(h["missing"])],
        ["serve", str(h["folder"]), "--port", "-5"],
        ["train", "--data", str(h["nan"]), "--out", out, "--objective", "e2e"],
        ["train", "--data", str(h["nan"]), "--out", out, "--hook-out", "a:output", "b:output"],
    ]


def test_the_walk_covers_every_command() -> None:
    parser = build_parser()
    commands = set(parser._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    walked = {
        line[0]
        for line in lines(
            {k: Path("/x") for k in ("garbage", "fake_npy", "folder", "nan", "missing", "root")}
        )
    }
    assert commands == walked


@pytest.mark.parametrize("index", range(30))
def test_every_command_fails_in_one_line(hostile, index, capsys) -> None:
    argv = lines(hostile)[index]
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own usage errors: one usage line and exit 2
        code = exit_.code
    err = capsys.readouterr().err
    assert code not in (0, None), argv
    assert "Traceback" not in err and "weights_only=False" not in err, err
    assert "error:" in err, err
    assert len([line for line in err.splitlines() if "error:" in line]) == 1, err
