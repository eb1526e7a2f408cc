"""Property-based tests (hypothesis): hook-point parsing, the store serving every row exactly
once per pass, and save/load round trips for every architecture with random settings."""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from monosemantic.data.store import ShuffleBuffer, shuffled_indices
from monosemantic.hooks import HookPoint, HookPointError
from monosemantic.sae.io import load_sae, save_sae
from monosemantic.sae.registry import ARCHITECTURES, architecture_fields, config, create

names = st.from_regex(r"[a-z_][a-z0-9_]{0,6}(\.[a-z0-9_]{1,6}){0,4}", fullmatch=True)


@given(names, st.sampled_from(["input", "output"]))
def test_hook_points_round_trip(path: str, side: str) -> None:
    point = HookPoint.parse(f"{path}:{side}")
    assert (point.module, point.side) == (path, side)
    assert HookPoint.parse(str(point)) == point
    assert HookPoint.parse(path) == HookPoint(path, "output"), "a bare path is its output"


@given(names, st.text(min_size=1, max_size=8).filter(lambda s: s not in ("input", "output")))
def test_a_bad_side_is_refused(path: str, side: str) -> None:
    if ":" in side:
        return
    with pytest.raises(HookPointError, match="write MODULE_PATH:input or MODULE_PATH:output"):
        HookPoint.parse(f"{path}:{side}")


@given(st.integers(1, 300), st.integers(1, 64), st.integers(0, 2**31), st.integers(0, 20))
def test_every_row_once_per_pass(n: int, batch: int, seed: int, start: int) -> None:
    """The stream of batch indices is a sequence of permutations of range(n), whatever the
    batch size, and a stream started at step s is the full stream from batch s."""
    steps = -(-3 * n // batch)  # enough batches for three passes
    full = list(itertools.islice(shuffled_indices(n, batch, seed=seed), steps + start + 3))
    flat = torch.from_numpy(__import__("numpy").concatenate(full)).tolist()
    for p in range(3):
        assert sorted(flat[p * n : (p + 1) * n]) == list(range(n))
    later = list(itertools.islice(shuffled_indices(n, batch, seed=seed, start_step=start), 3))
    for a, b in zip(later, full[start : start + 3], strict=True):
        assert a.tolist() == b.tolist()


@given(
    st.lists(st.integers(1, 40), min_size=1, max_size=12),
    st.integers(1, 16),
    st.integers(0, 5),
    st.integers(0, 1000),
)
def test_the_shuffle_buffer_emits_each_row_once(
    sizes: list[int], batch: int, extra: int, seed: int
):
    rows = torch.arange(sum(sizes), dtype=torch.float32)[:, None]
    chunks = list(rows.split(sizes))
    out = torch.cat(list(ShuffleBuffer(chunks, 2 * batch + extra, batch, seed)))
    assert sorted(out.squeeze(-1).tolist()) == rows.squeeze(-1).tolist()


def own_settings(name: str, draw) -> dict:
    fields = architecture_fields(ARCHITECTURES[name])
    out = {}
    if "k" in fields:
        out["k"] = draw(st.sampled_from([1, 2, 4]))
    if "sparsity_coefficient" in fields:
        out["sparsity_coefficient"] = draw(st.floats(0, 2))
    if "levels" in fields:
        out["levels"] = draw(st.integers(1, 3))
    return out


@settings(max_examples=30, deadline=None)
@given(st.data())
def test_every_architecture_round_trips_with_random_settings(data) -> None:
    name = data.draw(st.sampled_from(sorted(ARCHITECTURES)))
    d_in = data.draw(st.integers(1, 6))
    d_sae = 4 * data.draw(st.integers(1, 4))
    dtype = data.draw(st.sampled_from(["float32", "float64", "bfloat16"]))
    cfg = config(name, d_in=d_in, d_sae=d_sae, dtype=dtype, **own_settings(name, data.draw))
    torch.manual_seed(data.draw(st.integers(0, 100)))
    sae = create(cfg)
    with torch.no_grad():
        for p in sae.parameters():
            p.copy_(torch.randn_like(p))
    with tempfile.TemporaryDirectory() as folder:
        save_sae(sae, Path(folder))
        back = load_sae(Path(folder))
    assert back.cfg == sae.cfg
    for key, tensor in sae.state_dict().items():
        restored = back.state_dict()[key]
        if key == "log_threshold":  # saved as θ (SAELens's layout): θ comes back to 2 ulps
            ulps = 2 * torch.finfo(tensor.dtype).eps
            torch.testing.assert_close(restored.exp(), tensor.exp(), rtol=ulps, atol=0)
        else:
            assert torch.equal(restored, tensor), key


@settings(max_examples=60)
@given(
    st.integers(1, 10**6),
    st.integers(1, 10**5),
    st.one_of(st.none(), st.floats(1e-6, 1.0)),
    st.sampled_from(["adam", "signum", "muon"]),
    st.floats(0.0, 1.0),
    st.integers(0, 2**31),
    st.booleans(),
)
def test_training_options_parse_to_the_config(steps, batch, lr, optimizer, decay, seed, norm):
    from monosemantic.cli import build_parser
    from monosemantic.config import from_arguments
    from monosemantic.training.trainer import TrainConfig

    argv = ["train", "--steps", str(steps), "--batch-size", str(batch), "--optimizer", optimizer,
            "--lr-decay-fraction", repr(decay), "--seed", str(seed),
            "--normalize-inputs" if norm else "--no-normalize-inputs"]  # fmt: skip
    if lr is not None:
        argv += ["--lr", repr(lr)]
    parsed = from_arguments(TrainConfig, build_parser().parse_args(argv))
    expected = TrainConfig(steps=steps, batch_size=batch, lr=lr, optimizer=optimizer,
                           lr_decay_fraction=decay, seed=seed, normalize_inputs=norm)  # fmt: skip
    assert parsed == expected


@settings(max_examples=60)
@given(st.data())
def test_sae_configs_round_trip_through_their_dicts(data) -> None:
    from monosemantic.sae.registry import config_from_dict

    name = data.draw(st.sampled_from(sorted(ARCHITECTURES)))
    cfg = config(name, d_in=data.draw(st.integers(1, 64)), d_sae=64,
                 hook=data.draw(names) + ":output", **own_settings(name, data.draw))  # fmt: skip
    assert config_from_dict(json_round_trip(cfg.to_dict())) == cfg


def json_round_trip(value):
    import json

    return json.loads(json.dumps(value))
