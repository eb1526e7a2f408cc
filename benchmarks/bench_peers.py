"""monosemantic, SAELens and dictionary_learning trained on the same synthetic activations.

    make bench        # its own .venv-bench with the peers from PyPI, then this script
    .venv-bench/bin/python benchmarks/bench_peers.py [--steps 40] [--repeats 3] [--warmup 5]
        [--d-in 576] [--d-sae 4608] [--k 32] [--batch-size 4096] [--atoms 20000]
        [--libraries ...] [--architectures ...] [--dtypes float32 bfloat16] [--out FILE]

Data: every row is the sum of k distinct atoms of a random unit dictionary ([atoms, d_in], fixed
seed) with magnitudes in [0.5, 1.5); a pool of batches is cycled, and FVU and L0 are measured on
held-out rows from another seed after warm-up + repeats × steps training steps.

Each case (library × architecture × dtype) runs in its own process (peak RSS from getrusage in
that process) and drives the library's own training step (its loss, its optimizer step) on the
same batches: monosemantic's ``Trainer.train_step``, SAELens's ``SAETrainer.step``,
dictionary_learning's ``trainer.update``. Adam at lr 5e-4, no warm-up, constant rate, for all.
bf16 is autocast over float32 weights for all: monosemantic's ``TrainConfig.autocast``, SAELens's
(``SAETrainerConfig.autocast``), dictionary_learning's update runs under the autocast its
``trainSAE`` uses on CUDA (on CPU it only rounds the inputs).

Bounds, from the matmul rate R (FLOP/s of a [batch, d_in] × [d_in, d_sae] product, measured in
the same run per dtype): a dense step is six products of 2·d_in·d_sae FLOP per token (encoder and
decoder forward, and each one's input and weight gradients), so dense bound = R / (12·d·F)
tokens/s; if only the encoder forward were dense (the rest exploiting the k-sparse codes), sparse
bound = R / (2·d·F).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import torch

LR = 5e-4
LIBRARIES = ("monosemantic", "saelens", "dictionary_learning")
ARCHITECTURES = (
    "topk",
    "standard",
    "jumprelu",
    "batchtopk",
    "gated",
    "matryoshka",
    "p_anneal",
    "feature_choice",
    "mutual_choice",
    "groupmax",
)
DTYPES = ("float32", "bfloat16")
PACKAGES = {
    "monosemantic": "monosemantic",
    "saelens": "sae-lens",
    "dictionary_learning": "dictionary-learning",
}

Step = Callable[[torch.Tensor], None]
Autoencode = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
"""x [rows, d_in] -> (codes [rows, d_sae], x_hat [rows, d_in]) in x's units."""
Case = tuple[Step, Autoencode, torch.nn.Module]

OUR_PENALTIES = {
    "standard": {"sparsity_coefficient": 0.1},
    "gated": {"sparsity_coefficient": 0.2},
    "p_anneal": {"sparsity_coefficient": 0.02},
    "jumprelu": {
        "sparsity_coefficient": 3e-3,
        "jumprelu_bandwidth": 0.05,
        "jumprelu_init_threshold": 0.05,
    },
}
"""Our penalised architectures default to λ = 0; these give L0 of tens to a few hundred on this
data after 50 steps at batch 4096 (λ = 1 silenced every ReLU latent by step 36). Their first
20–25 steps, where half the latents fire, run dense. The rest take k. The peers keep their own
default coefficients."""
SAELENS = {
    "topk": "TopKTrainingSAE",
    "batchtopk": "BatchTopKTrainingSAE",
    "standard": "StandardTrainingSAE",
    "jumprelu": "JumpReLUTrainingSAE",
    "gated": "GatedTrainingSAE",
    "matryoshka": "MatryoshkaBatchTopKTrainingSAE",
}
"""Our architecture name -> SAELens's training SAE class (its config class is ``…Config``)."""
DICTIONARY_LEARNING = {
    "topk": "TopKTrainer",
    "batchtopk": "BatchTopKTrainer",
    "standard": "StandardTrainer",
    "jumprelu": "JumpReluTrainer",
    "gated": "GatedSAETrainer",
    "p_anneal": "PAnnealTrainer",
    "matryoshka": "matryoshka_batch_top_k.MatryoshkaBatchTopKTrainer",
}
"""Our architecture name -> dictionary_learning's trainer class (in ``trainers``, or the module
of ``trainers`` it names)."""
MATRYOSHKA_FRACTIONS = (1 / 8, 1 / 8, 1 / 4, 1 / 2)
"""Nested groups as fractions of d_sae: our default 4 levels (prefixes F/8, F/4, F/2, F)."""


