"""Shared fixtures: tiny models built offline, so tests never touch the network."""

from __future__ import annotations

import pytest
import torch


def make_tiny_llama(**overrides):
    """A randomly initialised (seed 0) 2-layer Llama, hidden 32, vocab 100, in eval mode."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    settings = dict(
        vocab_size=100,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        bos_token_id=1,
        eos_token_id=2,
    )
    return LlamaForCausalLM(LlamaConfig(**{**settings, **overrides})).eval()


@pytest.fixture(scope="session")
def tiny_llama():
    return make_tiny_llama()


WORDS = (
    "the king queen is and of to a my lord love death night day sword crown speak hear fair foul "
    "sweet be not that what why how thou thee"
).split()


@pytest.fixture(scope="session")
def tiny_lm_folder(tmp_path_factory, tiny_llama):
    """A folder holding the tiny Llama and a word-level tokenizer, loadable by ``load_model``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{w: i + 3 for i, w in enumerate(WORDS)}}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )
    folder = tmp_path_factory.mktemp("tiny-lm")
    tiny_llama.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_text(tmp_path_factory):
    """A .txt file of 6,000 random words from the tiny tokenizer's vocabulary."""
    g = torch.Generator().manual_seed(1)
    words = [WORDS[i] for i in torch.randint(len(WORDS), (6000,), generator=g)]
    path = tmp_path_factory.mktemp("text") / "words.txt"
    path.write_text(" ".join(words))
    return path


def _hypothesis_profiles() -> None:
    """Property tests explore the same examples on every run (no flaky CI); set
    HYPOTHESIS_PROFILE=explore for fresh random ones and more of them."""
    import os

    from hypothesis import settings

    settings.register_profile("ci", derandomize=True, deadline=None)  # a shared, busy CPU
    settings.register_profile("explore", max_examples=400, deadline=None)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


_hypothesis_profiles()


@pytest.fixture
def one_thread():
    """Tiny matmuls: threads only add contention on a shared CPU (use with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
