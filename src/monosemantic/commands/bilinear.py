"""``monosemantic bilinear decompose|lm-features|convert``: features read from bilinear weights,
and pretrained SwiGLU language models made bilinear.

monosemantic bilinear decompose mnist --out runs/bilinear
monosemantic bilinear decompose runs/smollm2-bilinear --layer 29 --out runs/layer29
monosemantic bilinear lm-features ZOO_LM_FOLDER --out runs/lm-features
monosemantic bilinear convert smollm2-135m --out runs/smollm2-bilinear
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from monosemantic.bilinear.lm_layer import LayerReadingConfig, read_layer
from monosemantic.bilinear.report import DecomposeConfig, decompose_classifier
from monosemantic.bilinear.sae_basis import FeatureConfig, run_lm_features
from monosemantic.commands.options import add_data_dir, add_out, add_threads
from monosemantic.config import add_arguments, from_arguments
from monosemantic.data.images import load_images
from monosemantic.data.sources import DataConfig, resolve
from monosemantic.evaluation.spliced import compare_models
from monosemantic.files import write_json
from monosemantic.models.bilinear_lm import (
    convert_to_bilinear,
    fit_globally,
    fit_locally,
    save_converted,
)
from monosemantic.models.subject import load_subject
from monosemantic.models.zoo.mnist import ClassifierConfig, get_classifier, load_classifier
from monosemantic.models.zoo.tokenizer import load_tokenizer
from monosemantic.models.zoo.transformer import (
    is_zoo_folder,
    lm_folder,
    load_lm,
    shakespeare_corpus,
)
from monosemantic.runtime import set_threads

DEFAULT_MODEL = "mnist"
"""The decompose argument naming the default zoo classifier (shipped, else trained)."""


def cmd_decompose(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    if args.layer is not None:
        return decompose_lm_layer(args)
    cfg = from_arguments(DecomposeConfig, args)
    if args.model == DEFAULT_MODEL:
        model_cfg = ClassifierConfig()
        data = load_images(model_cfg.dataset, args.data_dir)
        model, _ = get_classifier(model_cfg, data)
    else:
        model, _ = load_classifier(Path(args.model))
        data = load_images(model.cfg.dataset, args.data_dir)
    out = Path(args.out)
    res = decompose_classifier(model, data, out, cfg)
    record = {"model": args.model, "model_config": asdict(model.cfg), **asdict(cfg)}
    write_json(out / "config.json", record)
    acc = res["truncation"]["test_accuracy"]
    shown = ", ".join(f"k={k}: {acc[k]:.4f}" for k in (1, 10, 20, cfg.k_max) if k <= cfg.k_max)
    print(
        f"test accuracy {res['test_accuracy']:.4f}; truncated {shown}\n"
        f"mean effective rank {res['effective_rank_mean']:.2f}; decomposition "
        f"{res['decompose_seconds']:.3f} s"
    )
    if cfg.adversarial:
        adv = res["adversarial"]
        print(
            f"masks at strength {cfg.strength}: accuracy {adv['adversarial']:.4f} "
            f"(random masks {adv['random']:.4f}, clean {adv['clean']:.4f})"
        )
    print(f"plots and decomposition.json in {out}")
    return 0


def decompose_lm_layer(args: argparse.Namespace) -> int:
    """``decompose MODEL --layer L``: a bilinear LM's MLP read from its weights."""
    if from_arguments(DecomposeConfig, args) != DecomposeConfig() or args.data_dir:
        raise ValueError(
            "the classifier options (--k-max, --strength, --adversarial, --data-dir, …) do not "
            "apply with --layer, which reads a language model's MLP; drop them"
        )
    cfg = from_arguments(LayerReadingConfig, args, layer=args.layer)
    model, tokenizer, _, held_out = lm_windows(args.model, args.data)
    out = Path(args.out)
    result = read_layer(model, tokenizer, held_out, out, cfg, args.direction)
    for reading in result["directions"]:
        print(f"{reading['direction']}: ‖Q‖_F {reading['frobenius']:.3g}, "
              f"exactness {reading['exactness']:.1e}")  # fmt: skip
        for vec in reading["eigenvectors"][: args.show]:
            ends = (vec["embedding_positive"], vec["embedding_negative"])
            words = " / ".join(" ".join(repr(t["token"]) for t in end[:4]) for end in ends)
            print(f"  λ {vec['eigenvalue']:+.3g} (mean contribution "
                  f"{vec['mean_contribution']:+.3g}): {words}")  # fmt: skip
    print(f"layer_reading.json and spectrum.png in {out}")
    return 0