@dataclass(frozen=True)
class Sizes:
    d_in: int
    d_sae: int
    k: int
    batch_size: int
    steps: int
    """Total training steps of a case (warm-up and timed), for the libraries' schedules."""


# --- synthetic activations -------------------------------------------------------------------


def random_dictionary(atoms: int, d_in: int, seed: int) -> torch.Tensor:
    """[atoms, d_in] random unit rows."""
    rows = torch.randn(atoms, d_in, generator=torch.Generator().manual_seed(seed))
    return rows / rows.norm(dim=1, keepdim=True)


def sparse_code(
    rows: int, atoms: int, k: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices, magnitudes), both [rows, k]: k distinct atoms per row (sorted draws from
    [0, atoms − k] plus 0 … k−1 are strictly increasing), magnitudes in [0.5, 1.5)."""
    draws = torch.randint(0, atoms - k + 1, (rows, k), generator=generator).sort(-1).values
    return draws + torch.arange(k), torch.rand(rows, k, generator=generator) + 0.5


def synthetic_rows(dictionary: torch.Tensor, rows: int, k: int, seed: int) -> torch.Tensor:
    """[rows, d_in]: each row a k-sparse combination of ``dictionary``'s rows."""
    indices, magnitudes = sparse_code(rows, len(dictionary), k, torch.Generator().manual_seed(seed))
    return torch.nn.functional.embedding_bag(
        indices, dictionary, per_sample_weights=magnitudes, mode="sum"
    )


