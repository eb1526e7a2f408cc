"""SwiGLU → bilinear: a pretrained Llama-family language model's MLPs made exactly bilinear.

A SwiGLU MLP computes down(SiLU(gate x) ⊙ (up x)). Replacing SiLU by the identity leaves

    y = P ((W x) ⊙ (V x)),   W = gate_proj, V = up_proj, P = down_proj,

a bilinear layer with the pretrained weights (Pearce et al. 2024 fine-tune such conversions back
to the original's loss; recovery is measured in docs/bilinear-llm.md). The converted MLP keeps its
Hugging Face module: only ``act_fn`` changes, so every hook point stays where it was. With every
layer converted the config says ``hidden_act = "linear"`` (transformers' identity), and the saved
folder loads with plain ``transformers``, no code of ours. With some layers converted the folder
also holds ``bilinear_layers.json`` (``{"layers": [...]}``), which ``models.hf.load_model``
applies; plain ``transformers`` would load those layers with their SiLU back.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle
from tqdm.auto import tqdm

from monosemantic.files import write_json
from monosemantic.models.layers import BilinearMLP

GATED_PARTS = ("gate_proj", "up_proj", "down_proj", "act_fn")
LAYERS_FILE = "bilinear_layers.json"


def gated_mlps(model: nn.Module) -> list[nn.Module]:
    """The model's gated MLPs in layer order: modules with gate_proj, up_proj, down_proj and an
    act_fn (Llama, Mistral, Qwen, SmolLM2 …)."""
    found = [m for m in model.modules() if all(hasattr(m, part) for part in GATED_PARTS)]
    if not found:
        raise ValueError(
            f"{type(model).__name__} has no gated MLP (modules with {', '.join(GATED_PARTS)}): "
            "conversion to bilinear needs a SwiGLU-family model such as Llama or SmolLM2"
        )
    return found


def is_identity(act_fn: Any) -> bool:
    """Whether a gate activation is the identity: ours (``nn.Identity``) or the one plain
    transformers builds for ``hidden_act = "linear"``, checked on values of both signs."""
    probe = torch.linspace(-4.0, 4.0, 17)
    with torch.no_grad():
        return torch.equal(act_fn(probe), probe)


def convert_to_bilinear(model: nn.Module, layers: Sequence[int] | None = None) -> list[int]:
    """Make the MLPs of ``layers`` (default all) bilinear in place; returns the converted layer
    indices. With every MLP converted, sets ``config.hidden_act = "linear"``."""
    mlps = gated_mlps(model)
    chosen = list(range(len(mlps))) if layers is None else sorted(set(layers))
    bad = [i for i in chosen if not 0 <= i < len(mlps)]
    if bad:
        raise ValueError(
            f"layers {bad} do not exist: the model has {len(mlps)} MLPs (0..{len(mlps) - 1})"
        )
    for i in chosen:
        mlps[i].act_fn = nn.Identity()
    config = getattr(model, "config", None)
    if config is not None and all(is_identity(m.act_fn) for m in mlps):
        config.hidden_act = "linear"
    return chosen


def as_bilinear_mlp(mlp: nn.Module) -> BilinearMLP:
    """A ``BilinearMLP`` holding a converted gated MLP's weights (copied, float64-ready), for
    ``bilinear.tensor``: W = gate_proj, V = up_proj, P = down_proj."""
    if not is_identity(mlp.act_fn):
        raise ValueError(
            f"this MLP's gate is {type(mlp.act_fn).__name__}, not the identity: it is not bilinear "
            "(convert it first with `monosemantic bilinear convert`)"
        )
    gate, up, down = (getattr(mlp, name) for name in GATED_PARTS[:3])
    linears: list[nn.Linear] = [gate, up, down]
    if any(linear.bias is not None for linear in linears):
        raise ValueError("a gated MLP with biases is affine, not bilinear: not supported")
    d_hidden, d_model = gate.weight.shape
    out = BilinearMLP(d_model, d_hidden).to(gate.weight.dtype)
    with torch.no_grad():
        out.glu.proj.weight.copy_(torch.cat([gate.weight, up.weight]))
        out.out.weight.copy_(down.weight)
    return out


def converted_layers(model: nn.Module) -> list[int]:
    """The indices of the model's MLPs whose gate is the identity."""
    return [i for i, m in enumerate(gated_mlps(model)) if is_identity(m.act_fn)]


