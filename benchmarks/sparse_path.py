"""Training throughput of the sparse path (sae/sparse.py) against the dense reference, same
process, interleaved.

    OMP_NUM_THREADS=2 python benchmarks/sparse_path.py [--architectures topk batchtopk ...]

Synthetic activations (each row a sparse code over a 20,000-atom dictionary, fixed seed), d_in
576, 4608 latents, k 32, batch 4096, Adam through the Trainer. Per architecture, two identical
SAEs (one with ``sparse_path = False``) each take warm-up steps, then rounds of timed steps
alternate between them; the median step time gives tokens/s. FVU is measured on held-out rows
after both have taken the same steps. The penalised architectures (ReLU, JumpReLU, Gated,
p-annealing) start with their encoder bias shifted so that about k latents fire, as in a trained
SAE (from their initialisation half of them fire, where the dense path is the faster and is
taken).
``--dense-as-before`` gives the dense reference the unfused Adam it had before the sparse path (a
step then costs what main's step costs); ``--saelens`` times SAELens's TopK alongside (``topk``).
Prints one JSON line per architecture.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from types import SimpleNamespace
from typing import Any

import torch

from monosemantic.sae.base import SAE
from monosemantic.sae.gated import GatedSAE
from monosemantic.sae.jumprelu import JumpReLUSAE
from monosemantic.sae.registry import architecture, architecture_fields, config, create
from monosemantic.training.trainer import TrainConfig, Trainer

ATOMS, ATOMS_PER_ROW = 20_000, 32
SPARSITY_COEFFICIENT = 1.0
"""λ of the penalised architectures (ReLU, JumpReLU, Gated, p-annealing)."""


def synthetic(batches: int, batch: int, d_in: int, seed: int) -> list[torch.Tensor]:
    """``batches`` tensors [batch, d_in]: sparse non-negative codes over unit atoms, plus noise."""
    gen = torch.Generator().manual_seed(seed)
    atoms = torch.randn(ATOMS, d_in, generator=gen)
    atoms /= atoms.norm(dim=1, keepdim=True)
    out = []
    for _ in range(batches):
        which = torch.randint(0, ATOMS, (batch, ATOMS_PER_ROW), generator=gen)
        scale = torch.empty(batch, ATOMS_PER_ROW).exponential_(generator=gen)
        rows = torch.nn.functional.embedding_bag(which, atoms, per_sample_weights=scale, mode="sum")
        out.append(rows + 0.05 * torch.randn(batch, d_in, generator=gen))
    return out


def make(name: str, d_in: int, d_sae: int, k: int, seed: int) -> SAE:
    torch.manual_seed(seed)
    fields = architecture_fields(architecture(name))
    kw: dict = {"k": k} if "k" in fields else {}
    if "sparsity_coefficient" in fields:
        kw["sparsity_coefficient"] = SPARSITY_COEFFICIENT
    return create(config(name, d_in=d_in, d_sae=d_sae, **kw))


def start_at_l0(trainer: Trainer, x: torch.Tensor, l0: int) -> None:
    """Shift a penalised SAE's encoder bias (Gated: the gate's) so that about ``l0`` latents
    per row of x fire, as in a trained SAE: from their initialisation half the latents fire."""
    sae = trainer.runs[0].sae
    with torch.no_grad():
        pre = sae.pre_acts(trainer.scaled({sae.cfg.hook: x}, sae.cfg.hook, sae.W_dec.dtype))
        bias = sae.b_gate if isinstance(sae, GatedSAE) else sae.b_enc
        if isinstance(sae, GatedSAE):
            pre = pre + bias
        if isinstance(sae, JumpReLUSAE):
            pre = pre - sae.threshold
        bias.sub_(pre.flatten()[::97].quantile(1 - l0 / sae.d_sae))


def fvu(trainer: Any, x: torch.Tensor) -> float:
    """Fraction of variance unexplained on rows x (raw units, scaled as the trainer scales)."""
    with torch.no_grad():
        scaled = x * trainer.input_scale[""]
        error = (trainer.runs[0].sae(scaled) - scaled).pow(2).sum()
        return float(error / (scaled - scaled.mean(0)).pow(2).sum())


class SaeLensTopK:
    """SAELens's fastest fp32 TopK (sparse activations, no decoder-norm rescaling) in a minimal
    loop: its training forward pass, backward and Adam, less than its own trainer does."""

    def __init__(self, args: argparse.Namespace, scale: float) -> None:
        from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig

        torch.manual_seed(args.seed)
        cfg = TopKTrainingSAEConfig(
            d_in=args.d_in,
            d_sae=args.d_sae,
            k=args.k,
            use_sparse_activations=True,
            rescale_acts_by_decoder_norm=False,
        )
        sae = TopKTrainingSAE(cfg)
        self.optimizer = torch.optim.Adam(sae.parameters(), lr=5e-4)
        self.runs = [SimpleNamespace(sae=sae)]  # what fvu() reads, as from a Trainer
        self.input_scale, self.step = {"": scale}, 0

    def train_step(self, x: torch.Tensor) -> None:
        from sae_lens.saes.sae import TrainStepInput

        batch = TrainStepInput(x * self.input_scale[""], {}, None, self.step, False)
        loss = self.runs[0].sae.training_forward_pass(batch).loss
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.step += 1


def compare(name: str, data: list[torch.Tensor], args: argparse.Namespace) -> dict:
    sparse = make(name, args.d_in, args.d_sae, args.k, args.seed)
    dense = copy.deepcopy(sparse)
    dense.sparse_path = False
    if args.sparse_density is not None:
        sparse.sparse_density = args.sparse_density
    cfg = TrainConfig(steps=10_000, batch_size=args.batch_size, progress=False, seed=args.seed)
    trainers: dict[str, Any] = {"sparse": Trainer([sparse], cfg), "dense": Trainer([dense], cfg)}
    if args.dense_as_before:  # the reference as main trained it: unfused Adam
        run = trainers["dense"].runs[0]
        run.optimizer = torch.optim.Adam(dense.parameters(), lr=run.base_lr)
    for trainer in trainers.values():
        trainer.initialise(data[0])
        if "k" not in architecture_fields(architecture(name)):
            start_at_l0(trainer, data[0], args.l0 or args.k)
    if args.saelens and name == "topk":
        trainers["saelens"] = SaeLensTopK(args, trainers["sparse"].input_scale[""])
    times: dict[str, list[float]] = {path: [] for path in trainers}

    def run(path: str, n: int) -> None:
        trainer = trainers[path]
        for _ in range(n):
            start = time.perf_counter()
            trainer.train_step(data[trainer.step % (len(data) - 1)])
            times[path].append(time.perf_counter() - start)

    for path in trainers:
        run(path, args.warmup)
        times[path].clear()
    for _ in range(args.rounds):
        for path in trainers:
            run(path, args.steps)
    tokens = {path: args.batch_size / statistics.median(t) for path, t in times.items()}
    held_out = data[-1]
    out = {
        "architecture": name,
        "steps": args.warmup + args.rounds * args.steps,
        "dense_tokens_per_s": round(tokens["dense"]),
        "sparse_tokens_per_s": round(tokens["sparse"]),
        "sparse_over_dense": round(tokens["sparse"] / tokens["dense"], 2),
        "dense_fvu": round(fvu(trainers["dense"], held_out), 4),
        "sparse_fvu": round(fvu(trainers["sparse"], held_out), 4),
    }
    if "saelens" in tokens:
        out["saelens_tokens_per_s"] = round(tokens["saelens"])
        out["sparse_over_saelens"] = round(tokens["sparse"] / tokens["saelens"], 2)
        out["saelens_fvu"] = round(fvu(trainers["saelens"], held_out), 4)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--architectures",
        nargs="+",
        default=[
            *("topk", "batchtopk", "matryoshka", "mutual_choice", "feature_choice"),
            *("standard", "jumprelu", "gated", "p_anneal"),
        ],
    )
    parser.add_argument("--d-in", type=int, default=576)
    parser.add_argument("--d-sae", type=int, default=4608)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per path per round")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--l0", type=int, default=0, help="penalised SAEs' start L0 (0: k)")
    parser.add_argument(
        "--sparse-density",
        type=float,
        help="the sparse SAE's sparse_density (1: always sparse, to measure the crossover)",
    )
    parser.add_argument(
        "--saelens", action="store_true", help="also time SAELens's TopK (topk only)"
    )
    parser.add_argument(
        "--dense-as-before",
        action="store_true",
        help="give the dense reference torch's unfused Adam, as before the sparse path",
    )
    args = parser.parse_args()
    data = synthetic(9, args.batch_size, args.d_in, args.seed)
    print(json.dumps({"threads": torch.get_num_threads(), "torch": torch.__version__}))
    for name in args.architectures:
        print(json.dumps(compare(name, data, args)), flush=True)


if __name__ == "__main__":
    main()