def lm_windows(name: str, data: str) -> tuple[Any, Any, torch.Tensor, torch.Tensor]:
    """(model, tokenizer, training windows, held-out windows) of a zoo LM (its own Shakespeare
    split, with ``data`` the default) or a Hugging Face model (``data`` cut into windows)."""
    folder = lm_folder(name)
    if is_zoo_folder(folder) and data == DataConfig.data:
        model, _ = load_lm(folder)
        corpus = shakespeare_corpus(model.cfg, tokenizer=load_tokenizer(folder))
        return model, corpus.tokenizer, corpus.train, corpus.val
    text = load_subject(resolve(DataConfig(model=name, data=data, truncate=False)))
    if text is None:
        raise ValueError(f"--data {data!r} is not text: the MLP is read on text windows")
    return text.model, text.tokenizer, text.train_tokens, text.eval_tokens


def cmd_lm_features(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    cfg = from_arguments(FeatureConfig, args)
    model, tokenizer, train_windows, val_windows = lm_windows(args.model, args.data)
    result = run_lm_features(
        model,
        tokenizer,
        train_windows,
        val_windows,
        Path(args.out),
        cfg,
        name=args.model,
        sae_in=Path(args.sae_in) if args.sae_in else None,
        sae_out=Path(args.sae_out) if args.sae_out else None,
    )
    for row in result["top_outputs"][: args.show]:
        pairs = ", ".join(f"{p['i']}×{p['j']} ({p['q']:+.3g})" for p in row["pairs"][:3])
        print(
            f"output feature {row['feature']}: top-2 |λ| sum {row['top2']:.3g} "
            f"[{row['tokens']}]; strongest input pairs {pairs}"
        )
    print(f"features.json and plots in {args.out}")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    data = from_arguments(DataConfig, args)
    text = load_subject(resolve(replace(data, model=args.model, truncate=False)))
    if text is None:
        raise ValueError("convert scores the model on held-out text: give text as --data")
    original = text.model
    converted = copy.deepcopy(original)
    layers = convert_to_bilinear(converted, args.layers)
    record: dict[str, object] = {"model": args.model, "layers": layers, "recovery": "none"}
    if args.local_fit:
        start = time.perf_counter()
        fvus = fit_locally(original, converted, text.train_tokens, exclude=text.train_exclude,
                           steps=args.fit_steps, lr=args.fit_lr, progress=True)  # fmt: skip
        record |= {
            "recovery": "local",
            "fit_steps": args.fit_steps,
            "fit_lr": args.fit_lr,
            "fit_fvu": dict(zip(layers, fvus, strict=False)),
            "fit_seconds": round(time.perf_counter() - start, 1),
        }
    if args.finetune_steps:
        start = time.perf_counter()
        steps, lr = args.finetune_steps, args.finetune_lr
        kls = fit_globally(original, converted, text.train_tokens, exclude=text.train_exclude,
                           steps=steps, lr=lr, progress=True)  # fmt: skip
        record |= {
            "recovery": "local+global" if args.local_fit else "global",
            "finetune_steps": args.finetune_steps,
            "finetune_lr": args.finetune_lr,
            "finetune_kl_first_last": [kls[0], kls[-1]],
            "finetune_seconds": round(time.perf_counter() - start, 1),
        }
    out = save_converted(converted, text.tokenizer, Path(args.out))
    windows = text.eval_tokens[: data.spliced_windows]
    exclude = None if text.eval_exclude is None else text.eval_exclude[: data.spliced_windows]
    record |= compare_models(original, converted, windows, exclude=exclude)
    write_json(out / "conversion.json", record)
    print(json.dumps(record))
    print(f"saved to {out}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``bilinear`` command with its ``decompose``, ``lm-features`` and ``convert``
    subcommands."""
    bilinear = subparsers.add_parser(
        "bilinear",
        help="bilinear MLPs: read features from their weights",
        description="Bilinear layers compute exactly with a third-order tensor, so their "
        "features are eigenvectors read off the weights (Pearce et al. 2024). Train the "
        "models with `monosemantic zoo train mnist|lm`.",
    )
    commands = bilinear.add_subparsers(dest="bilinear_command", required=True)

    decompose = commands.add_parser(
        "decompose",
        help="eigenvectors, spectra, truncation and adversarial masks of a classifier",
        description="Decompose a saved bilinear classifier: writes eigenvectors.png, "
        "spectra.png, truncation.png, adversarial.png, sweep.png, decomposition.json and "
        "config.json into --out.",
    )
    decompose.add_argument(
        "model",
        help=f"a folder written by `zoo train mnist`, or '{DEFAULT_MODEL}' for the default "
        "classifier (shipped weights, else trained and cached); with --layer, a language model "
        "with bilinear MLPs (a folder written by `bilinear convert`, or a zoo bilinear LM)",
    )
    add_out(decompose, "output folder", default="runs/bilinear")
    add_threads(decompose)
    add_data_dir(decompose)
    add_arguments(decompose, DecomposeConfig)
    lm = decompose.add_argument_group(
        "language models",
        "with --layer: one bilinear MLP's interaction matrices Q(u), their "
        "eigenvectors read through the model (layer_reading.json, spectrum.png)",
    )
    lm.add_argument(
        "--layer", type=int, help="the block whose MLP is read (an LM, not a classifier)"
    )
    lm.add_argument(
        "--direction",
        action="append",
        help="an output direction u, repeatable: 'token: the' (a token's unembedding), "
        "sae:FOLDER:LATENT (a latent's decoder row) or file:u.npy (default: the tokens whose "
        "logit the MLP moves most on the text)",
    )
    lm.add_argument("--data", default=DataConfig.data, help="held-out text read through the model")
    lm.add_argument("--show", type=int, default=3, help="eigenvectors printed per direction")
    add_arguments(decompose, LayerReadingConfig, skip=("layer",))
    decompose.set_defaults(func=cmd_decompose)

    feats = commands.add_parser(
        "lm-features",
        help="a bilinear LM's MLP read through SAE features: interaction matrices, top pairs",
        description="Train (or load) SAEs on the input and output of a zoo LM's bilinear MLP "
        "and rank output features by their interaction matrices in the input SAE's basis: "
        "writes features.json, spectrum.png and the SAEs into --out.",
    )
    feats.add_argument(
        "model",
        help="a folder written by `zoo train lm --mlp bilinear`, zoo:NAME (e.g. "
        "zoo:shakespeare-bilinear-l1-d128-h512-s1500-seed0, shipped in the package), or a "
        "Hugging Face model made bilinear by `bilinear convert`",
    )
    feats.add_argument(
        "--data", default=DataConfig.data, help="text whose windows train the SAEs and read them"
    )
    feats.add_argument("--sae-in", help="SAE folder on the MLP input (default: train one)")
    feats.add_argument("--sae-out", help="SAE folder on the MLP output (default: train one)")
    add_out(feats, "output folder for JSON, SAEs and plots", required=True)
    feats.add_argument("--show", type=int, default=5, help="output features to print")
    add_threads(feats)
    add_arguments(feats, FeatureConfig)
    feats.set_defaults(func=cmd_lm_features)

    convert = commands.add_parser(
        "convert",
        help="make a SwiGLU language model's MLPs bilinear (the SiLU gate → the identity)",
        description="Replace the SiLU gate of each MLP of a Llama-family model (SmolLM2, "
        "TinyLlama, …) by the identity, so the MLP computes down((gate x) ⊙ (up x)) with its "
        "pretrained weights, save it in --out (a folder plain transformers loads when every "
        "layer is converted), and report held-out cross-entropy of the original and the "
        "converted model and their KL (conversion.json), before recovery or after the local "
        "fit of --fit-steps and the fine-tune of --finetune-steps.",
    )
    convert.add_argument("model", help="a Hugging Face model: hub name, folder, .gguf or alias")
    convert.add_argument("--layers", type=int, nargs="+", help="the MLPs to convert (default: all)")
    convert.add_argument(
        "--local-fit",
        action="store_true",
        help="local recovery: each converted MLP fitted to the original's outputs on its own "
        "inputs, its down projection by least squares (256 windows), then --fit-steps Adam steps",
    )
    convert.add_argument(
        "--fit-steps", type=int, default=100, help="Adam steps of the local fit, 8 windows each"
    )
    convert.add_argument("--fit-lr", type=float, default=1e-4, help="its learning rate")
    convert.add_argument(
        "--finetune-steps",
        type=int,
        default=0,
        help="global recovery, after the local fit: Adam steps on the converted MLPs' weights "
        "minimising KL to the original's next-token distribution, 8 windows a step (default 0)",
    )
    convert.add_argument("--finetune-lr", type=float, default=1e-5, help="its learning rate")
    add_out(convert, "the converted model's folder", required=True)
    add_threads(convert)
    add_arguments(convert, DataConfig, skip=("model", "hook", "hook_out", "extra"))
    convert.set_defaults(func=cmd_convert)