def save_converted(model: nn.Module, tokenizer: Any, out: Path) -> Path:
    """Save a converted Hugging Face model and its tokenizer as safetensors + JSON in ``out``
    (with ``bilinear_layers.json`` when only some layers are converted)."""
    out = Path(out)
    if getattr(model, "hf_quantizer", None) is not None:
        # loaded from a GGUF file: its weights are dequantized already and save as plain ones
        setattr(model, "hf_quantizer", None)  # noqa: B010 (nn.Module typing)
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    model.save_pretrained(out, safe_serialization=True)  # type: ignore[operator]
    tokenizer.save_pretrained(out)
    layers = converted_layers(model)
    if len(layers) < len(gated_mlps(model)):
        write_json(out / LAYERS_FILE, {"layers": layers})
    return out


def apply_saved_conversion(model: nn.Module, folder: Path) -> None:
    """Convert the layers a partially converted folder's ``bilinear_layers.json`` names."""
    path = Path(folder) / LAYERS_FILE
    if path.is_file():
        convert_to_bilinear(model, json.loads(path.read_text())["layers"])


def recorded_mlp_io(
    original: nn.Module, layers: list[int]
) -> tuple[dict[int, tuple[torch.Tensor, torch.Tensor]], list[RemovableHandle]]:
    """Forward hooks on the original's MLPs of ``layers`` that keep each one's latest (input,
    output), detached: (the dict they fill, the handles to remove)."""
    seen: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    sources = gated_mlps(original)

    def recorder(i: int) -> Any:
        return lambda module, args, out: seen.__setitem__(i, (args[0].detach(), out.detach()))

    return seen, [sources[i].register_forward_hook(recorder(i)) for i in layers]


@torch.no_grad()
def solve_down_projections(
    original: nn.Module,
    converted: nn.Module,
    windows: torch.Tensor,
    *,
    exclude: torch.Tensor | None = None,
    batch_windows: int = 8,
    ridge: float = 1e-6,
) -> None:
    """Set each converted MLP's down projection to the least-squares map from its bilinear hidden
    h = (W_gate x) ⊙ (W_up x) to the original MLP's output y on the same inputs x (the original's
    own), over ``windows``: P = Yᵀ H (Hᵀ H + ε I)⁻¹ in float64, ε = ``ridge`` × mean diag(Hᵀ H).
    The exact minimiser of the local loss for P given W_gate, W_up: the start of local recovery."""
    layers = converted_layers(converted)
    targets = gated_mlps(converted)
    seen, hooks = recorded_mlp_io(original, layers)
    keep = torch.ones_like(windows, dtype=torch.bool) if exclude is None else ~exclude
    grams: dict[int, torch.Tensor] = {}
    cross: dict[int, torch.Tensor] = {}
    try:
        for start in range(0, len(windows), batch_windows):
            original(windows[start : start + batch_windows])
            rows = keep[start : start + batch_windows]
            for i in layers:
                x, y = (t[rows].double() for t in seen[i])
                mlp: Any = targets[i]
                h = (x @ mlp.gate_proj.weight.double().T) * (x @ mlp.up_proj.weight.double().T)
                grams[i] = grams.get(i, 0) + h.T @ h
                cross[i] = cross.get(i, 0) + h.T @ y
    finally:
        for hook in hooks:
            hook.remove()
    for i in layers:
        gram = grams[i]
        gram += ridge * gram.diagonal().mean() * torch.eye(len(gram), dtype=gram.dtype)
        down: Any = targets[i].down_proj
        down.weight.copy_(torch.linalg.solve(gram, cross[i]).T.to(down.weight.dtype))