def batches(args: argparse.Namespace) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The pool of training batches and the held-out rows every case sees."""
    dictionary = random_dictionary(args.atoms, args.d_in, args.seed)
    pool = [
        synthetic_rows(dictionary, args.batch_size, args.k, args.seed + 1 + i)
        for i in range(args.pool)
    ]
    return pool, synthetic_rows(dictionary, args.eval_rows, args.k, args.seed + 1 + args.pool)


# --- bounds ----------------------------------------------------------------------------------


def matmul_rate(rows: int, d_in: int, d_sae: int, dtype: torch.dtype, repeats: int = 5) -> float:
    """FLOP/s of [rows, d_in] × [d_in, d_sae] in ``dtype``, the median of ``repeats``."""
    a, b = torch.randn(rows, d_in, dtype=dtype), torch.randn(d_in, d_sae, dtype=dtype)
    a @ b  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * rows * d_in * d_sae / statistics.median(times)


def bounds(rate: float, d_in: int, d_sae: int) -> dict[str, float]:
    """Tokens/s at matmul rate ``rate`` (FLOP/s): dense R/(12·d·F), encoder-forward-only
    R/(2·d·F)."""
    return {"dense": rate / (12 * d_in * d_sae), "sparse": rate / (2 * d_in * d_sae)}


# --- the libraries ---------------------------------------------------------------------------


def monosemantic_case(arch: str, sizes: Sizes, dtype: str, first: torch.Tensor) -> Case:
    """Our ``Trainer.train_step``; it scales inputs to E‖x‖² = 1, so the autoencoder scales in
    and out. bf16 is autocast over float32 master weights (``TrainConfig.autocast``)."""
    from monosemantic.sae.registry import config, create
    from monosemantic.training.trainer import TrainConfig, Trainer

    settings = OUR_PENALTIES.get(arch, {"k": sizes.k})
    sae = create(config(arch, d_in=sizes.d_in, d_sae=sizes.d_sae, **settings))
    train = TrainConfig(
        steps=sizes.steps,
        batch_size=sizes.batch_size,
        lr=LR,
        lr_decay_fraction=0.0,
        autocast=None if dtype == "float32" else dtype,
        progress=False,
    )
    trainer = Trainer([sae], train)
    trainer.initialise(first)
    scale = trainer.input_scale[sae.cfg.hook]

    def autoencode(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with trainer.autocast(x):
            return sae.encode(x * scale), sae(x * scale).float() / scale

    return trainer.train_step, autoencode, sae


def saelens_case(arch: str, sizes: Sizes, dtype: str, first: torch.Tensor) -> Case:
    """SAELens's ``SAETrainer.step`` (its loss, gradient clipping, Adam, schedulers, dead-latent
    counts); bf16 through its autocast."""
    from sae_lens import saes
    from sae_lens.config import SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer

    f = sizes.d_sae
    fields: dict = {}
    if "TopK" in SAELENS[arch]:
        fields["k"] = sizes.k
    if arch == "matryoshka":
        fields["matryoshka_widths"] = [
            round(f * sum(MATRYOSHKA_FRACTIONS[: i + 1])) for i in range(4)
        ]
    cfg = getattr(saes, SAELENS[arch] + "Config")(d_in=sizes.d_in, d_sae=f, **fields)
    sae = getattr(saes, SAELENS[arch])(cfg)
    trainer = SAETrainer(
        SAETrainerConfig(
            total_training_samples=sizes.steps * sizes.batch_size,
            train_batch_size_samples=sizes.batch_size,
            lr=LR,
            lr_end=LR / 10,  # what its runner config sets; the constant schedule ignores it
            autocast=dtype == "bfloat16",
        ),
        sae,
        data_provider=iter(()),
    )

    def step(x: torch.Tensor) -> None:
        trainer.step(x)
        trainer.n_training_steps += 1  # what its fit() does after each step

    def autoencode(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        codes = sae.encode(x)
        return codes, sae.decode(codes)

    return step, autoencode, sae


def dictionary_learning_case(arch: str, sizes: Sizes, dtype: str, first: torch.Tensor) -> Case:
    """dictionary_learning's ``trainer.update`` (its loss, Adam or ConstrainedAdam, schedules,
    dead-latent counts)."""
    sys.modules.setdefault("nnsight", _no_nnsight())
    module, _, name = ("dictionary_learning.trainers." + DICTIONARY_LEARNING[arch]).rpartition(".")
    trainer_class = getattr(importlib.import_module(module), name)
    fields: dict = {"sparsity_warmup_steps": None}
    if "TopK" in DICTIONARY_LEARNING[arch]:
        fields = {"k": sizes.k, "threshold_start_step": 0}
    if arch == "matryoshka":
        fields["group_fractions"] = list(MATRYOSHKA_FRACTIONS)
    if arch == "jumprelu":
        fields["target_l0"] = float(sizes.k)
    if arch == "p_anneal":  # ours anneals p from 1 to 0.2 over the second half
        fields.update(anneal_start=sizes.steps // 2, p_end=0.2)
    trainer = trainer_class(
        steps=sizes.steps,
        activation_dim=sizes.d_in,
        dict_size=sizes.d_sae,
        layer=0,
        lm_name="synthetic",
        lr=LR,
        warmup_steps=0,
        seed=0,
        device="cpu",
        **fields,
    )
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bfloat16")
    count = iter(range(sys.maxsize))

    def step(x: torch.Tensor) -> None:
        with autocast:
            trainer.update(next(count), x)

    def autoencode(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        codes = trainer.ae.encode(x)
        return codes, trainer.ae.decode(codes)

    return step, autoencode, trainer.ae


def _no_nnsight():
    """dictionary_learning's package imports nnsight for its activation buffer only; if nnsight
    does not import, a stand-in lets the trainers load."""
    try:
        import nnsight

        return nnsight
    except ImportError:
        import types

        return types.SimpleNamespace(LanguageModel=object)


CASES = {
    "monosemantic": monosemantic_case,
    "saelens": saelens_case,
    "dictionary_learning": dictionary_learning_case,
}


def has(library: str, arch: str) -> bool:
    """Whether ``library`` has architecture ``arch``."""
    if library == "monosemantic":
        from monosemantic.sae.registry import ARCHITECTURES as OURS

        return arch in OURS
    return arch in {"saelens": SAELENS, "dictionary_learning": DICTIONARY_LEARNING}[library]


# --- one case, in its own process ------------------------------------------------------------


def peak_rss_mb() -> float:
    """This process's peak resident memory so far (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@torch.no_grad()
