import torch

from monosemantic.hooks import capture
from monosemantic.interpret.top_activations import render_contexts, top_activations
from monosemantic.sae.registry import config, create

HOOK = "model.layers.0.mlp:output"


def test_top_activations_equal_brute_force(tiny_llama):
    torch.manual_seed(0)
    sae = create(config("standard", d_in=32, d_sae=48)).eval()
    tokens = torch.randint(3, 100, (7, 9), generator=torch.Generator().manual_seed(1))
    exclude = torch.zeros_like(tokens, dtype=torch.bool)
    exclude[:, 0] = True
    top = top_activations(tiny_llama, sae, tokens, HOOK, top_n=5, batch_size=3, exclude=exclude)
    with torch.no_grad(), capture(tiny_llama, HOOK) as acts:
        tiny_llama(input_ids=tokens)
        codes = sae.encode(acts[HOOK]).masked_fill(exclude[..., None], 0.0)  # [7, 9, 48]
    flat = codes.reshape(-1, 48).T  # [48, 63]
    for feature in range(48):
        order = flat[feature].argsort(descending=True)
        expected = [
            (float(flat[feature, i]), int(i) // 9, int(i) % 9)
            for i in order[:5]
            if flat[feature, i] > 0
        ]
        got = top.examples(feature)
        assert [(w, p) for _, w, p in got] == [(w, p) for _, w, p in expected]
        torch.testing.assert_close(
            torch.tensor([v for v, _, _ in got]), torch.tensor([v for v, _, _ in expected])
        )
        assert all(p != 0 for _, _, p in got)  # excluded positions never appear


def test_render_contexts_escapes_and_marks():
    class Tok:
        def decode(self, ids):
            return "".join(f"<{i}>" for i in ids)

    from monosemantic.interpret.top_activations import TopActivations

    top = TopActivations(torch.tensor([[2.5]]), torch.tensor([[1 * 4 + 2]]), context_size=4)
    html = render_contexts(top, 0, torch.arange(8).reshape(2, 4), Tok(), left=1, right=1)
    assert "&lt;5&gt;<mark>&lt;6&gt;</mark>&lt;7&gt;" in html and "2.5" in html