def train_converted_mlps(
    converted: nn.Module,
    windows: torch.Tensor,
    exclude: torch.Tensor | None,
    loss: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, float]],
    *,
    steps: int,
    batch_windows: int,
    lr: float,
    seed: int,
    desc: str,
    progress: bool,
    after_step: Callable[[int], None] | None = None,
) -> list[float]:
    """Adam on the converted MLPs' weights only, everything else frozen: each step draws
    ``batch_windows`` of ``windows`` [n, ctx] and minimises ``loss(ids, keep)`` (keep: the
    positions ``exclude`` leaves in), which returns (the loss, a number to log). Calls
    ``after_step(steps done)`` after each update (to score the model on the way). Returns the
    logged numbers, one per step."""
    mlps = gated_mlps(converted)
    converted.requires_grad_(False)
    params = [p for i in converted_layers(converted) for p in mlps[i].parameters()]
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.Adam(params, lr=lr)
    generator = torch.Generator().manual_seed(seed)
    keep = torch.ones_like(windows, dtype=torch.bool) if exclude is None else ~exclude
    logged: list[float] = []
    try:
        bar = tqdm(range(steps), desc=desc, disable=not progress)
        for step in bar:
            pick = torch.randint(len(windows), (batch_windows,), generator=generator)
            value, shown = loss(windows[pick], keep[pick])
            optimizer.zero_grad()
            value.backward()
            optimizer.step()
            logged.append(shown)
            bar.set_postfix(loss=f"{shown:.4f}")
            if after_step is not None:
                converted.requires_grad_(False)
                after_step(step + 1)
                for p in params:
                    p.requires_grad_(True)
    finally:
        converted.requires_grad_(False)
    return logged


def fit_locally(
    original: nn.Module,
    converted: nn.Module,
    windows: torch.Tensor,
    *,
    exclude: torch.Tensor | None = None,
    steps: int = 200,
    batch_windows: int = 8,
    lr: float = 1e-4,
    solve_windows: int = 256,
    seed: int = 0,
    progress: bool = False,
) -> list[float]:
    """Local recovery: each converted MLP fitted to the original MLP's outputs on the original's
    own inputs to it: first its down projection solved by least squares over the first
    ``solve_windows`` windows (``solve_down_projections``; 0 keeps the down projections), then
    ``steps`` Adam steps on all its weights minimising the fraction of variance unexplained
    (one pass of the original per step; all layers at once, their losses share no weights).
    ``windows`` [n, ctx]; ``exclude`` [n, ctx] the positions left out (BOS, with its outsized
    activations). Returns each converted layer's FVU on the last Adam batch, before its update
    (none when ``steps`` is 0)."""
    if solve_windows:
        solving = None if exclude is None else exclude[:solve_windows]
        solve_down_projections(original, converted, windows[:solve_windows], exclude=solving)
    layers = converted_layers(converted)
    targets = gated_mlps(converted)
    seen, hooks = recorded_mlp_io(original, layers)
    fvus: list[float] = []

    def fvu(ids: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, float]:
        with torch.no_grad():
            original(ids)
        losses = []
        for i in layers:
            x, y = (t[keep] for t in seen[i])
            losses.append((targets[i](x) - y).pow(2).sum() / (y - y.mean(0)).pow(2).sum())
        fvus[:] = [float(loss.detach()) for loss in losses]
        return torch.stack(losses).sum(), sum(fvus) / len(fvus)

    try:
        train_converted_mlps(
            converted,
            windows,
            exclude,
            fvu,
            steps=steps,
            batch_windows=batch_windows,
            lr=lr,
            seed=seed,
            desc="fit (mean FVU)",
            progress=progress,
        )
    finally:
        for hook in hooks:
            hook.remove()
    return fvus


def fit_globally(
    original: nn.Module,
    converted: nn.Module,
    windows: torch.Tensor,
    *,
    exclude: torch.Tensor | None = None,
    steps: int = 100,
    batch_windows: int = 8,
    lr: float = 1e-5,
    seed: int = 0,
    progress: bool = False,
    after_step: Callable[[int], None] | None = None,
) -> list[float]:
    """Global recovery: the converted MLPs' weights fine-tuned on KL(original ‖ converted) of
    the next-token distributions, through the whole model (everything else frozen), at the
    positions ``exclude`` leaves in. Returns the KL (nats per position) of each step's batch,
    before its update; ``after_step`` as in ``train_converted_mlps``."""

    def kl(ids: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, float]:
        with torch.no_grad():
            target = original(ids).logits[keep].float().log_softmax(-1)
        log_probs = converted(ids).logits[keep].float().log_softmax(-1)
        value = (target.exp() * (target - log_probs)).sum(-1).mean()
        return value, float(value.detach())

    return train_converted_mlps(
        converted,
        windows,
        exclude,
        kl,
        steps=steps,
        batch_windows=batch_windows,
        lr=lr,
        seed=seed,
        desc="fine-tune (KL)",
        progress=progress,
        after_step=after_step,
    )
