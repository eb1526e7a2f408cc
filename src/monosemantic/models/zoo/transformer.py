"""Small transformers the project trains itself on Shakespeare: the subjects of the LM analyses.

A pre-norm decoder (nanoGPT-like, but RMSNorm and no biases anywhere, as in the language models
of Pearce et al. 2024, arXiv 2410.08417):

    h_0 = embed(ids) + pos(positions)
    h   = h + attn(attn_norm(h));  h = h + mlp(mlp_norm(h))     per block
    logits = unembed(norm(h))

with learned positions and untied embeddings (a one-layer model needs an asymmetric bigram
table). The MLP is ``relu`` or ``gelu`` (``down(σ(up x))``, 2·d·h weights) or ``bilinear``
(``P((W x) ⊙ (V x))``, 3·d·h weights, ``BilinearMLP``). Default widths: relu 512 neurons (as in
Bricken et al. 2023, "Towards Monosemanticity"), bilinear 4·d_model, gelu 6·d_model: the GELU
MLP then has exactly as many weights as the bilinear one.

Hook points: ``blocks.0.mlp:input`` (the normalised residual the MLP reads, the x of the
bilinear form), ``blocks.0.mlp:output``, ``blocks.0:output`` (the residual stream), ``norm:output``.
The forward takes ``input_ids`` [batch, ctx] and returns logits [batch, ctx, vocab].

Saved as a folder: ``model.safetensors`` + ``config.json`` (config and metrics) +
``tokenizer.json``; loading reads safetensors and JSON only.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn
from tqdm.auto import tqdm

from monosemantic.config import ConfigError, check
from monosemantic.files import atomic_write, read_safetensors, write_json
from monosemantic.models.layers import BilinearMLP
from monosemantic.models.zoo import SHIPPED
from monosemantic.models.zoo.tokenizer import (
    TOKENIZER_FILE,
    load_tokenizer,
    save_tokenizer,
    train_tokenizer,
)
from monosemantic.runtime import mixed_precision

MLP_TYPES = ("relu", "gelu", "bilinear")
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


@dataclass
class LMConfig:
    """A zoo language model and how it is trained. Validated at construction."""

    mlp: str = "bilinear"
    """MLP type: relu, gelu or bilinear."""
    n_layers: int = 1
    d_model: int = 128
    n_heads: int = 4
    d_mlp: int = 0
    """MLP hidden width; 0: relu 512, bilinear 4·d_model, gelu 6·d_model (= bilinear's weights)."""
    context_size: int = 128
    """Tokens per training window, BOS included."""
    vocab_size: int = 4096
    """Size of the byte-level BPE trained on the training plays."""
    val_documents: int = 2
    """The last this many plays (by file name) are held out for validation."""
    steps: int = 1500
    batch_size: int = 32
    """Windows per step."""
    lr: float = 3e-3
    """Peak AdamW learning rate: linear warmup, then cosine decay to lr / 10."""
    warmup_steps: int = 100
    weight_decay: float = 0.1
    """AdamW weight decay on matrices (not on norms)."""
    grad_clip: float = 1.0
    bf16: bool = True
    """Matmuls in bfloat16 autocast while training (about 2× faster on CPUs with AVX-512 BF16)."""
    seed: int = 0
    """Seeds the initial weights and the batch order."""

    def __post_init__(self) -> None:
        check(self.mlp in MLP_TYPES, "mlp", self.mlp, f"one of {MLP_TYPES}")
        positive = ("n_layers", "d_model", "n_heads", "context_size", "steps", "batch_size")
        for name in positive:
            value = getattr(self, name)
            check(isinstance(value, int) and value > 0, name, value, "a positive integer")
        check(
            self.d_model % self.n_heads == 0,
            "n_heads",
            self.n_heads,
            f"a divisor of d_model={self.d_model}",
        )
        check(self.d_mlp >= 0, "d_mlp", self.d_mlp, ">= 0 (0: the default for the MLP type)")
        check(self.context_size >= 2, "context_size", self.context_size, ">= 2 (BOS + a token)")
        check(self.vocab_size > 258, "vocab_size", self.vocab_size, "> 258 (bytes + specials)")
        check(self.val_documents >= 1, "val_documents", self.val_documents, ">= 1")
        check(self.lr > 0, "lr", self.lr, "> 0")
        check(
            0 <= self.warmup_steps < self.steps,
            "warmup_steps",
            self.warmup_steps,
            f"in 0..steps-1 (steps={self.steps})",
        )
        check(self.weight_decay >= 0, "weight_decay", self.weight_decay, ">= 0")
        check(self.grad_clip > 0, "grad_clip", self.grad_clip, "> 0")

    @property
    def hidden(self) -> int:
        """The MLP hidden width after applying the default for the MLP type."""
        if self.d_mlp:
            return self.d_mlp
        return {"relu": 512, "bilinear": 4 * self.d_model, "gelu": 6 * self.d_model}[self.mlp]

    @property
    def name(self) -> str:
        """The zoo folder name, e.g. ``shakespeare-bilinear-l1-d128-h512-s3000-seed0``."""
        return (
            f"shakespeare-{self.mlp}-l{self.n_layers}-d{self.d_model}-h{self.hidden}"
            f"-s{self.steps}-seed{self.seed}"
        )

    def lr_at(self, step: int) -> float:
        """Linear warmup over ``warmup_steps``, then cosine from lr to lr / 10."""
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        progress = (step - self.warmup_steps) / max(1, self.steps - self.warmup_steps)
        return self.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * progress)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LMConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown LM config fields {unknown}; valid: {sorted(known)}")
        return cls(**data)


