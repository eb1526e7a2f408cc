"""Ablation and steering with a latent, against their definitions on a tiny transformer."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
from tiny_lm import sharp_lm

from monosemantic.hooks import capture
from monosemantic.interpret.causal import ablated_logits, steer, steered_logits
from monosemantic.sae.registry import config, create

D, VOCAB, CTX = 16, 300, 12


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return sharp_lm(d_model=D, vocab_size=VOCAB, context_size=CTX)


def tokens(n: int = 4) -> torch.Tensor:
    return torch.randint(0, VOCAB, (n, CTX), generator=torch.Generator().manual_seed(1))


def sae(architecture: str = "topk", **fields):
    torch.manual_seed(2)
    own = {"k": 4} if architecture == "topk" else {}
    return create(config(architecture, d_in=D, d_sae=32, hook="blocks.0:output", **own, **fields))


@pytest.mark.parametrize("standardize", [False, True])
def test_ablating_a_latent_equals_zeroing_its_decoder_row(model, standardize) -> None:
    s = sae(standardize=standardize).eval()
    ids = tokens()
    with torch.no_grad():
        fired = s.encode(torch.randn(64, D) * 3).ne(0).sum(0)
    latent = int(fired.argmax())
    zeroed = copy.deepcopy(s)
    with torch.no_grad():
        zeroed.W_dec[latent] = 0
    ablated = ablated_logits(model, ids, s, [latent])
    torch.testing.assert_close(ablated, ablated_logits(model, ids, zeroed), atol=1e-4, rtol=1e-4)
    assert not torch.allclose(ablated, ablated_logits(model, ids, s), atol=1e-3)


def test_ablating_a_transcoders_latent(model) -> None:
    s = sae("standard", hook_out="blocks.0.mlp:output")
    s.cfg.hook = "blocks.0.mlp:input"
    zeroed = copy.deepcopy(s)
    with torch.no_grad():
        zeroed.W_dec[3] = 0
    ids = tokens()
    torch.testing.assert_close(
        ablated_logits(model, ids, s, [3]), ablated_logits(model, ids, zeroed)
    )


def test_steering_raises_the_target_token_monotonically(model) -> None:
    """The latent's logit effect through the final norm and unembedding picks a token; adding
    more of the latent's direction makes that token more likely at every α step."""
    s = sae()
    latent = 5
    direction = s.W_dec[latent].detach() / s.W_dec[latent].detach().norm()
    target = int((model.unembed.weight @ (model.norm.weight * direction)).argmax())
    ids = tokens()
    with torch.no_grad(), capture(model, ["blocks.0:output"]) as acts:
        model(ids)
    norm = acts["blocks.0:output"].norm(dim=-1).mean().item()  # α in units of the stream's norm
    probabilities = [
        steered_logits(model, ids, s, latent, alpha * norm).softmax(-1)[..., target].mean().item()
        for alpha in (0.0, 0.1, 0.3, 1.0, 3.0, 10.0)
    ]
    assert all(a < b for a, b in itertools.pairwise(probabilities)), probabilities
    assert probabilities[-1] > 0.5
    generated = steer(model, ids[0, :4], s, latent, 30 * norm, max_new_tokens=5)
    assert generated[:4].tolist() == ids[0, :4].tolist()
    assert generated[4:].tolist() == [target] * 5


def test_a_latent_that_does_not_exist_is_refused(model) -> None:
    with pytest.raises(ValueError, match=r"latent 32 does not exist: this SAE has latents 0\.\.31"):
        ablated_logits(model, tokens(), sae(), [32])


def test_steer_and_ablate_from_the_command_line(tiny_lm_folder, tiny_text, tmp_path, capsys):
    """Both commands run on a trained SAE folder and report what the docs say."""
    import json

    from cli_args import FAST, text_args

    from monosemantic.cli import main

    out = tmp_path / "run"
    assert main(["train", *text_args(tiny_lm_folder, tiny_text), *FAST, "--out", str(out)]) == 0
    folder = next((out / "saes").iterdir())
    capsys.readouterr()
    steering = ["steer", str(folder), "--latent", "3", "--alpha", "0", "50"]
    assert main([*steering, "--prompt", "the", "--max-new-tokens", "4"]) == 0
    effects, *lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert effects["latent"] == 3 and len(effects["logit_effects"]["raises"]) == 8
    assert [line["alpha"] for line in lines] == [0.0, 50.0]
    assert all(isinstance(line["continuation"], str) for line in lines)
    text = text_args(tiny_lm_folder, tiny_text)
    at = text.index("--hook")
    text = text[:at] + text[at + 2 :]
    assert main(["ablate", str(folder), "--latent", "3", "5", "--top", "3", *text]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["latents"] == [3, 5] and len(report["most_decreased"]) == 3
    assert report["ce_ablated"] > 0 and report["ce_spliced"] > 0
    assert main(["ablate", str(folder), "--latent", "999", *text]) == 2
    assert "latent 999 does not exist" in capsys.readouterr().err


def test_logit_effects_follow_the_final_norm_and_unembedding(model) -> None:
    """Brute force on both model kinds: W_U (g ⊙ d) with the final RMSNorm's gain (every norm's
    gain made distinct, so the final one must be the one found)."""
    from conftest import make_tiny_llama

    from monosemantic.interpret.logit_effects import logit_effects, output_path

    tiny_llama = make_tiny_llama().eval()
    with torch.no_grad():
        for name, p in tiny_llama.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 2.0)

    s = sae()
    found = logit_effects(model, s, top=3, bins=7, chunk=5)  # chunks of 5 latents
    effects = (s.W_dec.detach() * model.norm.weight) @ model.unembed.weight.T
    torch.testing.assert_close(found.raise_values, effects.topk(3).values)
    torch.testing.assert_close(found.lower_values, effects.topk(3, largest=False).values)
    assert torch.equal(found.raise_ids, effects.topk(3).indices)
    assert torch.equal(found.lower_ids, effects.topk(3, largest=False).indices)
    for latent in range(s.d_sae):
        low, high = effects[latent].min().item(), effects[latent].max().item()
        expected = torch.histc(effects[latent], bins=7, min=low, max=high).long()
        assert found.hist_counts[latent].tolist() == expected.tolist()
        assert found.hist_edges[latent, [0, -1]].tolist() == pytest.approx([low, high])
    path = output_path(tiny_llama)
    assert torch.equal(path.gain, tiny_llama.model.norm.weight)
    assert torch.equal(path.unembed, tiny_llama.lm_head.weight) and not path.centres
    neurons = create(config("topk", d_in=model.cfg.hidden, d_sae=16, k=2,
                            hook="blocks.0.mlp.down:input"))  # fmt: skip
    through = (neurons.W_dec.detach() @ model.blocks[0].mlp.down.weight.T) * model.norm.weight
    found = logit_effects(model, neurons, top=3)
    expected = (through @ model.unembed.weight.T).topk(3).values
    torch.testing.assert_close(found.raise_values, expected)
    with pytest.raises(ValueError, match="logit effects need an SAE on the residual stream"):
        logit_effects(model, create(config("topk", d_in=8, d_sae=16, k=2)))
