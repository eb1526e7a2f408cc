"""``monosemantic train``: a sweep of SAEs on a model's activations, a cache or a matrix.

The architecture options are generated from the registered architectures' config fields: an
option applies to the architectures that declare the field, a sweep axis takes several values.
"""

from __future__ import annotations

import argparse
import json
import typing
from pathlib import Path

from monosemantic.commands.options import add_out
from monosemantic.config import add_arguments, add_option, field_help, from_arguments
from monosemantic.data.sources import DataConfig
from monosemantic.sae.registry import ARCHITECTURES, architecture_fields
from monosemantic.training.distributed import launch
from monosemantic.training.sweep import SweepConfig, train_sweep
from monosemantic.training.trainer import TrainConfig


def add_sweep_arguments(parser: argparse.ArgumentParser) -> list[str]:
    """``--architecture``, ``--expansion`` and one option per architecture field; returns the
    field names (their options default to "the architecture's own default")."""
    group = parser.add_argument_group(
        "SweepConfig", "Which SAEs to train together: every combination of the sweep axes."
    )
    group.add_argument(
        "--architecture",
        default=SweepConfig.architecture,
        choices=sorted(ARCHITECTURES),
        help="the SAE architecture (default: %(default)s)",
    )
    add_option(
        group,
        "expansion",
        list[int],
        default=SweepConfig().expansion,
        help="dictionary widths as multiples of d_in, d_sae = expansion × d_in (default: 8)",
    )
    add_option(
        group,
        "d_sae",
        list[int],
        default=[],
        help="dictionary widths in latents, instead of --expansion (e.g. 4096)",
    )
    owners: dict[str, list[str]] = {}
    for name, sae_class in sorted(ARCHITECTURES.items()):
        for field in architecture_fields(sae_class):
            owners.setdefault(field, []).append(name)
    for field, names in owners.items():
        config_class = ARCHITECTURES[names[0]].config_class
        default = architecture_fields(ARCHITECTURES[names[0]])[field].default
        swept = [n for n in names if field in ARCHITECTURES[n].sweep_axes]
        where = f"{', '.join(names)}; default {default}"
        if swept:
            where += "; several values make a sweep"
        add_option(
            group,
            field,
            typing.get_type_hints(config_class)[field],
            default=argparse.SUPPRESS,
            help=f"{field_help(config_class).get(field, '')} ({where})",
            many=bool(swept),
        )
    group.add_argument(
        "--skip-transcoder",
        action="store_true",
        help=field_help(SweepConfig)["skip_transcoder"] + " Needs --hook-out.",
    )
    group.add_argument(
        "--standardize", action="store_true", help=field_help(SweepConfig)["standardize"]
    )
    return list(owners)


def sweep_from_arguments(args: argparse.Namespace, fields: list[str]) -> SweepConfig:
    settings = {name: getattr(args, name) for name in fields if hasattr(args, name)}
    return SweepConfig(
        architecture=args.architecture,
        expansion=list(args.expansion),
        settings=settings,
        skip_transcoder=args.skip_transcoder,
        standardize=args.standardize,
        d_sae=list(args.d_sae),
    )


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "train",
        help="train SAEs on activations",
        description="Train a sweep of SAEs (every combination of --expansion and the "
        "architecture's sweep axes, e.g. --k or --sparsity-coefficient) at every --hook point, "
        "on the activations of one model pass, then evaluate and save them; with --hook-out, "
        "transcoders from each --hook to its --hook-out; a --hook with '*' for the layer index "
        "(model.layers.*:output) trains one multi-layer SAE over every layer. "
        "Example: monosemantic train --hook model.layers.3.mlp:output --k 16 32 --out runs/l3. "
        "Under torchrun --nproc_per_node N it trains data-parallel (docs/scaling.md).",
    )
    add_out(parser, "output folder", default="runs/train")
    parser.add_argument(
        "--resume", action="store_true", help="continue from the checkpoint in --out"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run in --out, once the new one is complete",
    )
    add_arguments(parser, DataConfig, skip=("extra",))
    fields = add_sweep_arguments(parser)
    add_arguments(parser, TrainConfig)
    parser.set_defaults(func=run, sweep_fields=fields)


def run(args: argparse.Namespace) -> int:
    """Train under torchrun too: ``launch`` joins its process group (docs/scaling.md)."""
    with launch() as world:
        summaries = train_sweep(
            from_arguments(DataConfig, args),
            sweep_from_arguments(args, args.sweep_fields),
            from_arguments(TrainConfig, args),
            Path(args.out),
            resume=args.resume,
            overwrite=args.overwrite,
            world=world,
        )
    if not world.main:
        return 0
    for s in summaries:
        shown = {k: round(v, 4) for k, v in s["eval"].items() if isinstance(v, float)}
        print(f"{s['name']}: {json.dumps(shown)}\n  saved to {s['folder']}")
    return 0
