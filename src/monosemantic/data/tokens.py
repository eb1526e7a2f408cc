"""Tokenised windows: documents → one token stream → ``[n_windows, context_size]`` windows.

Documents are joined by the tokenizer's EOS token (BOS if it has none) into one stream, which is
cut into consecutive windows; with ``prepend_bos`` every window starts with BOS followed by the
next ``context_size - 1`` stream tokens, so each window looks like the start of a sequence to the
model. The tail shorter than a window is dropped.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

_BATCH_DOCUMENTS = 16
"""Documents per tokenizer call: a fast tokenizer spreads a batch over its threads."""


def token_windows(
    texts: list[str],
    tokenizer: Any,
    context_size: int,
    *,
    prepend_bos: bool = True,
    max_windows: int | None = None,
) -> torch.Tensor:
    """Token ids ``[n_windows, context_size]`` (int64) from ``texts`` with a Hugging Face tokenizer.

    Deterministic; tokenisation stops as soon as ``max_windows`` windows are in hand.
    """
    if context_size < (2 if prepend_bos else 1):
        raise ValueError(
            f"context_size={context_size} is invalid: expected >= 2 with prepend_bos "
            "(BOS plus at least one token), >= 1 without"
        )
    if max_windows is not None and max_windows < 1:
        raise ValueError(f"max_windows={max_windows} is invalid: expected None or >= 1")
    bos = tokenizer.bos_token_id
    if prepend_bos and bos is None:
        raise ValueError(
            f"{type(tokenizer).__name__} has no BOS token: pass prepend_bos=False or set "
            "tokenizer.bos_token"
        )
    sep = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else bos
    if sep is None:
        raise ValueError(
            f"{type(tokenizer).__name__} has neither an EOS nor a BOS token to separate "
            "documents: set tokenizer.eos_token"
        )
    step = context_size - 1 if prepend_bos else context_size
    wanted = None if max_windows is None else max_windows * step

    pieces: list[np.ndarray] = []
    n_tokens = 0
    for start in range(0, len(texts), _BATCH_DOCUMENTS):
        batch = texts[start : start + _BATCH_DOCUMENTS]
        # verbose=False: documents longer than model_max_length are fine, we cut them ourselves.
        ids = tokenizer(
            batch, add_special_tokens=False, return_attention_mask=False, verbose=False
        )["input_ids"]
        for doc in ids:
            if pieces:
                pieces.append(np.array([sep], dtype=np.int64))
            pieces.append(np.asarray(doc, dtype=np.int64))
            n_tokens += len(doc) + 1
        if wanted is not None and n_tokens >= wanted:
            break

    stream = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)
    n_windows = len(stream) // step
    if max_windows is not None:
        n_windows = min(n_windows, max_windows)
    if n_windows == 0:
        raise ValueError(
            f"the texts give {len(stream)} tokens, fewer than one window of {step} tokens: "
            "use more text or a smaller context_size"
        )
    windows = stream[: n_windows * step].reshape(n_windows, step)
    if prepend_bos:
        windows = np.concatenate([np.full((n_windows, 1), bos, dtype=np.int64), windows], axis=1)
    return torch.from_numpy(windows)


def excluded_positions(tokens: torch.Tensor, tokenizer: Any) -> torch.Tensor:
    """``[n, ctx]`` bool: True where ``tokens [n, ctx]`` holds a special token (BOS/EOS/PAD/...).

    Activations there are atypical (the BOS position is an attention sink with a huge norm), so
    they are left out of training by default.
    """
    special = set(tokenizer.all_special_ids)
    special.update(
        i
        for i in (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id)
        if i is not None
    )
    return torch.isin(tokens, torch.tensor(sorted(special), dtype=tokens.dtype))