class MLP(nn.Module):
    """down(σ(up x)) without biases; x: [..., d_model], hidden ``d_hidden``."""

    def __init__(self, d_model: int, d_hidden: int, act: str) -> None:
        super().__init__()
        self.up = nn.Linear(d_model, d_hidden, bias=False)
        self.act = nn.ReLU() if act == "relu" else nn.GELU()
        self.down = nn.Linear(d_hidden, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.act(self.up(x)))


class Attention(nn.Module):
    """Causal multi-head self-attention without biases; x: [batch, ctx, d_model]."""

    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.n_heads, d // self.n_heads).unbind(2)
        y = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True
        )
        return self.out(y.transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    """One pre-norm residual block: attention then MLP. x: [batch, ctx, d_model]."""

    def __init__(self, cfg: LMConfig) -> None:
        super().__init__()
        self.attn_norm = nn.RMSNorm(cfg.d_model)
        self.attn = Attention(cfg.d_model, cfg.n_heads)
        self.mlp_norm = nn.RMSNorm(cfg.d_model)
        self.mlp: nn.Module = (
            BilinearMLP(cfg.d_model, cfg.hidden)
            if cfg.mlp == "bilinear"
            else MLP(cfg.d_model, cfg.hidden, cfg.mlp)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x))
        return x + self.mlp(self.mlp_norm(x))