def held_out(autoencode: Autoencode, x: torch.Tensor, d_sae: int) -> dict[str, float]:
    """FVU and L0 of the autoencoder on held-out rows ``x``."""
    from monosemantic.evaluation.metrics import ReconstructionStats

    stats = ReconstructionStats(d_sae)
    for rows in x.split(1024):
        codes, x_hat = autoencode(rows)
        stats.update(rows, x_hat.float(), codes.float())
    result = stats.result()
    return {"fvu": result["fvu"], "l0": result["l0"], "dead_fraction": result["dead_fraction"]}


def run_case(args: argparse.Namespace, library: str, arch: str, dtype: str) -> dict:
    """Warm-up, then ``repeats`` timed runs of ``steps`` steps; tokens/s is their median."""
    torch.manual_seed(args.seed)
    pool, test = batches(args)
    total = args.warmup + args.repeats * args.steps
    sizes = Sizes(args.d_in, args.d_sae, args.k, args.batch_size, total)
    step, autoencode, module = CASES[library](arch, sizes, dtype, pool[0])
    rss_built = peak_rss_mb()  # the library imported, the data and the model made
    module.train()
    for i in range(args.warmup):
        step(pool[i % len(pool)])
    seconds = []
    for r in range(args.repeats):
        start = time.perf_counter()
        for s in range(args.steps):
            step(pool[(args.warmup + r * args.steps + s) % len(pool)])
        seconds.append(time.perf_counter() - start)
    module.eval()
    return {
        "tokens_per_s": args.steps * args.batch_size / statistics.median(seconds),
        "step_seconds": [t / args.steps for t in seconds],
        "steps_trained": total,
        **held_out(autoencode, test, args.d_sae),
        "peak_rss_mb": peak_rss_mb(),
        "rss_before_training_mb": rss_built,
        "threads": torch.get_num_threads(),
    }


def brief_error(stderr: str, status: int) -> str:
    """The exception line of a child's traceback, with the source line that raised it when the
    exception carries no message (a bare assert)."""
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    if not lines:
        return f"exit status {status}"
    code = [line for line in lines[:-1] if not line.startswith(("File ", "^", "~"))]
    last = lines[-1]
    if ":" not in last and code:
        last = f"{last} at `{code[-1]}`"
    return last[:200]


def case_in_subprocess(argv: list[str], case: str, timeout: float) -> dict:
    """Run ``case`` (library:arch:dtype) with this script in a fresh interpreter."""
    cmd = [sys.executable, __file__, *argv, "--case", case]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s (lower --steps or raise --timeout)"}
    if done.returncode != 0:
        return {"error": brief_error(done.stderr, done.returncode)}
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- the whole run ---------------------------------------------------------------------------


def fast_bf16() -> bool:
    """Whether this CPU runs bf16 matmuls in oneDNN; without it they are tens of times slower
    than float32 and a bf16 case measures the fallback kernel, not a library."""
    from monosemantic.runtime import cpu_has_fast_matmul

    return cpu_has_fast_matmul("bfloat16")


def machine(args: argparse.Namespace) -> dict:
    """Versions, threads, load and the matmul rates and bounds of this run."""
    rates = {
        name: matmul_rate(args.batch_size, args.d_in, args.d_sae, getattr(torch, name))
        for name in args.dtypes
    }
    versions = {}
    for library in args.libraries:
        try:
            versions[library] = metadata.version(PACKAGES[library])
        except metadata.PackageNotFoundError:
            versions[library] = None
    return {
        "torch": torch.__version__,
        "versions": versions,
        "threads": torch.get_num_threads(),
        "load_average": os.getloadavg(),
        "fast_bf16": fast_bf16(),
        "matmul_flops": rates,
        "bounds_tokens_per_s": {n: bounds(r, args.d_in, args.d_sae) for n, r in rates.items()},
    }


