"""Shared fixtures: tiny models built offline, so tests never touch the network."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def tiny_llama():
    """A randomly initialised 2-layer Llama (hidden 32, vocab 100) in eval mode."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=64, bos_token_id=1, eos_token_id=2)
    return LlamaForCausalLM(config).eval()
