"""``monosemantic steer`` and ``monosemantic ablate``: test what a latent does to the model."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import torch

from monosemantic.config import add_arguments, from_arguments
from monosemantic.data.sources import DataConfig, resolve
from monosemantic.interpret.causal import ablated_logits, steer
from monosemantic.interpret.logit_effects import logit_effects, writes_residual
from monosemantic.models.hf import load_model
from monosemantic.models.subject import load_subject
from monosemantic.sae.io import load_sae


def register(commands: argparse._SubParsersAction) -> None:
    steering = commands.add_parser(
        "steer",
        help="generate with a latent's decoder direction added",
        description="Greedy continuations of --prompt with α × the latent's unit decoder "
        "direction added at the SAE's hook point, one per --alpha (0: the model as is), after "
        "the tokens the direction raises and lowers most directly (its logit effects). "
        "Example: monosemantic steer runs/l3/saes/topk-4608-k32 --latent 12 --alpha 0 20 80 "
        "--prompt 'My lord,'",
    )
    steering.add_argument("sae", help="SAE folder (ours, SAELens's, sparsify's)")
    steering.add_argument("--latent", type=int, required=True)
    steering.add_argument("--alpha", type=float, nargs="+", default=[0.0, 10.0, 40.0])
    steering.add_argument("--prompt", required=True)
    steering.add_argument("--max-new-tokens", type=int, default=20)
    steering.add_argument("--model", help="the model (default: the one the SAE records)")
    steering.set_defaults(func=run_steer)

    ablation = commands.add_parser(
        "ablate",
        help="the change in loss and predictions when latents are removed",
        description="Splice the SAE in on held-out windows of --data, with and without "
        "--latent (their codes set to 0 before decoding): CE both ways and the next-token "
        "logits that change most, averaged over the scored positions.",
    )
    ablation.add_argument("sae", help="SAE folder (ours, SAELens's, sparsify's)")
    ablation.add_argument("--latent", type=int, nargs="+", required=True)
    ablation.add_argument("--top", type=int, default=10, help="tokens to list each way")
    add_arguments(ablation, DataConfig, skip=("extra", "hook", "hook_out"))
    ablation.set_defaults(func=run_ablate)


def run_steer(args: argparse.Namespace) -> int:
    sae = load_sae(Path(args.sae))
    model, tokenizer = load_model(args.model or sae.cfg.model or DataConfig.model)
    prompt = torch.tensor(tokenizer.encode(args.prompt), dtype=torch.long)
    if writes_residual(model, sae):
        found = logit_effects(model, sae, torch.tensor([args.latent]), top=8)
        names = tokenizer.convert_ids_to_tokens
        effects = {
            "raises": names(found.raise_ids[0].tolist()),
            "lowers": names(found.lower_ids[0].tolist()),
        }
        print(json.dumps({"latent": args.latent, "logit_effects": effects}))
    for alpha in args.alpha:
        ids = steer(model, prompt, sae, args.latent, alpha, max_new_tokens=args.max_new_tokens)
        text = tokenizer.decode(ids[len(prompt) :].tolist())
        print(json.dumps({"alpha": alpha, "continuation": text}))
    return 0


def run_ablate(args: argparse.Namespace) -> int:
    sae = load_sae(Path(args.sae))
    data = from_arguments(DataConfig, args)
    if sae.cfg.model and data.model == DataConfig.model:
        data = replace(data, model=sae.cfg.model)
    text = load_subject(resolve(data))
    if text is None:
        raise ValueError("ablate runs the model on text: give text as --data")
    windows = text.eval_tokens[: data.spliced_windows]
    keep = torch.ones_like(windows, dtype=torch.bool)
    if text.eval_exclude is not None:
        keep = ~text.eval_exclude[: data.spliced_windows]
    full = ablated_logits(text.model, windows, sae)
    ablated = ablated_logits(text.model, windows, sae, args.latent)
    scored = keep[:, 1:]
    targets = windows[:, 1:][scored]

    def ce(logits: torch.Tensor) -> float:
        log_probs = logits[:, :-1][scored].log_softmax(-1)
        return float(-log_probs.gather(-1, targets[:, None]).mean())

    change = (ablated - full)[keep].mean(0)  # [vocab] mean logit change per position
    tokenizer = text.tokenizer

    def listed(top: torch.return_types.topk) -> list[tuple[str, float]]:
        names = tokenizer.convert_ids_to_tokens(top.indices.tolist())
        return list(zip(names, top.values.tolist(), strict=True))

    print(
        json.dumps(
            {
                "latents": args.latent,
                "ce_spliced": ce(full),
                "ce_ablated": ce(ablated),
                "most_decreased": listed(change.topk(args.top, largest=False)),
                "most_increased": listed(change.topk(args.top)),
            },
            indent=2,
        )
    )
    return 0