def cell(result: dict) -> str:
    if result.get("missing"):
        return "–"
    if "error" in result:
        return f"error: {result['error']}"
    return (
        f"{result['tokens_per_s']:,.0f} ({result['fvu']:.2f}, {result['l0']:.0f}; "
        f"{result['peak_rss_mb']:,.0f} MB)"
    )


def table(report: dict) -> str:
    """Markdown: one row per architecture and dtype, one column per library."""
    libraries = report["args"]["libraries"]
    run = report["machine"]
    label = lambda lib: f"{lib} {run['versions'].get(lib) or '(not installed)'}"  # noqa: E731
    lines = [
        "| tokens/s (FVU, L0; peak RSS) | " + " | ".join(label(lib) for lib in libraries) + " |",
        "|---" * (len(libraries) + 1) + "|",
    ]
    for arch in report["args"]["architectures"]:
        for dtype in report["args"]["dtypes"]:
            cells = [cell(report["results"][f"{lib}:{arch}:{dtype}"]) for lib in libraries]
            lines.append(f"| {arch} {dtype} | " + " | ".join(cells) + " |")
    for dtype, rate in run["matmul_flops"].items():
        bound = run["bounds_tokens_per_s"][dtype]
        lines.append(
            f"\n{dtype}: matmul {rate / 1e9:,.0f} GFLOP/s, dense bound {bound['dense']:,.0f} "
            f"tokens/s, sparse (encoder forward only) bound {bound['sparse']:,.0f}"
        )
    return "\n".join(lines)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--d-in", type=int, default=576)
    parser.add_argument("--d-sae", type=int, default=4608)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--atoms", type=int, default=20000, help="size of the true dictionary")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps before timing")
    parser.add_argument("--steps", type=int, default=40, help="timed steps per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pool", type=int, default=8, help="distinct training batches cycled")
    parser.add_argument("--eval-rows", type=int, default=4096)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--libraries", nargs="+", default=list(LIBRARIES), choices=LIBRARIES)
    parser.add_argument("--architectures", nargs="+", default=list(ARCHITECTURES))
    parser.add_argument(
        "--dtypes",
        nargs="+",
        choices=DTYPES,
        help="default: both where this CPU has fast bf16 matmuls, else float32 only",
    )
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per case")
    parser.add_argument("--out", type=Path, default=Path("runs/bench/peers.json"))
    parser.add_argument("--table", type=Path, help="print the table of a saved run's JSON")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # library:arch:dtype, in a child
    args = parser.parse_args(argv)
    if args.dtypes is None:
        args.dtypes = list(DTYPES) if fast_bf16() else ["float32"]
    if args.k > args.atoms or args.k > args.d_sae:
        parser.error(f"--k {args.k} must not exceed --atoms {args.atoms} or --d-sae {args.d_sae}")
    return args


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.case:
        print(json.dumps(run_case(args, *args.case.split(":"))))
        return
    if args.table:
        print(table(json.loads(args.table.read_text())))
        return
    from monosemantic.files import write_json

    if "--dtypes" not in argv and not fast_bf16():
        print(
            "bfloat16 left out: this CPU lacks fast bf16 matmuls (AVX-512 or AMX); "
            "--dtypes float32 bfloat16 runs it anyway",
            file=sys.stderr,
        )
    report = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}
    report["machine"] = machine(args)
    report["results"] = {}
    for arch in args.architectures:
        for dtype in args.dtypes:
            for library in args.libraries:
                case = f"{library}:{arch}:{dtype}"
                report["results"][case] = (
                    case_in_subprocess(argv, case, args.timeout)
                    if has(library, arch)
                    else {"missing": True}
                )
                print(case, json.dumps(report["results"][case]), file=sys.stderr, flush=True)
    report["machine"]["load_average_end"] = os.getloadavg()
    write_json(args.out, report)
    print(table(report))
    print(f"\nwritten to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
