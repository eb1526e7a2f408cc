"""The sparse path (sae/sparse.py) against the dense reference: same loss, same gradient for every
parameter, same training run."""

from __future__ import annotations

import copy
import threading

import pytest
import torch

from monosemantic.sae import batchtopk
from monosemantic.sae.base import SAE, LossContext, local
from monosemantic.sae.batchtopk import batch_topk_codes, batch_topk_pairs, kth_largest
from monosemantic.sae.feature_choice import (
    feature_choice_mask,
    feature_choice_thresholds,
    top_per_column,
)
from monosemantic.sae.gated import GatedSAE
from monosemantic.sae.jumprelu import JumpReLUSAE
from monosemantic.sae.registry import ARCHITECTURES, architecture_fields, config, create
from monosemantic.sae.sparse import Active, Encoding, above, row_sum, sampled_dot
from monosemantic.training.objective import Batch, reconstruction
from monosemantic.training.trainer import TrainConfig, Trainer

D_IN, D_SAE, K = 10, 48, 3
SPARSE = ["topk", "groupmax", "batchtopk", "matryoshka", "mutual_choice", "feature_choice"]
THRESHOLDED = ["standard", "jumprelu", "gated", "p_anneal"]
"""Sparse below a density of active pairs (``sparse_density``, set to 1 here)."""


def make(architecture: str, seed: int = 0, **kw) -> SAE:
    """All parameters random, float64, λ = 0.3 where there is one; always sparse."""
    torch.manual_seed(seed)
    fields = architecture_fields(ARCHITECTURES[architecture])
    own = {"k": K} if "k" in fields else {"sparsity_coefficient": 0.3}
    sae = create(config(architecture, d_in=D_IN, d_sae=D_SAE, dtype="float64", **{**own, **kw}))
    with torch.no_grad():
        for p in sae.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
        if isinstance(sae, JumpReLUSAE):  # θ where some pre-activations lie within ε/2
            sae.log_threshold.copy_(torch.empty(D_SAE).uniform_(-3.0, 0.0))
    sae.sparse_density = 1.0
    return sae


