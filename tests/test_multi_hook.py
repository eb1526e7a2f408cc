"""One run, one model pass per step, SAEs at two hook points of different widths."""

from __future__ import annotations

import torch

from monosemantic.data.harvest import LiveActivations
from monosemantic.data.sources import DataConfig, load_text
from monosemantic.sae.io import load_sae
from monosemantic.training.sweep import SweepConfig, train_sweep
from monosemantic.training.trainer import TrainConfig

MLP_IN = "model.layers.0.mlp.down_proj:input"  # width 64 (intermediate)
MLP_OUT = "model.layers.0.mlp:output"  # width 32 (hidden)


def data_config(folder, text, hooks):
    return DataConfig(
        model=str(folder),
        hook=hooks,
        data=str(text),
        context_size=16,
        max_tokens=4096,
        spliced_windows=4,
        buffer_rows=2048,
    )


def subject(tiny_llama, tiny_lm_folder, tiny_text, hooks):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_lm_folder)
    cfg = data_config(tiny_lm_folder, tiny_text, hooks)
    return cfg, load_text(cfg, tiny_llama, tokenizer)


def test_rows_of_both_hooks_stay_aligned_through_the_shuffle(tiny_llama, tiny_lm_folder, tiny_text):
    """The MLP's output is down_proj of its input, row by row, after shuffling."""
    cfg, text = subject(tiny_llama, tiny_lm_folder, tiny_text, [MLP_IN, MLP_OUT])
    live = LiveActivations(tiny_llama, text.train_tokens, cfg.hook, buffer_rows=512)
    batch = next(live.batches(128, seed=3, start_step=2))
    assert batch[MLP_IN].shape == (128, 64) and batch[MLP_OUT].shape == (128, 32)
    down = tiny_llama.model.layers[0].mlp.down_proj.weight
    with torch.no_grad():
        torch.testing.assert_close(batch[MLP_IN] @ down.T, batch[MLP_OUT], rtol=1e-5, atol=1e-5)


def count_forwards(model):
    calls = []
    handle = model.register_forward_pre_hook(lambda *_: calls.append(1))
    return calls, handle


def test_two_hooks_of_different_widths_train_in_one_run_from_one_pass(
    tiny_llama, tiny_lm_folder, tiny_text, tmp_path
):
    sweep = SweepConfig("topk", expansion=[2], settings={"k": [4, 8]})
    training = TrainConfig(steps=12, batch_size=64, lr=3e-3, progress=False, log_every=4)
    passes = {}
    for hooks in ([MLP_OUT], [MLP_IN, MLP_OUT]):
        cfg, text = subject(tiny_llama, tiny_lm_folder, tiny_text, hooks)
        calls, handle = count_forwards(tiny_llama)
        try:
            summaries = train_sweep(cfg, sweep, training, tmp_path / str(len(hooks)), text=text)
        finally:
            handle.remove()
        passes[len(hooks)] = len(calls)
    # Harvesting both hooks costs no extra pass; the second hook adds only its spliced
    # evaluation: one zero-ablated and two spliced passes over the one batch of 4 windows.
    assert passes[2] == passes[1] + 3, passes
    names = [s["name"] for s in summaries]
    assert names == [
        "layers.0.mlp.down_proj.in-topk-128-k4",
        "layers.0.mlp.down_proj.in-topk-128-k8",
        "layers.0.mlp.out-topk-64-k4",
        "layers.0.mlp.out-topk-64-k8",
    ]
    for summary in summaries:
        sae = load_sae(summary["folder"])
        width = 64 if sae.cfg.hook == MLP_IN else 32
        assert (sae.d_in, sae.d_sae) == (width, 2 * width)
        metrics = summary["eval"]
        assert metrics["l0"] == sae.cfg.k
        assert {"fvu", "loss_recovered", "kl"} <= set(metrics)
        assert 0 < metrics["fvu"] < 1.5
    # the clean pass is shared: every SAE reports the same clean cross-entropy
    assert len({s["eval"]["ce_clean"] for s in summaries}) == 1
