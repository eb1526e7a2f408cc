import pytest
import torch

from monosemantic.hooks import HookPoint, HookPointError, capture, patch, run_until


@pytest.fixture
def ids():
    return torch.randint(3, 100, (2, 10), generator=torch.Generator().manual_seed(0))


def test_parse_and_bad_spec():
    assert HookPoint.parse("model.layers.0:input") == HookPoint("model.layers.0", "input")
    assert HookPoint.parse("model.norm") == HookPoint("model.norm", "output")
    with pytest.raises(HookPointError, match="MODULE_PATH:input or MODULE_PATH:output"):
        HookPoint.parse("model.layers.0:inside")


def test_capture_equals_output_hidden_states(tiny_llama, ids):
    points = ["model.layers.0:output", "model.layers.1:input", "model.embed_tokens:output"]
    with capture(tiny_llama, points) as acts:
        out = tiny_llama(input_ids=ids, output_hidden_states=True)
    hidden = out.hidden_states
    assert torch.equal(acts["model.embed_tokens:output"], hidden[0])
    assert torch.equal(acts["model.layers.0:output"], hidden[1])
    assert torch.equal(acts["model.layers.1:input"], hidden[1])


def _hook_count(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_hooks_are_removed(tiny_llama, ids):
    before = _hook_count(tiny_llama)
    with capture(tiny_llama, "model.layers.0:output"):
        assert _hook_count(tiny_llama) == before + 1
    assert _hook_count(tiny_llama) == before
    with pytest.raises(RuntimeError), patch(tiny_llama, "model.layers.0:output", lambda t: t):
        raise RuntimeError("boom")
    assert _hook_count(tiny_llama) == before


@pytest.mark.parametrize(
    "point",
    ["model.layers.0.mlp:output", "model.layers.1.mlp.down_proj:input", "model.layers.1:output"],
)
def test_identity_patch_leaves_logits_bitwise_unchanged(tiny_llama, ids, point):
    clean = tiny_llama(input_ids=ids).logits
    with patch(tiny_llama, point, lambda t: t.clone()):
        patched = tiny_llama(input_ids=ids).logits
    assert torch.equal(clean, patched)


def test_patch_changes_downstream(tiny_llama, ids):
    clean = tiny_llama(input_ids=ids).logits
    with patch(tiny_llama, "model.layers.1.mlp.down_proj:input", torch.zeros_like):
        zeroed = tiny_llama(input_ids=ids).logits
    with capture(tiny_llama, "model.layers.1.mlp:output") as acts:
        tiny_llama(input_ids=ids)
    # zeroing the MLP's last input removes exactly the MLP's contribution to the residual
    with patch(
        tiny_llama, "model.layers.1.mlp:output", lambda t: t - acts["model.layers.1.mlp:output"]
    ):
        manual = tiny_llama(input_ids=ids).logits
    assert not torch.allclose(clean, zeroed)
    torch.testing.assert_close(zeroed, manual)


def test_patch_rejects_shape_change(tiny_llama, ids):
    with (
        pytest.raises(ValueError, match="expected"),
        patch(tiny_llama, "model.layers.0:output", lambda t: t[..., :3]),
    ):
        tiny_llama(input_ids=ids)


def test_unknown_hook_lists_nearest_names(tiny_llama):
    with pytest.raises(HookPointError, match=r"nearest module names: .*model\.layers\.0\.mlp"):
        HookPoint.parse("model.layer.0.mlp:output").resolve(tiny_llama)


def test_run_until_stops_after_deepest_point(tiny_llama, ids):
    calls = []
    handle = tiny_llama.model.layers[1].register_forward_hook(lambda *a: calls.append(1))
    try:
        acts = run_until(tiny_llama, ["model.layers.0.mlp:output"], input_ids=ids)
        assert not calls  # layer 1 never ran
        with capture(tiny_llama, "model.layers.0.mlp:output") as full:
            tiny_llama(input_ids=ids)
        assert torch.equal(acts["model.layers.0.mlp:output"], full["model.layers.0.mlp:output"])
    finally:
        handle.remove()