def rows(n: int, d: int = D_IN, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def step(sae: SAE, x: torch.Tensor, sparse: bool, ctx: LossContext, target=None):
    """One objective evaluation and backward: (terms, gradients by name, output)."""
    sae.sparse_path = sparse
    sae.zero_grad(set_to_none=True)
    terms, out = reconstruction(sae, Batch(x, target), ctx)
    terms["loss"].backward()
    grads = {n: p.grad for n, p in sae.named_parameters() if p.grad is not None}
    return terms, grads, out


def assert_paths_agree(sae: SAE, x: torch.Tensor, ctx: LossContext, target=None) -> None:
    sparse_terms, sparse_grads, out = step(sae, x, True, ctx, target)
    assert out.active is not None, "the sparse path was not taken"
    dense_terms, dense_grads, dense_out = step(sae, x, False, ctx, target)
    assert dense_out.active is None
    assert sparse_terms.keys() == dense_terms.keys()
    for name in dense_terms:
        torch.testing.assert_close(sparse_terms[name], dense_terms[name], msg=name)
    torch.testing.assert_close(out.codes.dense(), dense_out.codes.dense())
    assert sparse_grads.keys() == dense_grads.keys()
    for name, grad in dense_grads.items():
        torch.testing.assert_close(sparse_grads[name], grad, msg=f"grad of {name}")


def some_dead() -> torch.Tensor:
    dead = torch.zeros(D_SAE, dtype=torch.bool)
    dead[::3] = True
    return dead


@pytest.mark.parametrize("architecture", SPARSE + THRESHOLDED)
def test_gradients_equal_the_dense_path(architecture: str) -> None:
    sae = make(architecture)
    density = torch.rand(D_SAE, generator=torch.Generator().manual_seed(2)) * 0.2
    assert_paths_agree(sae, rows(32), LossContext(dead=some_dead(), density=density))


@pytest.mark.parametrize("architecture", SPARSE + THRESHOLDED)
@pytest.mark.parametrize("case", ["batch_1", "k_is_d_sae", "silent_latent", "standardize", "skip"])
def test_edge_cases_equal_the_dense_path(architecture: str, case: str) -> None:
    kw: dict = {}
    if case == "k_is_d_sae":
        if architecture in THRESHOLDED:
            pytest.skip("no k")
        kw = {"k": D_SAE, **({"k": 1} if architecture == "groupmax" else {})}
    if case == "standardize":
        kw = {"standardize": True}
    if case == "skip":
        kw = {"hook": "a", "hook_out": "b", "d_out": 7, "skip": True}
    sae = make(architecture, **kw)
    x = rows(1 if case == "batch_1" else 24)
    if case == "silent_latent":  # latent 5 never fires, latent 6 fires everywhere
        with torch.no_grad():
            bias = sae.b_gate if isinstance(sae, GatedSAE) else sae.b_enc
            bias[5], bias[6] = -100.0, 100.0
    target = rows(len(x), 7, seed=3) if case == "skip" else None
    assert_paths_agree(sae, x, LossContext(dead=some_dead()), target)


@pytest.mark.parametrize(
    "options",
    [
        {"jumprelu_sparsity_loss": "tanh"},
        {"pre_act_loss_coefficient": 0.7},
        {"jumprelu_bandwidth": 0.5},  # a wide kernel: many pairs below θ carry θ's gradient
    ],
)
def test_jumprelu_losses_equal_the_dense_path(options: dict) -> None:
    sae = make("jumprelu", **options)
    assert_paths_agree(sae, rows(32), LossContext(dead=some_dead()))


@pytest.mark.parametrize("architecture", THRESHOLDED)
def test_dense_above_the_crossover_density(architecture: str) -> None:
    sae = make(architecture)
    x = rows(32)
    with torch.no_grad():
        pre = sae.pre_acts(x)
        density = float(sae.select(pre).latents.numel()) / pre.numel()  # type: ignore[union-attr]
        sae.sparse_density = density * 0.99
        assert sae.select(pre) is None
        sae.sparse_density = density
        assert sae.select(pre) is not None


def test_p_anneal_below_p_1_equals_the_dense_path() -> None:
    """At p = 0.2 the zeros of the padded pairs must add no gradient (p·0^(p−1) is infinite)."""
    sae = make("p_anneal")
    x = rows(24)
    assert_paths_agree(sae, x, LossContext(step=99, steps=100))
    step(sae, x, True, LossContext(step=99, steps=100))
    assert all(bool(p.grad.isfinite().all()) for p in sae.parameters() if p.grad is not None)


def test_jumprelu_crossover_counts_the_latents_that_fire() -> None:
    """The pairs just below θ (read for θ's gradient) do not count towards the density."""
    sae = make("jumprelu", jumprelu_bandwidth=0.5)
    with torch.no_grad():
        pre = sae.pre_acts(rows(32))
        firing = float((pre > sae.threshold).float().mean())
        sae.sparse_density = firing
        active = sae.select(pre)
        assert active is not None and len(active) > firing * pre.numel()
        sae.sparse_density = firing * 0.99
        assert sae.select(pre) is None


@pytest.mark.parametrize("architecture", ["batchtopk", "feature_choice"])
def test_inference_with_thresholds_equals_the_dense_path(architecture: str) -> None:
    sae = make(architecture).eval()
    with torch.no_grad():
        sae.threshold.fill_(0.8)
        x = rows(16)
        sparse = sae(x)
        sae.sparse_path = False
        dense = sae(x)
    torch.testing.assert_close(sparse, dense)


def test_training_runs_end_equal() -> None:
    """Eight trainer steps (AuxK on: latents die after 64 inputs) leave equal weights."""
    sparse = make("topk")
    dense = copy.deepcopy(sparse)
    dense.sparse_path = False
    cfg = TrainConfig(steps=8, batch_size=32, dead_after_tokens=64, progress=False)
    trainer = Trainer([sparse, dense], cfg)
    data = [rows(32, seed=s) * 3 for s in range(8)]
    trainer.initialise(data[0])
    for x in data:
        logs = trainer.train_step(x)
    assert logs["0"]["dead_fraction"] > 0, "AuxK never ran"
    assert logs["0"]["auxk"] > 0
    for (name, p), q in zip(sparse.named_parameters(), dense.parameters(), strict=True):
        torch.testing.assert_close(p, q, msg=name)
    torch.testing.assert_close(trainer.runs[0].since_fired, trainer.runs[1].since_fired)


# --- the mechanism ----------------------------------------------------------------------------


def random_active(batch: int = 9, seed: int = 0) -> Active:
    """Distinct pairs, some rows empty."""
    mask = torch.rand(batch, D_SAE, generator=torch.Generator().manual_seed(seed)) < 0.1
    mask[2] = False
    return Active.from_mask(mask)


def per_row_active(batch: int = 9, width: int = 5, seed: int = 0) -> Active:
    """``width`` distinct latents in every row, as TopK's."""
    scores = torch.rand(batch, D_SAE, generator=torch.Generator().manual_seed(seed))
    return Active.per_row(scores.topk(width, dim=-1).indices, D_SAE)


ACTIVES = {"ragged": random_active, "per_row": per_row_active}


@pytest.mark.parametrize("layout", ACTIVES)
def test_read_is_the_dense_tensor_at_each_pair(layout: str) -> None:
    active = ACTIVES[layout]()
    dense = torch.randn(active.batch, D_SAE, dtype=torch.float64)
    expected = [float(dense[r, j]) for r, j in zip(active.rows, active.latents, strict=True)]
    assert active.read(dense).tolist() == expected
    assert active.read(dense.T.contiguous().T).tolist() == expected  # any strides


@pytest.mark.parametrize("layout", ACTIVES)
@pytest.mark.parametrize("activation", [torch.tanh, torch.relu], ids=["tanh", "relu"])
def test_read_and_decode_pass_gradcheck(activation, layout: str) -> None:
    """relu: about half the values and their gradients are 0, which the sums drop."""
    active = ACTIVES[layout]()
    x = rows(active.batch).requires_grad_()
    w_enc = torch.randn(D_IN, D_SAE, dtype=torch.float64, requires_grad=True)
    b_enc = torch.randn(D_SAE, dtype=torch.float64, requires_grad=True)
    b_dec = torch.randn(D_IN, dtype=torch.float64, requires_grad=True)
    w_dec = torch.randn(D_SAE, 7, dtype=torch.float64, requires_grad=True)

    def read_then_decode(x, w_enc, b_enc, b_dec, w_dec):
        pre = (x - b_dec) @ w_enc + b_enc
        encoding = Encoding.sparse(pre, x, w_enc, b_enc, b_dec)
        return encoding.decode(activation(encoding.at(active)), active, w_dec)

    assert torch.autograd.gradcheck(read_then_decode, (x, w_enc, b_enc, b_dec, w_dec))


def test_pairs_of_weight_zero_are_dropped_only_when_many() -> None:
    active = random_active(batch=40)
    weights = torch.randn(len(active), dtype=torch.float64)
    few = weights.clone()
    few[0] = 0
    assert active.without_zeros(few)[0] is active
    many = weights.relu()
    kept, kept_weights = active.without_zeros(many)
    assert len(kept) == int((many != 0).sum()) and bool((kept_weights != 0).all())
    table = torch.randn(D_SAE, 5, dtype=torch.float64)
    torch.testing.assert_close(row_sum(table, kept, kept_weights), row_sum(table, active, many))


def test_a_subset_groups_its_pairs_by_latent_as_a_sort_would() -> None:
    active = random_active(batch=40)
    keep = torch.rand(len(active), generator=torch.Generator().manual_seed(1)) < 0.5
    subset = active.subset(keep)
    fresh = Active.row_major(subset.rows, subset.latents, subset.batch, D_SAE)
    for derived, sorted_ in zip(subset.by_latent(), fresh.by_latent(), strict=True):
        assert derived.tolist() == sorted_.tolist()


@pytest.mark.parametrize(
    ("rows", "count", "kind"),
    [
        (1000, 5, "normal"),
        (1037, 1, "normal"),
        (997, 7, "ties"),
        (400, 5, "negative"),
        (1000, 5, "bf16"),
        (30, 4, "normal"),
    ],
)
def test_top_per_column_holds_each_columns_largest_entries(rows: int, count: int, kind: str):
    gen = torch.Generator().manual_seed(rows)
    pre = torch.randn(rows, 37, generator=gen, dtype=torch.float64)
    pre = {
        "ties": pre.mul(2).round(),  # few distinct values: ties at the count-th largest
        "negative": pre - 10,  # bounds below 0 compare as floats
        "bf16": pre.bfloat16(),
    }.get(kind, pre)
    top = top_per_column(pre, count)
    assert top.shape == (count, 37) and top.dtype == pre.dtype
    expected = pre.sort(dim=0, descending=True).values[:count]  # brute force
    assert torch.equal(top.sort(dim=0, descending=True).values, expected)


def test_a_second_read_of_the_same_pairs_shares_the_first() -> None:
    """Gated reads the open gates twice (codes and penalty): one tensor, so one backward."""
    x = rows(6)
    w_enc = torch.randn(D_IN, D_SAE, dtype=torch.float64, requires_grad=True)
    encoding = Encoding.sparse(x @ w_enc, x, w_enc, None, None)
    active = random_active(batch=6)
    first = encoding.at(active)
    assert encoding.at(active) is first
    assert encoding.at(random_active(batch=6, seed=5)) is not first
    (first.sum() + encoding.at(active).pow(2).sum()).backward()
    dense = (x @ w_enc)[active.rows, active.latents]
    expected = torch.autograd.grad(dense.sum() + dense.pow(2).sum(), w_enc)[0]
    torch.testing.assert_close(w_enc.grad, expected)


def test_codes_pad_rows_of_different_lengths() -> None:
    active = random_active()
    values = torch.rand(len(active), dtype=torch.float64) + 0.5
    dense = torch.zeros(active.batch, D_SAE, dtype=torch.float64)
    dense[active.rows, active.latents] = values
    codes = active.codes(values)
    assert codes.values.shape[1] == int(active.crow.diff().max())
    torch.testing.assert_close(codes.dense(), dense)
    assert codes.active().tolist() == (dense != 0).sum(-1).tolist()
    assert codes.fire_counts().tolist() == (dense != 0).sum(0).tolist()


def test_above_holds_every_entry_over_a_finer_threshold_and_no_more_than_one_step_below() -> None:
    gen = torch.Generator().manual_seed(0)
    pre = torch.randn(64, D_SAE, generator=gen).bfloat16()
    threshold = torch.randn(D_SAE, generator=gen) * 0.5
    threshold[:8] = pre[0, :8].float()  # thresholds on bf16 values: strictly above them
    mask, exact = above(pre, threshold), pre.float() > threshold
    assert bool(mask[exact].all()), "a superset of the exact test"
    rounded_down = torch.where(  # the largest bf16 value at or below each threshold
        threshold.bfloat16().float() > threshold,
        threshold.bfloat16().nextafter(torch.tensor(-float("inf")).bfloat16()).float(),
        threshold.bfloat16().float(),
    )
    assert torch.equal(mask, pre.float() > rounded_down)
    assert torch.equal(above(pre.float(), threshold), exact), "exact in one dtype"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_above_non_negative_thresholds_compares_bits_exactly_as_floats(dtype) -> None:
    """Thresholds ≥ 0 (per latent, or a scalar; > 0 for ≥) take the integer comparison of bit
    patterns: on entries equal to the thresholds, ±0, negatives and infinities it is the float
    comparison, and so is the float comparison it falls back to."""
    gen = torch.Generator().manual_seed(0)
    pre = torch.randn(64, D_SAE, generator=gen).to(dtype)
    threshold = (torch.randn(D_SAE, generator=gen).abs() * 0.5).to(dtype)
    threshold[:4] = 0.0
    pre[0] = threshold  # equal: > False, ≥ True
    pre[1, :8] = torch.tensor([0.0, -0.0, float("inf"), float("-inf")] * 2, dtype=dtype)
    zeros = torch.tensor([0.0, -0.0], dtype=dtype)
    for t in (threshold, threshold[7], threshold[4:].min(), zeros[0], zeros[1]):
        assert torch.equal(above(pre, t), pre > t)
        assert torch.equal(above(pre, t, or_equal=True), pre >= t)


def test_bf16_codes_over_float32_weights_sum_in_bf16_with_float32_gradients() -> None:
    """Autocast's case: the sums over pairs run in the codes' dtype, as autocast's products do,
    rounded once (embedding_bag accumulates in float32); the weights' gradients come back in
    their own dtype, within bf16 rounding of the float64 ones."""
    active = random_active(batch=64)
    x = torch.randn(64, D_IN)
    w_enc, w_dec = torch.randn(D_IN, D_SAE), torch.randn(D_SAE, 7)
    upstream = torch.randn(64, 7)

    def run(dtype: torch.dtype, weights_dtype: torch.dtype):
        enc, dec = (w.to(weights_dtype, copy=True).requires_grad_() for w in (w_enc, w_dec))
        pre = (x.to(weights_dtype) @ enc).to(dtype)
        encoding = Encoding.sparse(pre, x.to(weights_dtype), enc, None, None)
        out = encoding.decode(encoding.at(active).relu(), active, dec)
        (out.to(upstream.dtype) * upstream).sum().backward()
        return out, enc.grad, dec.grad

    out, grad_enc, grad_dec = (t.detach() for t in run(torch.bfloat16, torch.float32))
    exact = [t.detach() for t in run(torch.float64, torch.float64)]
    assert out.dtype == torch.bfloat16 and grad_enc.dtype == grad_dec.dtype == torch.float32
    for got, want in zip((out, grad_enc, grad_dec), exact, strict=True):
        error = float((got.double() - want).norm() / want.norm())
        assert 0 < error < 2e-2, error  # bf16 really ran (its inputs rounded too), and agrees


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_sampled_dot_reads_the_product_at_the_pairs(dtype: torch.dtype) -> None:
    active = random_active(batch=300)
    a, b = torch.randn(300, 16, dtype=dtype), torch.randn(D_SAE, 16, dtype=dtype)
    expected = (a.double() @ b.double().T)[active.rows, active.latents]
    torch.testing.assert_close(sampled_dot(a, b, active).double(), expected, rtol=0.02, atol=0.1)


@pytest.mark.parametrize("k", [1, 3, D_SAE])
def test_batch_topk_pairs_are_the_global_top_k(k: int) -> None:
    pre = torch.randn(20, D_SAE, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    pre[4] += 10.0  # one row holds far more than its share: the candidates must grow
    active = batch_topk_pairs(pre, k)
    kept = torch.zeros_like(pre)
    kept[active.rows, active.latents] = pre[active.rows, active.latents].relu()
    torch.testing.assert_close(kept, batch_topk_codes(pre, k))
    assert len(active) == int((kept > 0).sum()), "the pairs are the positive codes"


# --- batch-level selections over data-parallel processes ---------------------------------------


def identity(tensor: torch.Tensor, op: str) -> torch.Tensor:
    """A one-process reduction that is not ``local``: selections take their multi-process path."""
    return tensor


class ThreadRanks:
    """``size`` threads standing in for processes: ``reduce(rank)`` all-reduces their tensors."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.barrier = threading.Barrier(size)
        self.slots: list[torch.Tensor | None] = [None] * size

    def reduce(self, rank: int):
        def all_reduce(tensor: torch.Tensor, op: str) -> torch.Tensor:
            self.slots[rank] = tensor.clone()
            self.barrier.wait()
            stacked = torch.stack(self.slots)  # type: ignore[arg-type]
            self.barrier.wait()  # all have read before anyone writes again
            reduced = {"sum": stacked.sum(0), "max": stacked.amax(0), "min": stacked.amin(0)}[op]
            return tensor.copy_(reduced)

        return all_reduce

    def run(self, select, parts: list[torch.Tensor]) -> list:
        out: list = [None] * self.size

        def work(rank: int) -> None:
            out[rank] = select(parts[rank], self.reduce(rank))

        threads = [threading.Thread(target=work, args=(r,)) for r in range(self.size)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return out


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_kth_largest_by_bisection_is_the_top_k(dtype: torch.dtype) -> None:
    values = torch.randn(300, 5, generator=torch.Generator().manual_seed(0)).to(dtype)
    values[:, 2] = values[:, 2].round()  # ties
    values[:, 4] = -values[:, 4].abs()  # nothing positive: 0
    for k in (1, 7, 150, 300):
        expected = values.topk(k, dim=0).values[-1].clamp_min(0)
        assert torch.equal(kth_largest(values, k, identity), expected)
        assert torch.equal(kth_largest(values, k), expected)


def selections(architecture: str):
    """(name, select(pre, across_ranks) -> mask [n, d_sae]) of a batch-level selection."""
    if architecture == "batchtopk":
        return lambda pre, reduce: batch_topk_pairs(pre, K, reduce)
    thresholds = lambda pre, reduce: feature_choice_thresholds(pre, K, reduce)  # noqa: E731
    return lambda pre, reduce: Active.from_mask((pre > 0) & (pre >= thresholds(pre, reduce)))


def pairs_mask(active: Active) -> torch.Tensor:
    mask = torch.zeros(active.batch, active.d_sae, dtype=torch.bool)
    mask[active.rows, active.latents] = True
    return mask


@pytest.mark.parametrize("architecture", ["batchtopk", "feature_choice"])
@pytest.mark.parametrize("processes", [2, 3])
def test_batch_selections_over_processes_equal_one_process(
    architecture: str, processes: int
) -> None:
    pre = torch.randn(24, D_SAE, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    pre[5] += 4.0  # a row (BatchTopK) and latents (Feature Choice) far above their share
    pre[:, 3] += 3.0
    select = selections(architecture)
    whole = pairs_mask(select(pre, local))
    if architecture == "feature_choice":
        assert torch.equal(whole, feature_choice_mask(pre, K) & (pre > 0))
    else:
        assert torch.equal(whole, batch_topk_codes(pre, K) > 0)
    parts = ThreadRanks(processes).run(select, list(pre.chunk(processes)))
    assert torch.equal(torch.cat([pairs_mask(p) for p in parts]), whole)


@pytest.mark.parametrize("bound", [1e9, 2.0, 1e-3, 0.0, -1.0])
def test_batch_topk_pairs_are_exact_whatever_the_sampled_bound(monkeypatch, bound: float) -> None:
    """The sampled bound only decides which entries are candidates: too high (too few), too low,
    or none at all, the pairs are still the global top k·N."""
    monkeypatch.setattr(batchtopk, "sampled_lower_bound", lambda pre, _: torch.tensor(bound))
    pre = torch.randn(20, D_SAE, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    for processes in (1, 2):
        parts = ThreadRanks(processes).run(
            lambda p, reduce: batch_topk_pairs(p, K, reduce), list(pre.chunk(processes))
        )
        mask = torch.cat([pairs_mask(p) for p in parts])
        assert torch.equal(mask, batch_topk_codes(pre, K) > 0)


def test_sampled_lower_bound_is_reached_by_the_fraction_and_not_much_more() -> None:
    """On 400 × 1000 entries (sampled at stride 7: 6 would share factors with 1000) whose columns
    differ in scale, at least the fraction reach the bound, and at most twice it (the margin is
    6σ + 16 entries of the sample's ~450-11,000 expected)."""
    g = torch.Generator().manual_seed(0)
    pre = torch.randn(400, 1000, generator=g) * torch.linspace(0.1, 3.0, 1000)
    for fraction in (0.002, 0.01, 0.1):
        reached = int((pre >= batchtopk.sampled_lower_bound(pre, fraction)).sum())
        assert fraction * pre.numel() <= reached <= 2 * fraction * pre.numel()
