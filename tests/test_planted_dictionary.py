"""Training on data built from a known sparse dictionary: the SAEs must find its atoms, and
JumpReLU's L0 must fall as its penalty rises."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from monosemantic.sae.base import SAE, SAEConfig
from monosemantic.sae.registry import config, create
from monosemantic.training.trainer import TrainConfig, train

D, N_ATOMS, ACTIVE, BATCH = 32, 128, 4, 256


pytestmark = pytest.mark.usefixtures("one_thread")


def planted_atoms(seed: int = 0) -> torch.Tensor:
    """[N_ATOMS, D] random unit vectors."""
    atoms = torch.randn(N_ATOMS, D, generator=torch.Generator().manual_seed(seed))
    return atoms / atoms.norm(dim=1, keepdim=True)


def planted_batches(atoms: torch.Tensor, seed: int = 1) -> Iterator[torch.Tensor]:
    """[BATCH, D]: each row the sum of ACTIVE distinct atoms with magnitudes in [0.5, 1.5)."""
    g = torch.Generator().manual_seed(seed)
    while True:
        chosen = torch.rand(BATCH, N_ATOMS, generator=g).argsort(-1)[:, :ACTIVE]
        magnitudes = torch.rand(BATCH, ACTIVE, generator=g) + 0.5
        yield torch.zeros(BATCH, N_ATOMS).scatter(1, chosen, magnitudes) @ atoms


def recovery(sae: SAE, atoms: torch.Tensor) -> float:
    """Mean over true atoms of the best cosine similarity with a decoder row."""
    rows = sae.W_dec.detach()
    rows = rows / rows.norm(dim=1, keepdim=True)
    return float((atoms @ rows.T).max(dim=1).values.mean())


def jumprelu_cfg(d_sae: int, coefficient: float) -> SAEConfig:
    # Inputs are scaled to E‖x‖² = 1, where codes are O(0.3): a 1e-3 bandwidth would let
    # almost no pre-activation reach the kernel window in a short run.
    return config(
        "jumprelu",
        d_in=D,
        d_sae=d_sae,
        sparsity_coefficient=coefficient,
        jumprelu_bandwidth=0.05,
        jumprelu_init_threshold=0.1,
    )


@pytest.mark.slow
def test_topk_and_jumprelu_recover_the_planted_atoms() -> None:
    atoms = planted_atoms()
    torch.manual_seed(1)  # not the atoms' seed: a decoder drawn from it would hold the atoms
    topk = create(config("topk", d_in=D, d_sae=2 * N_ATOMS, k=ACTIVE))
    jump = create(jumprelu_cfg(2 * N_ATOMS, coefficient=0.03))
    untrained = recovery(topk, atoms)
    cfg = TrainConfig(steps=1000, batch_size=BATCH, lr=5e-3, seed=0, progress=False)
    metrics = train([topk, jump], planted_batches(atoms), cfg)
    assert untrained < 0.7, "random decoders must not already pass"
    assert recovery(topk, atoms) > 0.9
    assert recovery(jump, atoms) > 0.9
    assert metrics[0]["l0"] == ACTIVE
    assert 2 < metrics[1]["l0"] < 8, "JumpReLU should settle near the planted sparsity"


def test_jumprelu_l0_falls_as_its_coefficient_rises() -> None:
    atoms = planted_atoms()
    saes = [create(jumprelu_cfg(64, coefficient)) for coefficient in (0.003, 0.03, 0.3)]
    cfg = TrainConfig(steps=300, batch_size=BATCH, lr=5e-3, seed=0, progress=False)
    train(saes, planted_batches(atoms), cfg)
    x = next(planted_batches(atoms, seed=2))
    with torch.no_grad():
        l0 = [float((sae.encode(x) != 0).sum(-1).float().mean()) for sae in saes]
    assert l0[0] > l0[1] > l0[2], l0


@pytest.mark.slow
def test_adaptive_allocation_architectures_recover_the_planted_atoms() -> None:
    """Feature Choice, Mutual Choice and Matryoshka find the atoms too (measured 0.97, 0.95,
    0.86), and Feature Choice keeps every latent alive though half the dictionary is spare."""
    atoms = planted_atoms()
    torch.manual_seed(1)
    names = ("feature_choice", "mutual_choice", "matryoshka")
    saes = [create(config(n, d_in=D, d_sae=2 * N_ATOMS, k=ACTIVE)) for n in names]
    cfg = TrainConfig(
        steps=1000, batch_size=BATCH, lr=5e-3, seed=0, progress=False, dead_after_tokens=20_000
    )
    metrics = train(saes, planted_batches(atoms), cfg)
    fc, mc, matryoshka = (recovery(sae, atoms) for sae in saes)
    assert fc > 0.93 and mc > 0.9 and matryoshka > 0.8
    assert metrics[0]["dead_fraction"] == 0.0


@pytest.mark.slow
def test_peer_architectures_recover_the_planted_atoms() -> None:
    """Matching pursuit, GroupMax and p-annealing (measured 0.997, 0.978, 0.992; TopK 0.996)."""
    atoms = planted_atoms()
    torch.manual_seed(1)
    saes = [
        create(config("matching_pursuit", d_in=D, d_sae=2 * N_ATOMS, k=ACTIVE)),
        create(config("groupmax", d_in=D, d_sae=2 * N_ATOMS, k=ACTIVE)),
        create(config("p_anneal", d_in=D, d_sae=2 * N_ATOMS, sparsity_coefficient=0.3)),
    ]
    cfg = TrainConfig(
        steps=1000, batch_size=BATCH, lr=5e-3, seed=0, progress=False, dead_after_tokens=20_000
    )
    metrics = train(saes, planted_batches(atoms), cfg)
    assert [recovery(sae, atoms) > 0.95 for sae in saes] == [True, True, True]
    assert metrics[0]["l0"] <= ACTIVE and 2 < metrics[2]["l0"] < 8
