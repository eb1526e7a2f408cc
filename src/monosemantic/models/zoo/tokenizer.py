"""A small byte-level BPE for the zoo's language models, trained on the corpus itself.

GPT-2's 50,257-token vocabulary makes the unembedding dominate a tiny model's cost; a 4096-token
BPE trained on the Shakespeare plays keeps CPU training within minutes. Byte-level, so every
string round-trips. Training is deterministic (same texts and vocabulary size, same merges).

Special tokens: ``<|bos|>`` (id 0) starts every window, ``<|eos|>`` (id 1) separates documents.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from monosemantic.config import check
from monosemantic.files import atomic_write

BOS = "<|bos|>"
EOS = "<|eos|>"
TOKENIZER_FILE = "tokenizer.json"


def train_tokenizer(texts: list[str], vocab_size: int = 4096) -> PreTrainedTokenizerFast:
    """A byte-level BPE with ``vocab_size`` tokens (specials included) trained on ``texts``."""
    n_base = 256 + 2  # every byte, plus the two specials
    check(vocab_size > n_base, "vocab_size", vocab_size, f"an integer > {n_base}")
    check(bool(texts), "texts", "[]", "at least one document")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    # Keeps byte offsets right; byte-level BPE needs no other post-processing.
    bpe.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer=trainer, length=len(texts))
    return wrap(bpe)


def wrap(bpe: Tokenizer) -> PreTrainedTokenizerFast:
    """A ``tokenizers`` BPE as a transformers tokenizer with our BOS/EOS."""
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token=BOS, eos_token=EOS, model_max_length=1 << 30
    )


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, folder: Path) -> Path:
    """Write ``tokenizer.json`` (the whole BPE, JSON only) into ``folder``, atomically."""
    return atomic_write(
        folder / TOKENIZER_FILE, lambda tmp: tokenizer.backend_tokenizer.save(str(tmp))
    )


def load_tokenizer(folder: Path) -> PreTrainedTokenizerFast:
    """The tokenizer ``save_tokenizer`` wrote into ``folder``."""
    path = Path(folder) / TOKENIZER_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{folder} holds no {TOKENIZER_FILE}; train a model with `monosemantic zoo train lm`"
        )
    return wrap(Tokenizer.from_file(str(path)))