class TinyLM(nn.Module):
    """The zoo transformer; see the module docstring. ``forward(input_ids [b, t]) -> [b, t, V]``."""

    def __init__(self, cfg: LMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos = nn.Embedding(cfg.context_size, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = nn.RMSNorm(cfg.d_model)
        self.unembed = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.apply(self._init)

    def _init(self, module: nn.Module) -> None:
        # GPT-2's scheme: N(0, 0.02), residual-writing projections shrunk by depth.
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        for name in ("out", "down"):
            layer = getattr(module, name, None)
            if isinstance(layer, nn.Linear):
                nn.init.normal_(layer.weight, std=0.02 / math.sqrt(2 * self.cfg.n_layers))

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if input_ids.ndim != 2 or input_ids.shape[1] > self.cfg.context_size:
            raise ValueError(
                f"input_ids must be [batch, ctx] with ctx <= {self.cfg.context_size}; "
                f"got shape {tuple(input_ids.shape)}"
            )
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        h = self.embed(input_ids) + self.pos(positions)
        for block in self.blocks:
            h = block(h)
        return self.unembed(self.norm(h))


def build_lm(cfg: LMConfig) -> TinyLM:
    """A freshly initialised model; its weights depend on ``cfg.seed`` only."""
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        return TinyLM(cfg)


def mlp_weight_count(model: TinyLM) -> int:
    """Weights in all MLPs (the quantity the relu/gelu/bilinear comparison holds equal)."""
    return sum(p.numel() for name, p in model.named_parameters() if ".mlp." in name)


@dataclass
class Corpus:
    """Tokenised Shakespeare: training and validation windows [n, context_size], and the BPE."""

    train: torch.Tensor
    val: torch.Tensor
    tokenizer: Any


def shakespeare_corpus(
    cfg: LMConfig, texts: list[str] | None = None, tokenizer: Any = None
) -> Corpus:
    """Train the BPE on all but the last ``val_documents`` plays, then cut both splits.

    ``texts`` overrides the corpus (tests pass a few sentences); a given ``tokenizer`` (a saved
    model's) is used instead of training one.
    """
    from monosemantic.data.text import load_texts
    from monosemantic.data.tokens import token_windows

    texts = load_texts("shakespeare") if texts is None else texts
    if len(texts) <= cfg.val_documents:
        raise ValueError(
            f"{len(texts)} documents leave none for training with val_documents="
            f"{cfg.val_documents}; lower val_documents"
        )
    train_texts, val_texts = texts[: -cfg.val_documents], texts[-cfg.val_documents :]
    if tokenizer is None:
        tokenizer = train_tokenizer(train_texts, cfg.vocab_size)
    return Corpus(
        train=token_windows(train_texts, tokenizer, cfg.context_size),
        val=token_windows(val_texts, tokenizer, cfg.context_size),
        tokenizer=tokenizer,
    )


def lm_loss(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy (nats) of windows ids: [batch, ctx]."""
    logits = model(input_ids=ids)
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten())


@torch.no_grad()
def evaluate_lm(model: nn.Module, windows: torch.Tensor, batch_size: int = 64) -> float:
    """Mean next-token loss (nats per token) over all windows [n, ctx], in float32."""
    was_training = model.training
    model.eval()
    total = 0.0
    for start in range(0, len(windows), batch_size):
        batch = windows[start : start + batch_size]
        total += float(lm_loss(model, batch)) * len(batch)
    model.train(was_training)
    return total / len(windows)


def train_lm(
    cfg: LMConfig,
    corpus: Corpus,
    *,
    log: Path | None = None,
    eval_every: int = 500,
    progress: bool = True,
) -> tuple[TinyLM, dict[str, Any]]:
    """Train from ``cfg.seed``; returns the model and metrics (losses in nats/token, seconds).

    Batches are drawn without replacement from a seeded permutation of the training windows,
    re-shuffled each epoch. ``log`` receives a JSON line every ``eval_every`` steps.
    """
    if corpus.train.shape[1] != cfg.context_size:
        raise ValueError(
            f"corpus windows hold {corpus.train.shape[1]} tokens but context_size="
            f"{cfg.context_size}; cut the corpus with the same config"
        )
    model = build_lm(cfg)
    decay = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0}],
        lr=cfg.lr,
        betas=(0.9, 0.95),
    )
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    order = torch.randperm(len(corpus.train), generator=gen)
    cursor = 0
    start, cpu_start = time.perf_counter(), time.process_time()
    model.train()
    recent: list[float] = []
    for step in tqdm(range(cfg.steps), desc=cfg.name, disable=not progress):
        if cursor + cfg.batch_size > len(order):
            order, cursor = torch.randperm(len(corpus.train), generator=gen), 0
        batch = corpus.train[order[cursor : cursor + cfg.batch_size]]
        cursor += cfg.batch_size
        for group in opt.param_groups:
            group["lr"] = cfg.lr_at(step)
        with mixed_precision("cpu", "bfloat16" if cfg.bf16 else None):
            loss = lm_loss(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        recent = [*recent[-99:], loss.item()]
        if log is not None and ((step + 1) % eval_every == 0 or step + 1 == cfg.steps):
            row = {"step": step + 1, "train_loss": sum(recent) / len(recent)}
            row["val_loss"] = evaluate_lm(model, corpus.val)
            row["seconds"] = time.perf_counter() - start
            row["cpu_seconds"] = time.process_time() - cpu_start
            with log.open("a") as f:
                f.write(json.dumps(row) + "\n")
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    model.eval()
    metrics = {
        "val_loss": evaluate_lm(model, corpus.val),
        "train_loss_last100": sum(recent) / len(recent),
        "train_seconds": seconds,
        "train_cpu_seconds": cpu_seconds,
        "torch_threads": torch.get_num_threads(),
        "train_windows": len(corpus.train),
        "val_windows": len(corpus.val),
        "epochs": cfg.steps * cfg.batch_size / len(corpus.train),
        "mlp_weights": mlp_weight_count(model),
        "weights": sum(p.numel() for p in model.parameters()),
    }
    return model, metrics


def save_lm(
    model: TinyLM,
    tokenizer: Any,
    folder: Path,
    metrics: dict[str, Any] | None = None,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Write ``model.safetensors`` (weights in ``dtype``), ``tokenizer.json``, then
    ``config.json`` into ``folder``."""
    folder = Path(folder)
    state = {k: v.detach().to(dtype).contiguous() for k, v in model.state_dict().items()}
    atomic_write(folder / WEIGHTS_FILE, lambda p: save_file(state, str(p)))
    save_tokenizer(tokenizer, folder)
    record = {"config": asdict(model.cfg), "metrics": metrics or {}, "dtype": str(dtype)}
    write_json(folder / CONFIG_FILE, record)
    return folder


def is_zoo_folder(folder: str | Path) -> bool:
    """Whether ``folder`` holds a model ``save_lm`` wrote (not a Hugging Face model folder)."""
    folder = Path(folder)
    needed = (WEIGHTS_FILE, CONFIG_FILE, TOKENIZER_FILE)  # a classifier's folder has none
    if not all((folder / name).is_file() for name in needed):
        return False
    try:
        record = json.loads((folder / CONFIG_FILE).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    return isinstance(record, dict) and isinstance(record.get("config"), dict)


def load_lm(folder: str | Path) -> tuple[TinyLM, dict[str, Any]]:
    """The model saved in ``folder`` (float32, eval mode) and its record (config, metrics).

    Reads safetensors and JSON only; the tokenizer is ``tokenizer.load_tokenizer(folder)``.
    """
    folder = Path(folder)
    if not (folder / WEIGHTS_FILE).is_file() or not (folder / CONFIG_FILE).is_file():
        raise FileNotFoundError(
            f"{folder} holds no zoo language model ({WEIGHTS_FILE} + {CONFIG_FILE}); "
            "train one with `monosemantic zoo train lm`"
        )
    record = json.loads((folder / CONFIG_FILE).read_text())
    model = TinyLM(LMConfig.from_dict(record["config"]))
    state = {k: v.float() for k, v in read_safetensors(folder / WEIGHTS_FILE).items()}
    model.load_state_dict(state)
    return model.eval(), record


def zoo_folder(cfg: LMConfig, root: Path | None = None) -> Path:
    """Where the zoo keeps the model of ``cfg``: ``root/name`` (default the user cache)."""
    from monosemantic.runtime import cache_dir

    return (root or cache_dir("zoo")) / cfg.name


def find_lm(name: str, root: Path | None = None) -> Path:
    """The folder of the zoo model called ``name``: the user's zoo (``root``, default the user
    cache), else the one shipped in the package."""
    from monosemantic.runtime import cache_dir

    mine = (root or cache_dir("zoo")) / name
    for folder in (mine, SHIPPED / name):
        if is_zoo_folder(folder):
            return folder
    shipped = sorted(p.name for p in SHIPPED.iterdir() if is_zoo_folder(p))
    raise FileNotFoundError(
        f"no zoo language model {name!r} in {mine.parent} or shipped (shipped: {shipped}); "
        "train it with `monosemantic zoo train lm` (the name spells its settings)"
    )


def lm_folder(name: str) -> Path:
    """A zoo model's folder from ``zoo:NAME`` (found by ``find_lm``) or a path."""
    return find_lm(name.removeprefix("zoo:")) if name.startswith("zoo:") else Path(name)


def get_lm(
    cfg: LMConfig, root: Path | None = None, corpus_fn: Callable[[LMConfig], Corpus] | None = None
) -> tuple[TinyLM, Any, dict[str, Any]]:
    """(model, tokenizer, record) of ``cfg`` from the zoo or the shipped models, else trained
    and saved in the zoo."""
    try:
        folder = find_lm(cfg.name, root)
    except FileNotFoundError:
        folder = zoo_folder(cfg, root)
        corpus = (corpus_fn or shakespeare_corpus)(cfg)
        model, metrics = train_lm(cfg, corpus)
        save_lm(model, corpus.tokenizer, folder, metrics)
    model, record = load_lm(folder)
    return model, load_tokenizer(folder), record
